// The Store contract: the same cases against both adapters (SQLite in a temp file, PostgreSQL on a real server this test
// starts). Races run between two store instances on one database, as two control-plane replicas would.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { ChainVerifier, sealEvent, type AuditEvent, type AuditEventInput } from '../../src/control/audit/chain.js';
import { DEFAULT_EGRESS_POLICY, type AgentRecord, type ImageRecord, type Job, type ObjectMeta, type Workspace } from '../../src/control/model.js';
import { SCHEMA_VERSION, SqliteStore } from '../../src/control/store/sqlite-store.js';
import { PostgresStore } from '../../src/control/store/postgres-store.js';
import { POSTGRES_SCHEMA_VERSION } from '../../src/control/store/migrations/postgres.js';
import type { Store } from '../../src/control/store/store.js';
import { TestPostgres } from '../support/postgres.js';

/** Backend makes fresh databases; `open` may be called again for another instance on the same database. */
interface Backend {
  name: 'sqlite' | 'postgres';
  fresh(): Promise<{ open: () => Promise<Store>; cleanup: () => Promise<void> }>;
}

let pgServer: TestPostgres | undefined;
let dbCount = 0;

const sqlite: Backend = {
  name: 'sqlite',
  async fresh() {
    const dir = mkdtempSync(join(tmpdir(), 'cleanroom-store-'));
    return { open: async () => new SqliteStore(join(dir, 'db')), cleanup: async () => rmSync(dir, { recursive: true, force: true }) };
  },
};

const postgres: Backend = {
  name: 'postgres',
  async fresh() {
    const url = await pgServer!.createDatabase(`contract_${++dbCount}`);
    return { open: () => PostgresStore.open({ url, poolSize: 4 }), cleanup: async () => {} };
  },
};

before(async () => {
  pgServer = await TestPostgres.start();
});

after(async () => {
  await pgServer?.stop();
});

/** withStores runs `fn` with `n` store instances on one fresh database and closes them whatever happens. */
async function withStores(b: Backend, n: number, fn: (...stores: Store[]) => Promise<void>): Promise<void> {
  const db = await b.fresh();
  const stores: Store[] = [];
  try {
    for (let i = 0; i < n; i++) stores.push(await db.open());
    await fn(...stores);
  } finally {
    for (const s of stores) await s.close();
    await db.cleanup();
  }
}

const t0 = Date.parse('2026-01-01T00:00:00.000Z');
const at = (s: number) => new Date(t0 + s * 1000).toISOString();

function workspace(id: string, createdS = 0): Workspace {
  return { id, name: `name-${id}`, createdAt: at(createdS), maxCpu: 1.5, maxMemoryBytes: 3 * 2 ** 32, maxTimeoutSeconds: 3600, maxDiskBytes: 2 ** 40 };
}

function job(id: string, workspaceId: string, createdS: number, extra: Partial<Job> = {}): Job {
  return {
    id, workspaceId, status: 'queued', createdAt: at(createdS), startedAt: null, endedAt: null, exitCode: null, signal: null, message: null,
    cancelRequested: false, agentId: null, cellId: null, timings: {}, wipe: null, egress: DEFAULT_EGRESS_POLICY, dataGrants: [],
    command: ['echo', 'hi'], env: { A: 'b' }, cwd: '/work', cpu: 1, memoryBytes: 2 ** 28, timeoutSeconds: 60, diskBytes: 2 ** 28, runtime: 'runc',
    mode: 'job', ...extra,
  };
}

function sandbox(id: string, workspaceId: string, createdS: number, metadata: Record<string, string>, status: Job['status'] = 'running'): Job {
  return job(id, workspaceId, createdS, { mode: 'sandbox', status, command: [], sandbox: { metadata, idleTimeoutSeconds: 0, endsAt: null, endRequested: null } });
}

function image(id: string, workspaceId: string | null, name: string, tag: string, createdS: number, extra: Partial<ImageRecord> = {}): ImageRecord {
  return {
    id, workspaceId, name, tag, digest: null, state: 'pulling', source: 'docker://r/x:1', bytesDone: 0, bytesTotal: null, bytes: 0, unpackedBytes: null,
    manifest: null, blobs: [], error: null, createdAt: at(createdS), updatedAt: at(createdS), createdBy: 'key:k', ...extra,
  };
}

function agent(id: string, extra: Partial<AgentRecord> = {}): AgentRecord {
  return { id, replicaId: 'rep_a', connected: true, draining: false, removed: false, capacity: 64, running: 0, load: null, connectedAt: at(1), lastSeenAt: at(2), ...extra };
}

const auditInput = (i: number, workspaceId: string | null = 'ws_a'): AuditEventInput => ({ type: 'workload.created', actor: `key:k${i}`, workspaceId, subject: `job_${i}`, details: { i, nested: { list: [i, 'x'] } } });

