// Admin rights are scoped: a workspace admin manages its own workspace's keys and reads its own audit events, and
// nothing of any other workspace; a platform admin manages everything. Old `admin` keys migrate to a role. A tenant
// cannot flood the audit log by being refused.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { CleanroomClient, CleanroomError, type ApiKeyRole, type AuditEvent, type Workspace } from '../../src/sdk/client.js';
import { WORKSPACE_DENIAL_BUDGET, ANONYMOUS_DENIAL_BUDGET, AccessDenials } from '../../src/control/audit/access-denials.js';
import { AuditLog } from '../../src/control/audit/audit-log.js';
import { sealEvent } from '../../src/control/audit/chain.js';
import { mintApiKey, parseApiKey } from '../../src/control/auth/api-keys.js';
import { SCHEMA_VERSION, SqliteStore } from '../../src/control/store/sqlite-store.js';
import { TenancyService } from '../../src/control/tenancy/tenancy-service.js';
import { TestCluster } from '../support/cluster.js';

let cluster: TestCluster;
let wsA: Workspace;
let wsB: Workspace;
let adminA: CleanroomClient;
let adminAId: string;
let memberA: CleanroomClient;
let keyB: { id: string; key: string };
const clients: CleanroomClient[] = [];

before(async () => {
  cluster = await TestCluster.start({ config: { agent: { pool: [{ runtime: 'runc', class: 'small', warm: 1 }] } } });
  wsA = await cluster.client.createWorkspace({ name: 'team-a' });
  wsB = await cluster.client.createWorkspace({ name: 'team-b' });
  const a = await cluster.client.createApiKey({ workspace: 'team-a', name: 'a-admin', role: 'workspace-admin' });
  adminAId = a.id;
  adminA = client(a.key);
  memberA = client((await cluster.client.createApiKey({ workspace: wsA.id, name: 'a-member' })).key);
  keyB = await cluster.client.createApiKey({ workspace: 'team-b', name: 'b-member' });
});

after(async () => {
  for (const c of clients) c.close();
  await cluster?.stop();
});

function client(apiKey: string): CleanroomClient {
  const c = new CleanroomClient({ url: cluster.url, ca: cluster.ca, apiKey });
  clients.push(c);
  return c;
}

/** refusal runs a call that must fail and returns its status, code and message. */
async function refusal(p: Promise<unknown>): Promise<{ status: number; code: string; message: string }> {
  const e = await p.then(
    () => assert.fail('the call succeeded'),
    (err: unknown) => err,
  );
  assert.ok(e instanceof CleanroomError, String(e));
  return { status: e.status, code: e.code, message: e.message };
}

test('a workspace admin creates, lists and revokes keys of its own workspace, and reads its own audit events', async () => {
  const me = await adminA.whoami();
  assert.deepEqual([me.role, me.workspace.id], ['workspace-admin', wsA.id]);
  const member = await adminA.createApiKey({ workspace: 'team-a', name: 'ci' });
  assert.deepEqual([member.role, member.workspaceId], ['member', wsA.id]);
  const deputy = await adminA.createApiKey({ workspace: wsA.id, name: 'deputy', role: 'workspace-admin' });
  assert.equal(deputy.role, 'workspace-admin');
  assert.equal((await client(deputy.key).whoami()).role, 'workspace-admin');
  const ci = client(member.key);
  assert.equal((await ci.listJobs()).length, 0, 'the new key works');

  const listed = await adminA.listApiKeys();
  assert.ok(listed.every((k) => k.workspaceId === wsA.id), 'only its own workspace is listed');
  assert.ok([member.id, deputy.id, adminAId].every((id) => listed.some((k) => k.id === id)));
  assert.ok(!listed.some((k) => k.id === keyB.id));
  // The whole secret (base64url: it may itself contain '_', so the key is parsed, never split on '_').
  const secret = parseApiKey(member.key)!.secret;
  assert.ok(listed.every((k) => !JSON.stringify(k).includes(secret)), 'a listing shows no secret');
  assert.deepEqual((await adminA.listApiKeys({ workspace: 'team-a' })).map((k) => k.id).sort(), listed.map((k) => k.id).sort());

  await adminA.revokeApiKey(member.id);
  assert.equal((await refusal(ci.listJobs())).code, 'unauthenticated', 'a revoked key stops working at once');
  assert.ok((await adminA.listApiKeys()).find((k) => k.id === member.id)?.revokedAt);

  const events = await adminA.listAuditEvents({ limit: 1000 });
  assert.ok(events.length > 0);
  assert.ok(events.every((e) => e.workspaceId === wsA.id), 'only its own workspace’s events');
  const created = events.find((e) => e.type === 'api_key.created' && e.subject === deputy.id);
  assert.deepEqual([created?.actor, created?.details.role, created?.details.name], [`key:${adminAId}`, 'workspace-admin', 'deputy']);
  const revoked = events.find((e) => e.type === 'api_key.revoked' && e.subject === member.id);
  assert.deepEqual([revoked?.actor, revoked?.details.role], [`key:${adminAId}`, 'member']);
  assert.equal((await adminA.listAuditEvents({ workspace: 'team-a', limit: 1000 })).length, events.length);
});

