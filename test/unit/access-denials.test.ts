// The denial budget: a bucket per workspace and one for unknown callers; what it drops is summed up, never lost.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { AccessDenials } from '../../src/control/audit/access-denials.js';
import { AuditLog } from '../../src/control/audit/audit-log.js';
import { SqliteStore } from '../../src/control/store/sqlite-store.js';

async function withLog(fn: (audit: AuditLog, store: SqliteStore) => Promise<void>): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'cleanroom-denials-'));
  const store = new SqliteStore(join(dir, 'db'));
  try {
    await fn(new AuditLog(store), store);
  } finally {
    await store.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

const denial = (workspaceId: string | null, reason = 'out_of_scope') => ({ actor: workspaceId ? 'workload:job_1' : 'anonymous', workspaceId, subject: null, reason });

test('beyond its burst a workspace is summarised: the next admitted refusal first writes the count of those dropped', async () => {
  await withLog(async (audit, store) => {
    let now = 1_000_000;
    const d = new AccessDenials(audit, { workspace: { burst: 5, perMinute: 60 }, anonymous: { burst: 3, perMinute: 60 }, windowMs: 60_000, now: () => now });
    for (let i = 0; i < 100; i++) await d.record(denial('ws_a', i % 2 ? 'out_of_scope' : 'token_revoked'));
    let events = await store.listAudit({ order: 'asc', limit: 1000 });
    assert.equal(events.length, 5, 'only the burst is written');
    now += 1000; // one token refilled (60 per minute)
    await d.record(denial('ws_a'));
    events = await store.listAudit({ order: 'asc', limit: 1000 });
    assert.deepEqual(events.map((e) => e.type), [...Array(5).fill('access.denied'), 'access.denied.suppressed', 'access.denied']);
    const summary = events[5]!;
    assert.equal(summary.workspaceId, 'ws_a');
    assert.equal(summary.details.count, 95);
    assert.deepEqual(summary.details.reasons, { out_of_scope: 48, token_revoked: 47 });
    // Every refusal is accounted for: written, or counted in a summary.
    await d.flush();
    const all = await store.listAudit({ order: 'asc', limit: 1000 });
    const written = all.filter((e) => e.type === 'access.denied').length;
    const counted = all.filter((e) => e.type === 'access.denied.suppressed').reduce((n, e) => n + (e.details.count as number), 0);
    assert.equal(written + counted, 101);
  });
});

test('workspaces have their own buckets, and callers of no known workspace share one', async () => {
  await withLog(async (audit, store) => {
    const now = 5_000_000;
    const d = new AccessDenials(audit, { workspace: { burst: 4, perMinute: 1 }, anonymous: { burst: 2, perMinute: 1 }, windowMs: 60_000, now: () => now });
    for (let i = 0; i < 50; i++) await d.record(denial('ws_a'));
    for (let i = 0; i < 50; i++) await d.record(denial(null, 'unauthenticated'));
    await d.record(denial('ws_b'));
    const events = await store.listAudit({ order: 'asc', limit: 1000 });
    const of = (ws: string | null) => events.filter((e) => e.type === 'access.denied' && e.workspaceId === ws).length;
    assert.deepEqual([of('ws_a'), of(null), of('ws_b')], [4, 2, 1], "one workspace's flood does not use up another's budget");
    await d.flush();
    const summaries = (await store.listAudit({ order: 'asc', limit: 1000, type: 'access.denied.suppressed' })).map((e) => [e.workspaceId, e.details.count]);
    assert.deepEqual(summaries.sort(), [['ws_a', 46], [null, 48]].sort());
  });
});

test('a window that ends with no admitted refusal is summarised by its timer', async () => {
  await withLog(async (audit, store) => {
    const d = new AccessDenials(audit, { workspace: { burst: 1, perMinute: 0.001 }, windowMs: 50 });
    for (let i = 0; i < 10; i++) await d.record(denial('ws_a'));
    await new Promise((r) => setTimeout(r, 200));
    const events = await store.listAudit({ order: 'asc', limit: 100 });
    assert.deepEqual(events.map((e) => [e.type, e.details.count]), [['access.denied', undefined], ['access.denied.suppressed', 9]]);
    assert.equal((await audit.verify()).ok, true);
  });
});