for (const b of [sqlite, postgres]) {
  describe(`store contract: ${b.name}`, () => {
    test('workspaces: created, found by id and name, listed oldest first; a name is unique', () =>
      withStores(b, 1, async (s) => {
        await s.createWorkspace(workspace('ws_b', 2));
        await s.createWorkspace(workspace('ws_a', 1));
        assert.deepEqual(await s.getWorkspace('ws_a'), workspace('ws_a', 1));
        assert.deepEqual(await s.getWorkspaceByName('name-ws_b'), workspace('ws_b', 2));
        assert.equal(await s.getWorkspace('ws_none'), null);
        assert.deepEqual((await s.listWorkspaces()).map((w) => w.id), ['ws_a', 'ws_b']);
        await assert.rejects(s.createWorkspace({ ...workspace('ws_c'), name: 'name-ws_a' }));
      }));

    test('api keys: listed oldest first per workspace or all, counted by role, revoked once', () =>
      withStores(b, 1, async (s) => {
        await s.createWorkspace(workspace('ws_a'));
        await s.createWorkspace(workspace('ws_b'));
        const key = (id: string, ws: string, role: 'platform-admin' | 'member', createdS: number) => ({ id, workspaceId: ws, name: `n${id}`, role, secretHash: `h${id}`, createdAt: at(createdS), revokedAt: null });
        await s.createApiKey(key('k3', 'ws_b', 'member', 3));
        await s.createApiKey(key('k1', 'ws_a', 'platform-admin', 1));
        await s.createApiKey(key('k2', 'ws_a', 'member', 2));
        assert.deepEqual(await s.getApiKey('k2'), key('k2', 'ws_a', 'member', 2));
        assert.deepEqual((await s.listApiKeys()).map((k) => k.id), ['k1', 'k2', 'k3']);
        assert.deepEqual((await s.listApiKeys('ws_a')).map((k) => k.id), ['k1', 'k2']);
        assert.equal(await s.countApiKeys(), 3);
        assert.equal(await s.countActiveApiKeys('member'), 2);
        assert.equal(await s.revokeApiKey('k2', at(9)), true);
        assert.equal(await s.revokeApiKey('k2', at(10)), false);
        assert.equal(await s.revokeApiKey('nope', at(10)), false);
        assert.equal((await s.getApiKey('k2'))!.revokedAt, at(9));
        assert.equal(await s.countActiveApiKeys('member'), 1);
        assert.equal((await s.listApiKeys('ws_a')).length, 2, 'revoked keys are still listed');
        await assert.rejects(s.createApiKey({ ...key('k9', 'ws_a', 'member', 9), role: 'root' as 'member' }), 'an unknown role is refused');
      }));

    test('jobs: round trip, newest first without sandboxes, status lists, patches merge top-level fields', () =>
      withStores(b, 1, async (s) => {
        await s.createWorkspace(workspace('ws_a'));
        await s.createWorkspace(workspace('ws_b'));
        const j1 = job('job_1', 'ws_a', 1);
        await s.createJob(j1);
        await s.createJob(job('job_2', 'ws_a', 2, { status: 'running' }));
        await s.createJob(job('job_3', 'ws_a', 2, { status: 'succeeded' })); // same time as job_2: id breaks the tie
        await s.createJob(job('job_4', 'ws_b', 4));
        await s.createJob(sandbox('sbx_1', 'ws_a', 5, {}));
        assert.deepEqual(await s.getJob('job_1'), j1);
        assert.equal(await s.getJob('job_none'), null);
        assert.deepEqual((await s.listJobs('ws_a', 10)).map((j) => j.id), ['job_3', 'job_2', 'job_1']);
        assert.deepEqual((await s.listJobs('ws_a', 2)).map((j) => j.id), ['job_3', 'job_2']);
        assert.deepEqual((await s.jobsWithStatus(['queued', 'running'])).map((j) => j.id), ['job_1', 'job_2', 'job_4', 'sbx_1']);
        assert.deepEqual(await s.jobsWithStatus([]), []);

        // A record without the fields added later reads with their defaults.
        const { egress: _e, dataGrants: _d, ...old } = job('job_old', 'ws_a', 0);
        await s.createJob(old as Job);
        assert.deepEqual((await s.getJob('job_old'))!.egress, DEFAULT_EGRESS_POLICY);
        assert.deepEqual((await s.getJob('job_old'))!.dataGrants, []);

        await s.updateJob('job_1', { status: 'running', startedAt: at(7), timings: { a: 1, b: 2.5 }, wipe: { method: 'x' } as unknown as Job['wipe'] });
        await s.updateJob('job_1', { timings: { c: 3 }, message: 'NUL \u0000 and ünïcödé ✓', outputDroppedBytes: 5 });
        const j = (await s.getJob('job_1'))!;
        assert.equal(j.status, 'running');
        assert.equal(j.startedAt, at(7));
        assert.deepEqual(j.timings, { c: 3 }, 'a nested object is replaced whole');
        assert.deepEqual(j.wipe, { method: 'x' });
        assert.equal(j.message, 'NUL \u0000 and ünïcödé ✓');
        assert.deepEqual(j.command, ['echo', 'hi'], 'fields not patched stay');
        assert.deepEqual((await s.jobsWithStatus(['running'])).map((x) => x.id), ['job_1', 'job_2', 'sbx_1'], 'the status column follows the patch');
        await s.updateJob('job_1', { outputDroppedBytes: undefined });
        assert.equal('outputDroppedBytes' in (await s.getJob('job_1'))!, false, 'a field patched to undefined is gone');
        await s.updateJob('job_none', { status: 'failed' });
        assert.equal(await s.getJob('job_none'), null);
      }));

    test('sandboxes: newest first, by metadata (every pair), by state, paged by (createdAt, id)', () =>
      withStores(b, 1, async (s) => {
        await s.createWorkspace(workspace('ws_a'));
        await s.createWorkspace(workspace('ws_b'));
        await s.createJob(job('job_1', 'ws_a', 1));
        await s.createJob(sandbox('sbx_1', 'ws_a', 1, { team: 'x', env: 'prod' }));
        await s.createJob(sandbox('sbx_2', 'ws_a', 2, { team: 'x' }, 'succeeded'));
        await s.createJob(sandbox('sbx_3', 'ws_a', 3, { team: 'y', "it's": 'a "quote"' }));
        await s.createJob(sandbox('sbx_4', 'ws_a', 3, { team: 'x', env: 'prod' }, 'queued'));
        await s.createJob(sandbox('sbx_5', 'ws_b', 4, { team: 'x' }));
        const ids = async (q: Partial<Parameters<Store['listSandboxes']>[1]>) =>
          (await s.listSandboxes('ws_a', { metadata: {}, state: 'all', limit: 100, ...q })).map((j) => j.id);
        assert.deepEqual(await ids({}), ['sbx_4', 'sbx_3', 'sbx_2', 'sbx_1']);
        assert.deepEqual(await ids({ state: 'live' }), ['sbx_4', 'sbx_3', 'sbx_1']);
        assert.deepEqual(await ids({ state: 'ended' }), ['sbx_2']);
        assert.deepEqual(await ids({ metadata: { team: 'x' } }), ['sbx_4', 'sbx_2', 'sbx_1']);
        assert.deepEqual(await ids({ metadata: { team: 'x', env: 'prod' } }), ['sbx_4', 'sbx_1']);
        assert.deepEqual(await ids({ metadata: { "it's": 'a "quote"' } }), ['sbx_3']);
        assert.deepEqual(await ids({ metadata: { team: 'x', env: 'dev' } }), []);
        assert.deepEqual(await ids({ limit: 2 }), ['sbx_4', 'sbx_3']);
        assert.deepEqual(await ids({ limit: 2, before: { createdAt: at(3), id: 'sbx_3' } }), ['sbx_2', 'sbx_1']);
        assert.deepEqual(await ids({ before: { createdAt: at(3), id: 'sbx_4' } }), ['sbx_3', 'sbx_2', 'sbx_1']);
      }));

    test('claimJob: applies the patch only from the expected status; of two instances racing, exactly one wins each job', () =>
      withStores(b, 2, async (s1, s2) => {
        await s1.createWorkspace(workspace('ws_a'));
        assert.equal(await s1.claimJob('job_none', 'queued', { status: 'assigned' }), false);
        const n = 40;
        for (let i = 0; i < n; i++) await s1.createJob(job(`job_${i}`, 'ws_a', i));
        assert.equal(await s1.claimJob('job_0', 'running', { status: 'assigned' }), false, 'not from a status it is not in');
        const claims = await Promise.all(
          Array.from({ length: n }, (_, i) => [
            s1.claimJob(`job_${i}`, 'queued', { status: 'assigned', agentId: 'agent_1', timings: { one: 1 } }),
            s2.claimJob(`job_${i}`, 'queued', { status: 'assigned', agentId: 'agent_2', timings: { two: 2 } }),
          ]).flat(),
        );
        for (let i = 0; i < n; i++) {
          const [one, two] = [claims[2 * i], claims[2 * i + 1]];
          assert.equal(Number(one) + Number(two), 1, `job_${i}: exactly one claim wins`);
          const j = (await s2.getJob(`job_${i}`))!;
          assert.equal(j.status, 'assigned');
          assert.equal(j.agentId, one ? 'agent_1' : 'agent_2', 'the winner’s patch is the one stored');
          assert.deepEqual(j.timings, one ? { one: 1 } : { two: 2 });
        }
      }));

    test('transitionJob: judged on the stored record, written at once; of two instances racing, one wins each job', () =>
      withStores(b, 2, async (s1, s2) => {
        await s1.createWorkspace(workspace('ws_a'));
        assert.equal(await s1.transitionJob('job_none', () => ({ status: 'running' })), null);
        const n = 30;
        for (let i = 0; i < n; i++) await s1.createJob(job(`job_${i}`, 'ws_a', i, { status: 'assigned', timings: { placed: i } }));
        assert.equal(await s1.transitionJob('job_0', () => null), null, 'a change that leaves the job writes nothing');
        const start = (s: Store, cell: string) => (id: string) =>
          s.transitionJob(id, (j) => (j.status === 'assigned' ? { status: 'running', cellId: cell, timings: { ...j.timings, started: 1 } } : null));
        const won = await Promise.all(Array.from({ length: n }, (_, i) => [start(s1, 'cell_1')(`job_${i}`), start(s2, 'cell_2')(`job_${i}`)]).flat());
        for (let i = 0; i < n; i++) {
          const [one, two] = [won[2 * i], won[2 * i + 1]];
          assert.equal(Number(one !== null) + Number(two !== null), 1, `job_${i}: exactly one transition applies`);
          const stored = (await s1.getJob(`job_${i}`))!;
          assert.deepEqual(stored, one ?? two, 'the record returned is the one stored');
          assert.deepEqual(stored.timings, { placed: i, started: 1 }, 'built on the stored record');
        }
        // s1's last view of job_1 is stale once s2 changed it: the change is judged on the stored record.
        await s2.updateJob('job_1', { status: 'succeeded' });
        assert.equal(await start(s1, 'cell_9')('job_1'), null);
        const ended = await s1.transitionJob('job_2', (j) => ({ status: 'succeeded', timings: { ...j.timings, ended: 2 } }));
        assert.deepEqual(pick(ended), { status: 'succeeded', agentId: null, cellId: (await s2.getJob('job_2'))!.cellId });
      }));

    test('writes and reads made at once (grouped on PostgreSQL) each get their own result; a bad one fails alone', () =>
      withStores(b, 1, async (s) => {
        await s.createWorkspace(workspace('ws_a'));
        await s.createWorkspace(workspace('ws_b'));
        const n = 40;
        const created = await Promise.allSettled([
          ...Array.from({ length: n }, (_, i) => s.createJob(job(`job_${i}`, i % 2 ? 'ws_a' : 'ws_b', i, { status: i % 4 === 0 ? 'running' : 'queued' }))),
          s.createJob(job('job_0', 'ws_a', 99)),
        ]);
        assert.equal(created.filter((r) => r.status === 'fulfilled').length, n);
        assert.equal(created[n]!.status, 'rejected', 'a second job of one id is refused, its batch-mates are not');
        const [a, bq, again, missing] = await Promise.all([s.countJobs('ws_a', ['queued']), s.countJobs('ws_b', ['queued']), s.countJobs('ws_a', ['queued']), s.getJob('job_none')]);
        assert.deepEqual([a, bq, again, missing], [20, 10, 20, null]);
        const read = await Promise.all(Array.from({ length: n }, (_, i) => s.getJob(`job_${i % 10}`)));
        assert.deepEqual(read.map((j) => j!.id), Array.from({ length: n }, (_, i) => `job_${i % 10}`));
        const outputs = await Promise.allSettled([
          ...Array.from({ length: n }, (_, i) => s.appendOutput(`job_${i}`, { seq: 1, stream: 'stdout', data: Buffer.from([i, 0, 255]) })),
          s.appendOutput('job_3', { seq: 1, stream: 'stdout', data: Buffer.from('again') }),
        ]);
        assert.equal(outputs.filter((r) => r.status === 'rejected').length, 1, 'only the duplicate seq fails');
        assert.deepEqual((await s.output('job_7', 0)).map((c) => [...c.data]), [[7, 0, 255]]);
        const t = (jti: string, jobId: string) => ({ jti, jobId, workspaceId: 'ws_a', issuedAt: at(0), expiresAt: at(100), revokedAt: null });
        await Promise.all(Array.from({ length: n }, (_, i) => [s.addToken(t(`t${i}a`, `job_${i}`)), s.addToken(t(`t${i}b`, `job_${i}`))]).flat());
        const revoked = await Promise.all(Array.from({ length: n }, (_, i) => s.revokeTokensOfJob(`job_${i}`, at(5))));
        revoked.forEach((jtis, i) => assert.deepEqual(jtis.sort(), [`t${i}a`, `t${i}b`], `job_${i}: its own tokens`));
        const twice = await Promise.all([s.updateJob('job_5', { cellId: 'c1' }), s.updateJob('job_5', { message: 'm' }), s.transitionJob('job_5', () => ({ exitCode: 3 }))]);
        assert.equal(twice[2]!.exitCode, 3);
        const five = (await s.getJob('job_5'))!;
        assert.deepEqual([five.cellId, five.message, five.exitCode], ['c1', 'm', 3], 'changes of one job made at once all apply');
      }));

    test('countJobs counts one workspace\'s jobs in the given statuses (the running quota across replicas)', () =>
      withStores(b, 1, async (s) => {
        await s.createWorkspace(workspace('ws_a'));
        await s.createWorkspace(workspace('ws_b'));
        await s.createJob(job('job_1', 'ws_a', 1, { status: 'assigned' }));
        await s.createJob(job('job_2', 'ws_a', 2, { status: 'running' }));
        await s.createJob(job('job_3', 'ws_a', 3, { status: 'queued' }));
        await s.createJob(job('job_4', 'ws_b', 4, { status: 'running' }));
        await s.createJob(job('job_5', 'ws_a', 5, { status: 'succeeded' }));
        assert.equal(await s.countJobs('ws_a', ['assigned', 'running']), 2);
        assert.equal(await s.countJobs('ws_b', ['assigned', 'running']), 1);
        assert.equal(await s.countJobs('ws_a', ['queued']), 1);
        assert.equal(await s.countJobs('ws_a', []), 0);
        assert.equal(await s.claimJob('job_3', 'queued', { status: 'assigned' }), true);
        assert.equal(await s.countJobs('ws_a', ['assigned', 'running']), 3);
      }));

    test('createPlacedJob records a placed job and counts its workspace\'s placed jobs; of two racing placements the later counts both', () =>
      withStores(b, 2, async (s1, s2) => {
        await s1.createWorkspace(workspace('ws_a'));
        await s1.createJob(job('job_q', 'ws_a', 1, { status: 'queued' }));
        await s1.createJob(job('job_e', 'ws_a', 2, { status: 'succeeded' }));
        assert.equal(await s1.createPlacedJob(job('job_1', 'ws_a', 3, { status: 'assigned', agentId: 'agent_1' })), 1, 'itself, not queued or ended jobs');
        assert.equal(await s2.createPlacedJob(job('job_2', 'ws_a', 4, { status: 'assigned', agentId: 'agent_2' })), 2);
        assert.deepEqual(pick((await s2.getJob('job_1'))!), { status: 'assigned', agentId: 'agent_1', cellId: null });
        await assert.rejects(s1.createPlacedJob(job('job_1', 'ws_a', 5, { status: 'assigned' })), 'an id is recorded once');
        // Races between replicas, each on a workspace with nothing placed yet: a create against a create, and a create against a
        // claim from the queue counted after its commit (the claim path of the running quota).
        for (let r = 0; r < 12; r++) {
          const ws = `ws_r${r}`;
          await s1.createWorkspace(workspace(ws, r));
          await s1.createJob(job(`job_r${r}_q`, ws, 0, { status: 'queued' }));
          const [one, two] = await Promise.all([
            s1.createPlacedJob(job(`job_r${r}_1`, ws, 1, { status: 'assigned' })),
            s2.createPlacedJob(job(`job_r${r}_2`, ws, 2, { status: 'assigned' })),
          ]);
          assert.equal(Math.max(one, two), 2, `round ${r}: the later create counts both (${one}, ${two})`);
          const [three, claimed] = await Promise.all([
            s1.createPlacedJob(job(`job_r${r}_3`, ws, 3, { status: 'assigned' })),
            s2.claimJob(`job_r${r}_q`, 'queued', { status: 'assigned' }).then(() => s2.countJobs(ws, ['assigned', 'running'])),
          ]);
          assert.equal(Math.max(three, claimed), 4, `round ${r}: of a create and a claim, the later counts both (${three}, ${claimed})`);
        }
      }));

    test('createPlacedJob with the job\'s token records both in one write, or neither; calls made at once each keep their own', () =>
      withStores(b, 2, async (s1, s2) => {
        await s1.createWorkspace(workspace('ws_a'));
        const t = (jti: string, jobId: string) => ({ jti, jobId, workspaceId: 'ws_a', issuedAt: at(0), expiresAt: at(100), revokedAt: null });
        assert.equal(await s1.createPlacedJob(job('job_1', 'ws_a', 1, { status: 'assigned', agentId: 'agent_1' }), t('t1', 'job_1')), 1);
        assert.deepEqual(await s2.getToken('t1'), t('t1', 'job_1'));
        assert.equal((await s2.getJob('job_1'))!.status, 'assigned');
        // A row that cannot be stored (its id is taken) takes its token with it.
        await assert.rejects(s2.createPlacedJob(job('job_1', 'ws_a', 2, { status: 'assigned' }), t('t2', 'job_1')));
        assert.equal(await s1.getToken('t2'), null, 'no token without its row');
        // Several at once (one statement on PostgreSQL), with and without tokens, one of them failing alone.
        const results = await Promise.allSettled([
          s1.createPlacedJob(job('job_2', 'ws_a', 3, { status: 'assigned' }), t('t3', 'job_2')),
          s1.createPlacedJob(job('job_3', 'ws_a', 4, { status: 'assigned' })),
          s1.createPlacedJob(job('job_1', 'ws_a', 5, { status: 'assigned' }), t('t4', 'job_1')),
          s1.createPlacedJob(job('job_4', 'ws_a', 6, { status: 'assigned' }), t('t5', 'job_4')),
        ]);
        assert.deepEqual(results.map((r) => r.status), ['fulfilled', 'fulfilled', 'rejected', 'fulfilled']);
        assert.deepEqual(await s2.getToken('t3'), t('t3', 'job_2'));
        assert.deepEqual(await s2.getToken('t5'), t('t5', 'job_4'));
        assert.equal(await s2.getToken('t4'), null);
        assert.equal(await s2.countJobs('ws_a', ['assigned', 'running']), 4);
      }));

    test('changes of one job made at once by one instance apply in call order; a change that leaves the job does not stop the next', () =>
      withStores(b, 1, async (s) => {
        await s.createWorkspace(workspace('ws_a'));
        await s.createJob(job('job_1', 'ws_a', 1));
        // Issued in one turn, none awaited before the next: each builds on the one before (a placement's timings and the
        // agent's start report arrive so).
        const results = await Promise.all([
          s.updateJob('job_1', { message: 'a' }),
          s.transitionJob('job_1', (j) => ({ message: `${j.message}b` })),
          s.claimJob('job_1', 'running', { message: 'never' }), // not running: left as it is
          s.transitionJob('job_1', (j) => ({ message: `${j.message}c`, status: 'assigned', agentId: 'agent_1' })),
          s.claimJob('job_1', 'assigned', { status: 'running', cellId: 'cell_1' }),
        ]);
        assert.equal(results[2], false);
        assert.equal(results[4], true);
        const j = (await s.getJob('job_1'))!;
        assert.equal(j.message, 'abc');
        assert.deepEqual(pick(j), { status: 'running', agentId: 'agent_1', cellId: 'cell_1' });
      }));

    test('updates and claims from instances whose last read is stale build on the stored job, never on their view', () =>
      withStores(b, 2, async (s1, s2) => {
        await s1.createWorkspace(workspace('ws_a'));
        await s1.createJob(job('job_1', 'ws_a', 1));
        assert.equal((await s1.getJob('job_1'))!.status, 'queued');
        await s2.updateJob('job_1', { status: 'assigned', agentId: 'agent_2' });
        await s1.updateJob('job_1', { cellId: 'cell_1' });
        assert.deepEqual(pick(await s2.getJob('job_1')), { status: 'assigned', agentId: 'agent_2', cellId: 'cell_1' }, 's2’s change is kept');
        assert.equal(await s1.claimJob('job_1', 'queued', { status: 'running' }), false, 'not claimed from a status it left');
        await s2.updateJob('job_1', { status: 'queued', agentId: null });
        assert.equal(await s1.claimJob('job_1', 'queued', { status: 'assigned', agentId: 'agent_1' }), true, 'claimed from the status it is back in');
        assert.deepEqual(pick(await s2.getJob('job_1')), { status: 'assigned', agentId: 'agent_1', cellId: 'cell_1' });
        await s2.expireJob('job_1', at(50));
        await s1.updateJob('job_1', { message: 'late' });
        assert.equal((await s2.getJob('job_1'))!.expiredAt, at(50), 'an expiry by another instance is kept');
      }));

    test('output: chunks in order after a seq, paged, binary-safe; lastOutputSeq', () =>
      withStores(b, 1, async (s) => {
        await s.createWorkspace(workspace('ws_a'));
        await s.createJob(job('job_1', 'ws_a', 1));
        assert.equal(await s.lastOutputSeq('job_1'), 0);
        const all = Buffer.from(Array.from({ length: 256 }, (_, i) => i));
        for (let seq = 1; seq <= 5; seq++) await s.appendOutput('job_1', { seq, stream: seq % 2 ? 'stdout' : 'stderr', data: seq === 3 ? all : Buffer.from(`chunk ${seq}`) });
        await s.appendOutput('job_2', { seq: 1, stream: 'stdout', data: Buffer.alloc(0) });
        assert.equal(await s.lastOutputSeq('job_1'), 5);
        const got = await s.output('job_1', 0);
        assert.deepEqual(got.map((c) => c.seq), [1, 2, 3, 4, 5]);
        assert.deepEqual(got[2]!.data, all);
        assert.equal(got[1]!.stream, 'stderr');
        assert.ok(Buffer.isBuffer(got[0]!.data));
        assert.deepEqual((await s.output('job_1', 2, 2)).map((c) => c.seq), [3, 4]);
        assert.deepEqual(await s.output('job_1', 5), []);
        assert.deepEqual((await s.output('job_2', 0))[0]!.data, Buffer.alloc(0));
        await assert.rejects(s.appendOutput('job_1', { seq: 5, stream: 'stdout', data: Buffer.from('again') }), 'a seq is stored once');
      }));

    test('expiry: ended jobs before a time, once; expiring deletes the output and marks the record', () =>
      withStores(b, 1, async (s) => {
        await s.createWorkspace(workspace('ws_a'));
        await s.createJob(job('job_1', 'ws_a', 1, { status: 'succeeded', endedAt: at(10) }));
        await s.createJob(job('job_2', 'ws_a', 2, { status: 'failed', endedAt: at(20) }));
        await s.createJob(job('job_3', 'ws_a', 3));
        await s.appendOutput('job_1', { seq: 1, stream: 'stdout', data: Buffer.from('x') });
        assert.deepEqual(await s.jobsEndedBefore(at(15), 10), ['job_1']);
        assert.deepEqual(await s.jobsEndedBefore(at(25), 10), ['job_1', 'job_2']);
        assert.deepEqual(await s.jobsEndedBefore(at(25), 1), ['job_1']);
        await s.expireJob('job_1', at(30));
        assert.deepEqual(await s.output('job_1', 0), []);
        assert.equal((await s.getJob('job_1'))!.expiredAt, at(30));
        assert.equal((await s.getJob('job_1'))!.status, 'succeeded');
        assert.deepEqual(await s.jobsEndedBefore(at(25), 10), ['job_2']);
      }));

    test('egress policies and denied connections', () =>
      withStores(b, 1, async (s) => {
        await s.createWorkspace(workspace('ws_a'));
        assert.equal(await s.getEgressPolicy('ws_a'), null);
        const p1 = { allow: [{ cidr: '10.0.0.0/8', protocol: 'tcp' as const, ports: { from: 443, to: 443 } }], dryRun: false };
        await s.setEgressPolicy('ws_a', p1);
        assert.deepEqual(await s.getEgressPolicy('ws_a'), p1);
        await s.setEgressPolicy('ws_a', DEFAULT_EGRESS_POLICY);
        assert.deepEqual(await s.getEgressPolicy('ws_a'), DEFAULT_EGRESS_POLICY);

        const d = (i: number, jobId: string, port: number | null) => ({ workspaceId: 'ws_a', jobId, cellId: `cell_${i}`, action: i % 2 ? ('denied' as const) : ('dry-run' as const), destination: `1.2.3.${i}`, protocol: 'tcp', port, time: at(i) });
        await s.addDeniedConnections([d(1, 'job_1', 80), d(2, 'job_2', null), d(3, 'job_1', 443)]);
        await s.addDeniedConnections([]);
        assert.deepEqual(await s.listDeniedConnections('ws_a', { limit: 10 }), [d(3, 'job_1', 443), d(2, 'job_2', null), d(1, 'job_1', 80)]);
        assert.deepEqual(await s.listDeniedConnections('ws_a', { limit: 10, jobId: 'job_1' }), [d(3, 'job_1', 443), d(1, 'job_1', 80)]);
        assert.equal((await s.listDeniedConnections('ws_a', { limit: 1 })).length, 1);
        await assert.rejects(s.addDeniedConnections([d(4, 'job_1', 1), { ...d(5, 'job_1', 1), workspaceId: 'ws_none' }]), 'a batch with a bad record fails');
        assert.equal((await s.listDeniedConnections('ws_a', { limit: 10 })).length, 3, 'and stores none of it');
      }));

    test('audit: one chain, filtered and paged either way; three instances appending at once keep it gap-free', () =>
      withStores(b, 3, async (s1, s2, s3) => {
        for (let i = 1; i <= 4; i++) await s1.appendAudit(auditInput(i, i % 2 ? 'ws_a' : null));
        const events = await s2.listAudit({ order: 'asc', limit: 100 });
        assert.deepEqual(events.map((e) => e.seq), [1, 2, 3, 4]);
        assert.deepEqual(events[0]!.details, { i: 1, nested: { list: [1, 'x'] } });
        assert.deepEqual((await s1.listAudit({ order: 'desc', limit: 2 })).map((e) => e.seq), [4, 3]);
        assert.deepEqual((await s1.listAudit({ order: 'asc', limit: 10, workspaceId: 'ws_a' })).map((e) => e.seq), [1, 3]);
        assert.deepEqual((await s1.listAudit({ order: 'asc', limit: 10, afterSeq: 1, beforeSeq: 4 })).map((e) => e.seq), [2, 3]);
        assert.deepEqual((await s1.listAudit({ order: 'asc', limit: 10, type: 'api_key.created' })).map((e) => e.seq), []);

        // Waves of concurrent appends from every instance, each instance's view of the last event going stale in between.
        const waves = 4;
        const perWave = 15;
        let n = 0;
        for (let w = 0; w < waves; w++) {
          await Promise.all([s1, s2, s3].flatMap((s) => Array.from({ length: perWave }, () => s.appendAudit(auditInput(1000 + n++)))));
        }
        // An event that cannot be sealed (details that are not JSON) fails its own append only.
        const mixed = await Promise.allSettled([s2.appendAudit({ ...auditInput(5), details: { text: 'żółw ✓ "q" \\ \u2028 \n', list: [1.5, -0, null, true] } }), s2.appendAudit({ ...auditInput(2), subject: 'job_bad', details: { n: 1n } }), s2.appendAudit({ ...auditInput(3), subject: 'job_last' })]);
        assert.deepEqual(mixed.map((r) => r.status), ['fulfilled', 'rejected', 'fulfilled']);
        const total = 4 + waves * perWave * 3 + 2;
        const v = new ChainVerifier();
        const chain = await s3.listAudit({ order: 'asc', limit: 1000 });
        for (const e of chain) v.add(e);
        assert.deepEqual(v.verdict(), { ok: true, events: total, lastHash: chain.at(-1)!.hash });
        assert.equal(new Set(chain.map((e) => `${e.subject}/${e.actor}`)).size, total, 'every append is in the chain once');
        assert.equal(chain.at(-1)!.subject, 'job_last');
        // An append from any instance links after the real last event.
        const e = await s1.appendAudit(auditInput(7));
        assert.equal(e.seq, total + 1);
        assert.equal(e.prevHash, chain.at(-1)!.hash);
      }));

    test('audit: an event cannot be changed or removed', () =>
      withStores(b, 1, async (s) => {
        await s.appendAudit(auditInput(1));
        await assert.rejects(rawExec(b, s, "UPDATE audit_events SET actor = 'someone else'"), /append-only/);
        await assert.rejects(rawExec(b, s, 'DELETE FROM audit_events'), /append-only/);
        assert.equal((await s.listAudit({ order: 'asc', limit: 10 })).length, 1);
      }));

    test('workspaceKey: the first writer wins, also between two instances racing', () =>
      withStores(b, 2, async (s1, s2) => {
        for (let w = 0; w < 10; w++) await s1.createWorkspace(workspace(`ws_${w}`));
        const keys = await Promise.all(
          Array.from({ length: 10 }, (_, w) => [s1.workspaceKey(`ws_${w}`, () => Buffer.from(`one-${w}`)), s2.workspaceKey(`ws_${w}`, () => Buffer.from(`two-${w}`))]).flat(),
        );
        for (let w = 0; w < 10; w++) {
          const [a, c] = [keys[2 * w]!, keys[2 * w + 1]!];
          assert.deepEqual(a, c, `ws_${w}: both instances got the same key`);
          assert.ok([`one-${w}`, `two-${w}`].includes(a.toString()));
          let asked = false;
          const again = await s2.workspaceKey(`ws_${w}`, () => ((asked = true), Buffer.from('late')));
          assert.deepEqual(again, a);
          assert.equal(asked, false, 'no candidate once a key is stored');
        }
      }));

    test('objects: put returns the replaced record, listed in key order by prefix and paged, deleted, counted', () =>
      withStores(b, 1, async (s) => {
        await s.createWorkspace(workspace('ws_a'));
        await s.createWorkspace(workspace('ws_b'));
        const o = (key: string, size: number, ws = 'ws_a'): ObjectMeta => ({ workspaceId: ws, key, objectId: `obj_${key}_${size}`, size, sha256: 'ab'.repeat(32), wrappedKey: Buffer.from([0, 1, 255, size % 256]), createdAt: at(size) });
        assert.equal(await s.putObject(o('a/1', 10)), null);
        assert.deepEqual(await s.putObject(o('a/1', 11)), o('a/1', 10));
        assert.deepEqual(await s.getObject('ws_a', 'a/1'), o('a/1', 11));
        for (const k of ['a/2', 'a/ü', 'a/\u{10FFFE}', 'a0', 'a', 'b/1', 'A/1', 'a/10']) await s.putObject(o(k, 1));
        await s.putObject(o('a/1', 5, 'ws_b'));
        const keys = async (prefix: string, after?: string, limit = 100) => (await s.listObjects('ws_a', { prefix, after, limit })).map((x) => x.key);
        assert.deepEqual(await keys('a/'), ['a/1', 'a/10', 'a/2', 'a/ü', 'a/\u{10FFFE}'], 'code point order, prefix only');
        assert.deepEqual(await keys('a/', undefined, 2), ['a/1', 'a/10']);
        assert.deepEqual(await keys('a/', 'a/10', 2), ['a/2', 'a/ü']);
        assert.deepEqual(await keys(''), ['A/1', 'a', 'a/1', 'a/10', 'a/2', 'a/ü', 'a/\u{10FFFE}', 'a0', 'b/1']);
        assert.deepEqual(await s.objectUsage('ws_a'), { count: 9, bytes: 11 + 8 });
        assert.deepEqual(await s.deleteObject('ws_a', 'a/1'), o('a/1', 11));
        assert.equal(await s.deleteObject('ws_a', 'a/1'), null);
        assert.equal(await s.getObject('ws_a', 'a/1'), null);
        assert.deepEqual(await s.objectUsage('ws_none'), { count: 0, bytes: 0 });
        assert.deepEqual(await s.getObject('ws_b', 'a/1'), o('a/1', 5, 'ws_b'));
      }));

    test('signing keys and tokens', () =>
      withStores(b, 1, async (s) => {
        const k = (kid: string, createdS: number) => ({ kid, publicJwk: `{"kid":"${kid}"}`, wrappedPrivate: Buffer.from([createdS, 0, 200]), createdAt: at(createdS) });
        await s.addSigningKey(k('k2', 2));
        await s.addSigningKey(k('k1', 1));
        assert.deepEqual(await s.listSigningKeys(), [k('k1', 1), k('k2', 2)]);
        await s.deleteSigningKey('k1');
        assert.deepEqual(await s.listSigningKeys(), [k('k2', 2)]);

        const t = (jti: string, jobId: string, expiresS: number) => ({ jti, jobId, workspaceId: 'ws_a', issuedAt: at(0), expiresAt: at(expiresS), revokedAt: null });
        await s.addToken(t('t1', 'job_1', 10));
        await s.addToken(t('t2', 'job_1', 20));
        await s.addToken(t('t3', 'job_2', 30));
        assert.deepEqual(await s.getToken('t2'), t('t2', 'job_1', 20));
        assert.equal(await s.getToken('t9'), null);
        assert.deepEqual((await s.revokeTokensOfJob('job_1', at(5))).sort(), ['t1', 't2']);
        assert.deepEqual(await s.revokeTokensOfJob('job_1', at(6)), []);
        assert.equal((await s.getToken('t1'))!.revokedAt, at(5));
        await s.deleteTokensExpiredBefore(at(25));
        assert.equal(await s.getToken('t2'), null);
        assert.deepEqual(await s.getToken('t3'), t('t3', 'job_2', 30));
      }));

    test('images: a name:tag per owner, public ones, by digest (oldest), by state, patched, bytes of those not failed', () =>
      withStores(b, 1, async (s) => {
        assert.equal(await s.createImage(image('img_1', 'ws_a', 'app', '1', 1, { digest: 'sha256:d1', bytes: 100, state: 'ready' })), true);
        assert.equal(await s.createImage(image('img_x', 'ws_a', 'app', '1', 9)), false, 'the owner has that name:tag');
        assert.equal(await s.createImage(image('img_2', null, 'app', '1', 2, { digest: 'sha256:d1', bytes: 7, state: 'ready' })), true, 'a public one may share it');
        assert.equal(await s.createImage(image('img_3', 'ws_a', 'app', '2', 3, { digest: 'sha256:d1', bytes: 50, state: 'failed' })), true);
        assert.equal(await s.createImage(image('img_4', 'ws_b', 'base', 'latest', 0, { bytes: 1 })), true);
        assert.deepEqual(await s.getImage('img_1'), image('img_1', 'ws_a', 'app', '1', 1, { digest: 'sha256:d1', bytes: 100, state: 'ready' }));
        assert.equal((await s.findImage('ws_a', { name: 'app', tag: '1' }))!.id, 'img_1');
        assert.equal((await s.findImage(null, { name: 'app', tag: '1' }))!.id, 'img_2');
        assert.equal((await s.findImage('ws_a', { digest: 'sha256:d1' }))!.id, 'img_1', 'the oldest with the digest');
        assert.equal(await s.findImage('ws_b', { digest: 'sha256:d1' }), null);
        assert.deepEqual((await s.listImages('ws_a', false)).map((i) => i.id), ['img_1', 'img_3']);
        assert.deepEqual((await s.listImages('ws_a', true)).map((i) => i.id), ['img_1', 'img_2', 'img_3']);
        assert.deepEqual((await s.imagesWithDigest('sha256:d1')).map((i) => i.id), ['img_1', 'img_2', 'img_3']);
        assert.deepEqual((await s.imagesInStates(['pulling', 'failed'])).map((i) => i.id), ['img_4', 'img_3']);
        assert.equal(await s.imageBytes('ws_a'), 100);
        await s.updateImage('img_4', { state: 'ready', digest: 'sha256:d4', bytes: 2 ** 33, error: null, id: 'ignored' });
        const four = (await s.getImage('img_4'))!;
        assert.deepEqual([four.id, four.state, four.digest, four.bytes], ['img_4', 'ready', 'sha256:d4', 2 ** 33]);
        assert.equal(await s.imageBytes('ws_b'), 2 ** 33);
        assert.equal((await s.findImage('ws_b', { digest: 'sha256:d4' }))!.id, 'img_4', 'the digest column follows the patch');
        await s.updateImage('img_none', { state: 'ready' });
        await s.deleteImage('img_1');
        assert.equal(await s.getImage('img_1'), null);
      }));

    test('agents and replicas: upserted whole, patched in part, listed, deleted', () =>
      withStores(b, 2, async (s1, s2) => {
        const load = { running: 1, capacity: 64, preparing: 2, warm: [{ image: null, runtime: 'runc' as const, sizeClass: 'small', cells: 3 }] };
        await s1.upsertAgent(agent('agt_b'));
        await s1.upsertAgent(agent('agt_a', { load }));
        assert.deepEqual(await s2.getAgent('agt_a'), agent('agt_a', { load }));
        assert.equal(await s2.getAgent('agt_none'), null);
        assert.deepEqual((await s2.listAgents()).map((a) => a.id), ['agt_a', 'agt_b']);
        await s2.updateAgent('agt_a', { connected: false, replicaId: null, connectedAt: null, lastSeenAt: at(9) });
        await s2.updateAgent('agt_a', { draining: true, running: 5, load: null });
        await s2.updateAgent('agt_a', {});
        await s2.updateAgent('agt_none', { draining: true });
        assert.deepEqual(await s1.getAgent('agt_a'), agent('agt_a', { connected: false, replicaId: null, connectedAt: null, lastSeenAt: at(9), draining: true, running: 5, load: null }));
        await s1.updateAgent('agt_b', { removed: true, load, capacity: 8 });
        assert.deepEqual(await s1.getAgent('agt_b'), agent('agt_b', { removed: true, load, capacity: 8 }));
        await s1.upsertAgent(agent('agt_b', { replicaId: 'rep_b' }));
        assert.deepEqual(await s2.getAgent('agt_b'), agent('agt_b', { replicaId: 'rep_b' }), 'an upsert replaces every field');
        await s2.touchAgents(['agt_a', 'agt_b', 'agt_none'], 'rep_c', at(11));
        await s2.touchAgents([], 'rep_c', at(12));
        assert.deepEqual(await s1.getAgent('agt_a'), agent('agt_a', { connected: true, replicaId: 'rep_c', connectedAt: null, lastSeenAt: at(11), draining: true, running: 5, load: null }), 'a touch sets the replica, connected and seen, nothing else');
        assert.deepEqual(await s1.getAgent('agt_b'), agent('agt_b', { replicaId: 'rep_c', connected: true, lastSeenAt: at(11) }));
        await s1.upsertAgent(agent('agt_b', { replicaId: 'rep_b' }));
        await s1.deleteAgent('agt_a');
        assert.deepEqual((await s2.listAgents()).map((a) => a.id), ['agt_b']);

        const r = (id: string, startedS: number, beatS = startedS) => ({ id, apiUrl: `https://${id}:7443`, startedAt: at(startedS), heartbeatAt: at(beatS) });
        await s1.upsertReplica(r('rep_b', 1));
        await s2.upsertReplica(r('rep_a', 2));
        await s1.upsertReplica(r('rep_b', 1, 5));
        assert.deepEqual(await s2.listReplicas(), [r('rep_b', 1, 5), r('rep_a', 2)]);
        await s2.deleteReplica('rep_b');
        assert.deepEqual(await s1.listReplicas(), [r('rep_a', 2)]);
      }));

    test('migrations: a fresh database gets the current version, re-opening keeps the data, a newer one is refused', async () => {
      const db = await b.fresh();
      try {
        const s = await db.open();
        await s.createWorkspace(workspace('ws_a'));
        await s.close();
        const again = await db.open();
        assert.deepEqual(await again.getWorkspace('ws_a'), workspace('ws_a'));
        const version = await schemaVersion(b, again);
        assert.equal(version.current, version.latest);
        await again.close();
        await setSchemaVersion(b, db, version.latest + 1);
        await assert.rejects(db.open(), new RegExp(`schema version ${version.latest + 1}, newer than this Cleanroom \\(${version.latest}\\)`));
      } finally {
        await db.cleanup();
      }
    });
  });
}