test('a workspace admin cannot create workspaces, mint platform admins, verify the chain, or revoke a platform admin (403)', async () => {
  for (const call of [() => adminA.createWorkspace({ name: 'team-x' }), () => adminA.listWorkspaces(), () => adminA.verifyAudit()]) {
    assert.equal((await refusal(call())).status, 403);
  }
  const up = await refusal(adminA.createApiKey({ workspace: 'team-a', name: 'up', role: 'platform-admin' }));
  assert.deepEqual([up.status, up.code], [403, 'forbidden']);
  // Asking for a platform admin in another workspace is refused for the role, whichever the workspace (nothing revealed).
  assert.equal((await refusal(adminA.createApiKey({ workspace: 'team-b', name: 'up', role: 'platform-admin' }))).code, 'forbidden');
  const boss = await cluster.client.createApiKey({ workspace: 'team-a', name: 'boss', role: 'platform-admin' });
  assert.equal((await refusal(adminA.revokeApiKey(boss.id))).code, 'forbidden');
  assert.equal((await client(boss.key).whoami()).role, 'platform-admin', 'the platform admin’s key still works');
  assert.equal((await cluster.client.listWorkspaces()).some((w) => w.name === 'team-x'), false);
  const denied = await adminA.listAuditEvents({ type: 'access.denied', limit: 100 });
  assert.ok(denied.some((e) => e.actor === `key:${adminAId}` && e.details.reason === 'forbidden'), 'the attempts are audited in its workspace');
});

test("a workspace admin cannot reach another workspace's keys or events (404, as for one that does not exist)", async () => {
  for (const ref of ['team-b', wsB.id]) {
    const other = await refusal(adminA.createApiKey({ workspace: ref, name: 'intruder' }));
    const none = await refusal(adminA.createApiKey({ workspace: `${ref}-nope`, name: 'intruder' }));
    assert.deepEqual([other.status, other.code], [404, 'not_found']);
    assert.equal(other.message.replace(ref, 'X'), none.message.replace(`${ref}-nope`, 'X'), 'the refusal tells an existing workspace from a missing one');
    assert.equal((await refusal(adminA.listApiKeys({ workspace: ref }))).status, 404);
    assert.equal((await refusal(adminA.listAuditEvents({ workspace: ref }))).status, 404);
  }
  const revokeOther = await refusal(adminA.revokeApiKey(keyB.id));
  const revokeNone = await refusal(adminA.revokeApiKey('0123456789abcdef'));
  assert.deepEqual([revokeOther.status, revokeOther.code], [404, 'not_found']);
  assert.equal(revokeOther.message.replace(keyB.id, 'X'), revokeNone.message.replace('0123456789abcdef', 'X'));
  assert.equal((await client(keyB.key).whoami()).workspace.id, wsB.id, "B's key still works");
  // B's events exist, and never show up for A.
  const bEvents = await cluster.client.listAuditEvents({ workspace: wsB.id, limit: 1000 });
  assert.ok(bEvents.some((e) => e.subject === keyB.id));
  const seen = new Set((await allEvents(adminA)).map((e) => e.seq));
  assert.ok(bEvents.every((e) => !seen.has(e.seq)), "A's admin read one of B's events");
  assert.ok(!(await cluster.client.listApiKeys({ workspace: wsB.id })).some((k) => k.name === 'intruder'));
});

