// Group commit (src/control/store/group-commit.ts): the writes of one event-loop turn share one SQLite transaction; a
// write's promise resolves only once that transaction is committed (another connection then sees it), reads in the turn
// see the batch's writes, a failing write rejects alone, and the audit chain stays one unbroken chain.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { AuditLog } from '../../src/control/audit/audit-log.js';
import { groupCommit } from '../../src/control/store/group-commit.js';
import { SqliteStore } from '../../src/control/store/sqlite-store.js';
import type { Workspace } from '../../src/control/model.js';

const ws = (id: string): Workspace => ({ id, name: id, createdAt: new Date().toISOString(), maxCpu: 1, maxMemoryBytes: 1 << 30, maxTimeoutSeconds: 60, maxDiskBytes: 1 << 30 });

test('writes of one turn commit together, each acknowledged only once committed; reads see them at once', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'cleanroom-group-commit-'));
  const store = groupCommit(new SqliteStore(join(dir, 'db')));
  const other = new Database(join(dir, 'db'), { readonly: true });
  const count = () => (other.prepare('SELECT COUNT(*) AS n FROM workspaces').get() as { n: number }).n;
  try {
    const writes = Array.from({ length: 50 }, (_, i) => store.createWorkspace(ws(`ws_${i}`)));
    // Same turn: this process reads its own batch; another connection sees nothing until the commit.
    await Promise.resolve();
    assert.equal(count(), 0);
    assert.ok(await store.getWorkspace('ws_7'));
    await Promise.all(writes);
    assert.equal(count(), 50, 'every acknowledged write is committed');
    // A write that fails (a duplicate id) rejects on its own; the others of its turn commit.
    const results = await Promise.allSettled([store.createWorkspace(ws('ws_new')), store.createWorkspace(ws('ws_3')), store.createWorkspace(ws('ws_new2'))]);
    assert.deepEqual(results.map((r) => r.status), ['fulfilled', 'rejected', 'fulfilled']);
    assert.equal(count(), 52);
  } finally {
    other.close();
    await store.close();
    rmSync(dir, { recursive: true, force: true });
  }
});

test('audit events appended in one turn form one unbroken chain', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'cleanroom-group-commit-'));
  const store = groupCommit(new SqliteStore(join(dir, 'db')));
  try {
    const audit = new AuditLog(store);
    await Promise.all(Array.from({ length: 200 }, (_, i) => audit.record({ type: 'token.minted', actor: 'system', workspaceId: null, subject: `job_${i}`, details: {} })));
    await audit.record({ type: 'token.revoked', actor: 'system', workspaceId: null, subject: 'last', details: {} });
    assert.deepEqual(await audit.verify(), { ok: true, events: 201, lastHash: (await audit.list({ limit: 1, order: 'desc' }))[0]!.hash });
  } finally {
    await store.close();
    rmSync(dir, { recursive: true, force: true });
  }
});