describe('store contract: postgres only', () => {
  test('replicas starting at once on an empty database migrate it once', async () => {
    const url = await pgServer!.createDatabase('concurrent_start');
    const stores = await Promise.all(Array.from({ length: 4 }, () => PostgresStore.open({ url, poolSize: 2 })));
    try {
      const rows = await pgServer!.query<{ version: number }>('concurrent_start', 'SELECT version FROM schema_migrations ORDER BY version');
      assert.deepEqual(rows.map((r) => r.version), Array.from({ length: POSTGRES_SCHEMA_VERSION }, (_, i) => i + 1));
    } finally {
      for (const s of stores) await s.close();
    }
  });

  test('a schema-1 database with placed jobs is migrated: its placed jobs count against the running quota at once', async () => {
    const url = await pgServer!.createDatabase('from_schema_1');
    const s = await PostgresStore.open({ url, poolSize: 2 });
    try {
      await s.createWorkspace(workspace('ws_a'));
      await s.createJob(job('job_a', 'ws_a', 1, { status: 'assigned', agentId: 'agent_1' }));
      await s.createJob(job('job_r', 'ws_a', 2, { status: 'running', agentId: 'agent_1' }));
      await s.createJob(job('job_q', 'ws_a', 3, { status: 'queued' }));
    } finally {
      await s.close();
    }
    // Events an older build stored: sealed in its process (sealEvent) and inserted as they are.
    const oldEvents: AuditEvent[] = [];
    const insertSealed = async (e: AuditEvent) =>
      pgServer!.query('from_schema_1', 'INSERT INTO audit_events (seq, time, type, actor, workspace_id, subject, details, prev_hash, hash) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)', [
        e.seq, e.time, e.type, e.actor, e.workspaceId, e.subject, JSON.stringify(e.details), e.prevHash, e.hash,
      ]);
    for (let i = 0; i < 3; i++) {
      const e = sealEvent(auditInput(100 + i, 'ws_a'), oldEvents.at(-1) ?? null);
      await insertSealed(e);
      oldEvents.push(e);
    }
    // Back to what schema 1 had: no quota functions, no index of placed jobs, no audit append function, no record of
    // migrations 2 and 3.
    for (const sql of ['DROP FUNCTION cr_append_audit', 'DROP FUNCTION cr_insert_placed_jobs', 'DROP FUNCTION cr_count_jobs', 'DROP FUNCTION cr_lock_quotas', 'DROP INDEX jobs_placed', 'DELETE FROM schema_migrations WHERE version > 1']) {
      await pgServer!.query('from_schema_1', sql);
    }
    const again = await PostgresStore.open({ url, poolSize: 2 });
    try {
      const rows = await pgServer!.query<{ version: number }>('from_schema_1', 'SELECT version FROM schema_migrations ORDER BY version');
      assert.deepEqual(rows.map((r) => r.version), Array.from({ length: POSTGRES_SCHEMA_VERSION }, (_, i) => i + 1));
      assert.equal(await again.countJobs('ws_a', ['assigned', 'running']), 2);
      assert.equal(await again.createPlacedJob(job('job_new', 'ws_a', 4, { status: 'assigned', agentId: 'agent_2' })), 3, 'the jobs placed before the upgrade count');
      // The chain goes on after the events stored before the upgrade: linked here by a lone writer, then (once an older
      // build's replica is seen appending beside it: a unique violation on seq) by cr_append_audit in the database.
      const first = await again.appendAudit(auditInput(200));
      assert.equal(first.seq, 4);
      await insertSealed(sealEvent(auditInput(201), first));
      const linkedInDb = await again.appendAudit(auditInput(202));
      assert.equal(linkedInDb.seq, 6);
      assert.equal((await again.appendAudit(auditInput(203))).seq, 7);
      const chain = await again.listAudit({ order: 'asc', limit: 100 });
      assert.deepEqual(chain.slice(0, 3), oldEvents);
      const v = new ChainVerifier();
      for (const e of chain) v.add(e);
      assert.deepEqual(v.verdict(), { ok: true, events: 7, lastHash: chain.at(-1)!.hash });
    } finally {
      await again.close();
    }
  });

  test('a database whose encoding is not UTF8 is refused at start: the audit hashes are over UTF-8', async () => {
    await pgServer!.query('postgres', "CREATE DATABASE latin1_db ENCODING 'LATIN1' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0");
    await assert.rejects(PostgresStore.open({ url: pgServer!.url('latin1_db'), poolSize: 1 }), /encoding is LATIN1, not UTF8: create it with ENCODING 'UTF8' \(store_encoding_not_utf8\)/);
    const tables = await pgServer!.query('latin1_db', "SELECT 1 FROM information_schema.tables WHERE table_schema = 'public'");
    assert.equal(tables.length, 0, 'nothing is laid out in it');
  });

  test('connections the server drops are replaced: the next operations succeed', async () => {
    const url = await pgServer!.createDatabase('dropped');
    const s = await PostgresStore.open({ url, poolSize: 3, onError: () => {} });
    try {
      await s.createWorkspace(workspace('ws_a'));
      await Promise.all([s.getWorkspace('ws_a'), s.listWorkspaces(), s.countApiKeys()]); // three connections in the pool
      const killed = await pgServer!.query<{ ok: boolean }>('postgres', "SELECT pg_terminate_backend(pid) AS ok FROM pg_stat_activity WHERE datname = 'dropped' AND pid <> pg_backend_pid()");
      assert.ok(killed.length >= 1);
      await new Promise((r) => setTimeout(r, 100));
      for (let i = 0; i < 5; i++) await s.appendAudit(auditInput(i));
      await s.createJob(job('job_1', 'ws_a', 1));
      await s.updateJob('job_1', { status: 'running' });
      assert.equal((await s.getJob('job_1'))!.status, 'running');
    } finally {
      await s.close();
    }
  });

  test('start-up errors say what to fix and never show the password', async () => {
    const good = pgServer!.url();
    const password = new URL(good).password;
    const wrong = good.replace(`:${password}@`, ':not-the-password@');
    await assert.rejects(PostgresStore.open({ url: wrong, poolSize: 1 }), (e: Error) => {
      assert.match(e.message, /^cannot use the PostgreSQL store at postgres:\/\/cleanroom:\*\*\*@127\.0\.0\.1:\d+\/cleanroom: .*password authentication failed.*check the user and password/);
      assert.equal(e.message.includes('not-the-password'), false);
      return true;
    });
    await assert.rejects(PostgresStore.open({ url: pgServer!.url('no_such_db'), poolSize: 1 }), /database "no_such_db" does not exist \(create the database first\)/);
    const closedPort = `postgres://u:secret@127.0.0.1:1/db`;
    await assert.rejects(PostgresStore.open({ url: closedPort, poolSize: 1 }), (e: Error) => {
      assert.match(e.message, /ECONNREFUSED.*is PostgreSQL running/);
      assert.equal(e.message.includes('secret'), false);
      return true;
    });
  });
});