test('a member key manages no keys (403) and reads only its own workspace’s events', async () => {
  assert.equal((await memberA.whoami()).role, 'member');
  for (const call of [() => memberA.createApiKey({ workspace: 'team-a', name: 'm' }), () => memberA.listApiKeys(), () => memberA.revokeApiKey(adminAId), () => memberA.verifyAudit(), () => memberA.listWorkspaces()]) {
    const r = await refusal(call());
    assert.deepEqual([r.status, r.code], [403, 'forbidden']);
  }
  assert.ok((await allEvents(memberA)).every((e) => e.workspaceId === wsA.id));
  assert.equal((await refusal(memberA.listAuditEvents({ workspace: wsB.id }))).status, 404);
  assert.equal((await adminA.whoami()).role, 'workspace-admin', 'the member could not revoke its admin');
});

test('a platform admin does it all: any workspace, any role, any key, every event, the chain', async () => {
  const me = await cluster.client.whoami();
  assert.equal(me.role, 'platform-admin');
  const roles: ApiKeyRole[] = ['member', 'workspace-admin', 'platform-admin'];
  for (const role of roles) {
    const k = await cluster.client.createApiKey({ workspace: 'team-b', name: `pa-${role}`, role });
    assert.equal((await client(k.key).whoami()).role, role);
    await cluster.client.revokeApiKey(k.id);
  }
  const keys = await cluster.client.listApiKeys();
  assert.ok([wsA.id, wsB.id, me.workspace.id].every((ws) => keys.some((k) => k.workspaceId === ws)), 'every workspace’s keys');
  assert.ok((await cluster.client.listApiKeys({ workspace: 'team-b' })).every((k) => k.workspaceId === wsB.id));
  const all = await allEvents(cluster.client);
  assert.ok(all.some((e) => e.workspaceId === wsA.id) && all.some((e) => e.workspaceId === wsB.id) && all.some((e) => e.workspaceId === me.workspace.id));
  assert.ok((await cluster.client.listAuditEvents({ workspace: 'team-a', limit: 1000 })).every((e) => e.workspaceId === wsA.id));
  const bootstrap = all.find((e) => e.type === 'api_key.created' && e.subject === me.keyId);
  assert.deepEqual([bootstrap?.actor, bootstrap?.details.role], ['system', 'platform-admin']);
  assert.equal((await cluster.client.verifyAudit()).ok, true);
  // A workspace admin's key is the platform admin's to revoke, in any workspace.
  const spare = await adminA.createApiKey({ workspace: 'team-a', name: 'spare', role: 'workspace-admin' });
  await cluster.client.revokeApiKey(spare.id);
  assert.equal((await refusal(client(spare.key).whoami())).code, 'unauthenticated');
});

test('the CLI: keys create --role, keys ls, keys revoke, with a workspace admin key', async () => {
  const asA = { CLEANROOM_API_KEY: (await cluster.client.createApiKey({ workspace: 'team-a', name: 'cli', role: 'workspace-admin' })).key };
  const made = await cluster.cli(['keys', 'create', '--workspace', 'team-a', '--name', 'from-cli', '--role', 'workspace-admin', '--json'], asA);
  assert.equal(made.code, 0, made.stderr);
  const k = JSON.parse(made.stdout) as { id: string; role: string };
  assert.equal(k.role, 'workspace-admin');
  const ls = await cluster.cli(['keys', 'ls'], asA);
  assert.equal(ls.code, 0, ls.stderr);
  assert.match(ls.stdout, new RegExp(`^${k.id}\\s+${wsA.id}\\s+from-cli\\s+workspace-admin\\s`, 'm'));
  assert.doesNotMatch(ls.stdout, /b-member/);
  const up = await cluster.cli(['keys', 'create', '--workspace', 'team-a', '--name', 'x', '--role', 'platform-admin'], asA);
  assert.notEqual(up.code, 0);
  assert.match(up.stderr, /forbidden|platform-admin/);
  const bogus = await cluster.cli(['keys', 'create', '--workspace', 'team-a', '--name', 'x', '--role', 'root'], asA);
  assert.notEqual(bogus.code, 0);
  const other = await cluster.cli(['keys', 'revoke', keyB.id], asA);
  assert.notEqual(other.code, 0);
  const revoked = await cluster.cli(['keys', 'revoke', k.id], asA);
  assert.equal(revoked.code, 0, revoked.stderr);
  assert.match(revoked.stdout, new RegExp(`revoked ${k.id}`));
});

test('2,000 out-of-scope requests with a workload token add at most its workspace budget to the audit log, every one counted, and the chain verifies', async () => {
  const ws = await cluster.client.createWorkspace({ name: 'flood' });
  const tenant = client((await cluster.client.createApiKey({ workspace: 'flood', name: 'f' })).key);
  let tokenLine = '';
  let gotToken!: () => void;
  const tokenRead = new Promise<void>((r) => (gotToken = r));
  const created = await tenant.createJob({ command: ['sh', '-c', 'cat "$CLEANROOM_TOKEN_FILE"; echo; sleep 120'], data: [{ prefix: 'in/', access: 'read' }], timeoutSeconds: 180 });
  const ended = tenant.followLogs(created.id, (c) => {
    tokenLine += c.data.toString('utf8');
    if (tokenLine.includes('\n')) gotToken();
  });
  // Awaited after the cancel below; a job that ends before it shows its token fails the test here, not at its timeout.
  ended.catch(() => {});
  await Promise.race([tokenRead, ended.then((j) => Promise.reject(new Error(`the job ended (${j.status}: ${j.message}) before it showed its token`)))]);
  const token = tokenLine.trim();
  const holder = new CleanroomClient({ url: `https://127.0.0.1:${cluster.dataPort}`, ca: cluster.ca, apiKey: token });
  clients.push(holder);
  assert.equal((await holder.raw('GET', '/v1/data/objects?prefix=in/')).status, 200, 'the token works within its scope');

  const countOf = async () => {
    const events = (await allEvents(cluster.client)).filter((e) => e.workspaceId === ws.id);
    const written = events.filter((e) => e.type === 'access.denied');
    const summaries = events.filter((e) => e.type === 'access.denied.suppressed');
    return { written: written.length, summaries: summaries.length, counted: summaries.reduce((n, e) => n + (e.details.count as number), 0), events: written };
  };
  const before = await countOf();
  const started = Date.now();
  const FLOOD = 2000;
  let sent = 0;
  const codes = new Map<string, number>();
  await Promise.all(
    Array.from({ length: 8 }, async () => {
      while (sent < FLOOD) {
        sent++;
        const r = await holder.raw('GET', `/v1/data/objects/secret/${sent}`);
        const code = (r.body as { error?: { code?: string } }).error?.code ?? String(r.status);
        codes.set(code, (codes.get(code) ?? 0) + 1);
      }
    }),
  );
  const elapsedS = (Date.now() - started) / 1000;
  assert.deepEqual([...codes], [['out_of_scope', FLOOD]]);
  const flooded = await countOf();
  const refills = (WORKSPACE_DENIAL_BUDGET.perMinute * elapsedS) / 60;
  const added = flooded.written + flooded.summaries - before.written - before.summaries;
  // The burst, plus per refilled token one admitted refusal and one summary of those dropped before it.
  assert.ok(added <= WORKSPACE_DENIAL_BUDGET.burst + 2 * Math.ceil(refills) + 2, `${added} audit events for ${FLOOD} refusals in ${elapsedS.toFixed(1)} s`);
  assert.ok(flooded.written - before.written >= Math.min(FLOOD, WORKSPACE_DENIAL_BUDGET.burst), 'the first refusals are written one by one');
  const sample = flooded.events[0]!;
  assert.deepEqual([sample.actor, sample.details.reason, sample.details.action], [`workload:${created.id}`, 'out_of_scope', 'read']);

  // Once a token refills, the next refusal is written after a summary of those dropped: every refusal is accounted for.
  await new Promise((r) => setTimeout(r, (60_000 / WORKSPACE_DENIAL_BUDGET.perMinute) * 1.2));
  assert.equal((await holder.raw('GET', '/v1/data/objects/secret/last')).status, 403);
  const settled = await countOf();
  assert.equal(settled.written - before.written + settled.counted - before.counted, FLOOD + 1);

  // A revoked token's refusals are charged to its own workspace (its signature proves which), within the same budget.
  await tenant.cancelJob(created.id);
  await ended;
  await new Promise((r) => setTimeout(r, (60_000 / WORKSPACE_DENIAL_BUDGET.perMinute) * 1.2));
  assert.equal((await holder.raw('GET', '/v1/data/objects/in/x')).status, 401);
  const revoked = (await tenant.listAuditEvents({ type: 'access.denied', limit: 10 }))[0];
  assert.deepEqual([revoked?.actor, revoked?.workspaceId, revoked?.details.reason], [`workload:${created.id}`, ws.id, 'token_revoked']);

  const verify = await cluster.cli(['audit', 'verify']);
  assert.equal(verify.code, 0, verify.stdout + verify.stderr);
  assert.match(verify.stdout, /audit chain intact/);
});