function pick(j: Job | null) {
  return { status: j!.status, agentId: j!.agentId, cellId: j!.cellId };
}

/** rawExec runs SQL behind the store's back (what a tamperer with database access could do). */
async function rawExec(b: Backend, s: Store, sql: string): Promise<void> {
  if (b.name === 'sqlite') {
    const db = new Database((s as unknown as { db: Database.Database }).db.name);
    try {
      db.prepare(sql).run();
    } finally {
      db.close();
    }
  } else {
    await (s as unknown as { pool: import('pg').Pool }).pool.query(sql);
  }
}

async function schemaVersion(b: Backend, s: Store): Promise<{ current: number; latest: number }> {
  if (b.name === 'sqlite') {
    const db = new Database((s as unknown as { db: Database.Database }).db.name);
    try {
      return { current: db.pragma('user_version', { simple: true }) as number, latest: SCHEMA_VERSION };
    } finally {
      db.close();
    }
  }
  const r = await (s as unknown as { pool: import('pg').Pool }).pool.query<{ v: number }>('SELECT max(version) AS v FROM schema_migrations');
  return { current: r.rows[0]!.v, latest: POSTGRES_SCHEMA_VERSION };
}

/** setSchemaVersion marks the database as made by a newer Cleanroom. */
async function setSchemaVersion(b: Backend, db: { open: () => Promise<Store> }, version: number): Promise<void> {
  const s = await db.open();
  try {
    if (b.name === 'sqlite') {
      const raw = new Database((s as unknown as { db: Database.Database }).db.name);
      raw.pragma(`user_version = ${version}`);
      raw.close();
    } else {
      await (s as unknown as { pool: import('pg').Pool }).pool.query("INSERT INTO schema_migrations (version, why) VALUES ($1, 'from the future')", [version]);
    }
  } finally {
    await s.close();
  }
}