test('refusals of unknown callers share one budget', async () => {
  const anon = client('crk_0123456789abcdef_' + 'A'.repeat(43));
  const before = (await allEvents(cluster.client)).filter((e) => e.workspaceId === null && e.type.startsWith('access.denied')).length;
  const started = Date.now();
  for (let i = 0; i < 400; i++) assert.equal((await anon.raw('GET', '/v1/jobs')).status, 401);
  const refills = (ANONYMOUS_DENIAL_BUDGET.perMinute * (Date.now() - started)) / 60_000;
  const added = (await allEvents(cluster.client)).filter((e) => e.workspaceId === null && e.type.startsWith('access.denied')).length - before;
  assert.ok(added <= ANONYMOUS_DENIAL_BUDGET.burst + 2 * Math.ceil(refills) + 2, `${added} audit events for 400 anonymous refusals`);
});

/** allEvents pages through every audit event the client may read. */
async function allEvents(c: CleanroomClient): Promise<AuditEvent[]> {
  const out: AuditEvent[] = [];
  for (;;) {
    const page = await c.listAuditEvents({ limit: 1000, ...(out.length ? { before: out.at(-1)!.seq } : {}) });
    out.push(...page);
    if (page.length < 1000) return out;
  }
}

// The store as it was before roles (schema version 1, with no user_version), as `git show f79d65b:src/control/store/sqlite-store.ts` has it.
const V1_SCHEMA = `
CREATE TABLE workspaces (
  id TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE, created_at TEXT NOT NULL,
  max_cpu REAL NOT NULL, max_memory_bytes INTEGER NOT NULL, max_timeout_seconds INTEGER NOT NULL,
  max_disk_bytes INTEGER NOT NULL);
CREATE TABLE api_keys (
  id TEXT PRIMARY KEY, workspace_id TEXT NOT NULL REFERENCES workspaces(id), name TEXT NOT NULL,
  admin INTEGER NOT NULL, secret_hash TEXT NOT NULL, created_at TEXT NOT NULL, revoked_at TEXT);
CREATE TABLE jobs (
  id TEXT PRIMARY KEY, workspace_id TEXT NOT NULL REFERENCES workspaces(id), status TEXT NOT NULL,
  created_at TEXT NOT NULL, doc TEXT NOT NULL);
CREATE TABLE audit_events (
  seq INTEGER PRIMARY KEY, time TEXT NOT NULL, type TEXT NOT NULL, actor TEXT NOT NULL, workspace_id TEXT,
  subject TEXT, details TEXT NOT NULL, prev_hash TEXT NOT NULL, hash TEXT NOT NULL);
CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit_events BEGIN SELECT RAISE(ABORT, 'audit events are append-only'); END;
CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit_events BEGIN SELECT RAISE(ABORT, 'audit events are append-only'); END;
`;

/** v1Database lays out a version-1 database with the bootstrap key first, as `cleanroom up` made it, and returns the keys. */
function v1Database(path: string, opts: { bootstrapRevoked?: boolean } = {}): Record<string, { id: string; plaintext: string }> {
  const db = new Database(path);
  db.exec(V1_SCHEMA);
  const ws = db.prepare('INSERT INTO workspaces VALUES (?, ?, ?, 2, 1073741824, 3600, 1073741824)');
  ws.run('ws_default', 'default', '2024-01-01T00:00:00.000Z');
  ws.run('ws_team', 'team', '2024-01-02T00:00:00.000Z');
  const insert = db.prepare('INSERT INTO api_keys VALUES (?, ?, ?, ?, ?, ?, ?)');
  const keys: Record<string, { id: string; plaintext: string }> = {};
  const rows: Array<[string, string, boolean, string, string | null]> = [
    ['bootstrap-admin', 'ws_default', true, '2024-01-01T00:00:00.001Z', opts.bootstrapRevoked ? '2024-02-01T00:00:00.000Z' : null],
    ['ops', 'ws_default', true, '2024-01-03T00:00:00.000Z', null],
    ['team-admin', 'ws_team', true, '2024-01-04T00:00:00.000Z', null],
    ['ci', 'ws_team', false, '2024-01-05T00:00:00.000Z', null],
    ['old-admin', 'ws_team', true, '2024-01-06T00:00:00.000Z', '2024-01-07T00:00:00.000Z'],
  ];
  let prev: { seq: number; hash: string } | null = null;
  const audit = db.prepare('INSERT INTO audit_events VALUES (@seq, @time, @type, @actor, @workspaceId, @subject, @details, @prevHash, @hash)');
  for (const [name, workspaceId, admin, createdAt, revokedAt] of rows) {
    const k = mintApiKey(workspaceId, name, 'member');
    insert.run(k.record.id, workspaceId, name, admin ? 1 : 0, k.record.secretHash, createdAt, revokedAt);
    keys[name] = { id: k.record.id, plaintext: k.plaintext };
    const e = sealEvent({ type: 'api_key.created', actor: name === 'bootstrap-admin' ? 'system' : 'key:x', workspaceId, subject: k.record.id, details: { name, admin } }, prev);
    audit.run({ ...e, details: JSON.stringify(e.details) });
    prev = e;
  }
  db.close();
  return keys;
}

const LIMITS = { maxCpu: 2, maxMemoryMiB: 1024, maxTimeoutSeconds: 3600, maxDiskMiB: 1024 };

test('the migration gives old admin keys a role: the bootstrap key platform-admin, other admins workspace-admin, the rest member', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'cleanroom-migrate-'));
  try {
    const path = join(dir, 'cleanroom.db');
    const keys = v1Database(path);
    for (let open = 0; open < 2; open++) {
      const store = new SqliteStore(path); // the second open finds nothing to do
      const audit = new AuditLog(store);
      const tenancy = new TenancyService(store, LIMITS, audit, new AccessDenials(audit));
      try {
        const roles = Object.fromEntries((await store.listApiKeys()).map((k) => [k.name, [k.role, k.revokedAt !== null]]));
        assert.deepEqual(roles, {
          'bootstrap-admin': ['platform-admin', false],
          ops: ['workspace-admin', false],
          'team-admin': ['workspace-admin', false],
          ci: ['member', false],
          'old-admin': ['workspace-admin', true],
        });
        // Secrets still match their hashes: every active key still authenticates, with its new role.
        for (const name of ['bootstrap-admin', 'ops', 'ci']) {
          const p = await tenancy.authenticate(`Bearer ${keys[name]!.plaintext}`);
          assert.equal(p.key!.id, keys[name]!.id);
        }
        assert.equal(await tenancy.bootstrap(), null, 'a platform admin is left: no new key');
        assert.equal((await audit.verify()).ok, true, 'the audit chain is untouched');
      } finally {
        await store.close();
      }
    }
    const db = new Database(path);
    try {
      assert.equal(db.pragma('user_version', { simple: true }), SCHEMA_VERSION);
      const fresh = new SqliteStore(join(dir, 'fresh.db'));
      await fresh.close();
      const fdb = new Database(join(dir, 'fresh.db'));
      const ddl = (d: Database.Database) => (d.prepare("SELECT sql FROM sqlite_master WHERE name = 'api_keys'").get() as { sql: string }).sql.replace('api_keys_v2', 'api_keys').replace(/"/g, '');
      assert.equal(ddl(db).replace(/\s+/g, ' '), ddl(fdb).replace(/\s+/g, ' '), 'a migrated table is laid out as a new one');
      fdb.close();
      assert.throws(() => db.prepare("INSERT INTO api_keys (id, workspace_id, name, role, secret_hash, created_at) VALUES ('x', 'ws_team', 'x', 'root', 'h', 't')").run(), /CHECK/);
      db.pragma(`user_version = ${SCHEMA_VERSION + 1}`);
    } finally {
      db.close();
    }
    assert.throws(() => new SqliteStore(path), /newer than this Cleanroom/, 'a database from a newer version is not opened');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('with no active platform admin left, start-up mints a recovery one, once', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'cleanroom-migrate-'));
  const path = join(dir, 'cleanroom.db');
  v1Database(path, { bootstrapRevoked: true });
  const store = new SqliteStore(path);
  try {
    const audit = new AuditLog(store);
    const tenancy = new TenancyService(store, LIMITS, audit, new AccessDenials(audit));
    const key = await tenancy.bootstrap();
    assert.ok(key);
    const p = await tenancy.authenticate(`Bearer ${key}`);
    assert.deepEqual([p.key!.role, p.key!.name, p.workspace.name], ['platform-admin', 'recovery-admin', 'default']);
    assert.equal(await tenancy.bootstrap(), null);
  } finally {
    await store.close();
    rmSync(dir, { recursive: true, force: true });
  }
});
