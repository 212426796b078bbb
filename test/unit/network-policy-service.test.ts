// The egress policy service with a real SqliteStore: defaults, validation that keeps the previous policy,
// the snapshot a job takes at creation (and sends to its agent), and denied-connection records.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { SqliteStore } from '../../src/control/store/sqlite-store.js';
import { randomBytes } from 'node:crypto';
import type { NetworkPolicyService } from '../../src/control/network/network-policy-service.js';
import type { JobService } from '../../src/control/jobs/job-service.js';
import { createServices } from '../../src/control/services.js';
import { loadConfig } from '../../src/shared/config.js';
import type { Workspace } from '../../src/control/model.js';
import { ApiError } from '../../src/shared/errors.js';
import type { DeniedConnection, JobSpec } from '../../src/shared/wire.js';

let dir: string;
let store: SqliteStore;
let network: NetworkPolicyService;
let jobs: JobService;
const dispatched: JobSpec[] = [];
const ws = (id: string): Workspace => ({ id, name: id.replace('_', '-'), createdAt: new Date().toISOString(), maxCpu: 2, maxMemoryBytes: 1 << 30, maxTimeoutSeconds: 60, maxDiskBytes: 1 << 30 });
const a = ws('ws_a');
const b = ws('ws_b');

before(async () => {
  dir = mkdtempSync('/tmp/cleanroom-netpolicy-');
  store = new SqliteStore(join(dir, 'db'));
  writeFileSync(join(dir, 'config.json'), JSON.stringify({ limits: { defaultTimeoutSeconds: 10, defaultMemoryMiB: 64, defaultDiskMiB: 64 }, images: { default: 'host' } }));
  const services = createServices({ store, config: loadConfig(join(dir, 'config.json')), kek: randomBytes(32), objectsDir: join(dir, 'objects'), imagesDir: join(dir, 'images'), defaultImageSource: join(dir, 'no-layout') });
  ({ network, jobs } = services);
  jobs.attach({ canDispatch: () => true, reserve: () => 'agent-1', assign: (_agent, spec) => (dispatched.push(spec), true), release: () => {}, holds: () => true, refreshCredentials: () => {}, cancel: () => {} });
  await store.createWorkspace(a);
  await store.createWorkspace(b);
});
after(async () => {
  await store.close();
  rmSync(dir, { recursive: true, force: true });
});

const apiError = async (p: Promise<unknown>): Promise<ApiError> => {
  try {
    await p;
  } catch (e) {
    if (e instanceof ApiError) return e;
    throw e;
  }
  throw new Error('expected an ApiError');
};

test('a workspace that never set a policy denies all egress', async () => {
  assert.deepEqual(await network.policyOf(a.id), { allow: [], dryRun: false });
});

test('set stores the normalised policy; bad input is invalid_policy with the validator code and the old policy stays', async () => {
  const set = await network.set(a, { allow: [{ cidr: '203.0.113.0/24', port: 443 }, { cidr: '198.51.100.7' }] }, 'test');
  const expected = { allow: [{ cidr: '203.0.113.0/24', protocol: 'tcp', ports: { from: 443, to: 443 } }, { cidr: '198.51.100.7/32', protocol: 'any' }], dryRun: false };
  assert.deepEqual(set, expected);
  assert.deepEqual(await network.policyOf(a.id), expected);
  const cases: Array<[unknown, string, string]> = [
    [{ allow: [{ cidr: '10.0.0.0/33' }] }, 'INVALID_CIDR', 'allow[0].cidr'],
    [{ allow: [{ cidr: '10.0.0.0/8', port: 70000 }] }, 'INVALID_PORT', 'allow[0].port'],
    [{ allow: [{ cidr: '10.0.0.0/8' }, { cidr: '10.0.0.0/8', protocol: 'sctp' }] }, 'INVALID_PROTOCOL', 'allow[1].protocol'],
    [{ allow: [{ cidr: '169.254.169.254' }] }, 'FORBIDDEN_DESTINATION', 'allow[0].cidr'],
    [{ allow: [{ cidr: '10.88.3.0/24' }] }, 'FORBIDDEN_DESTINATION', 'allow[0].cidr'],
  ];
  for (const [input, code, path] of cases) {
    const e = await apiError(network.set(a, input, 'test'));
    assert.equal(e.code, 'invalid_policy');
    assert.equal(e.status, 422);
    assert.deepEqual(e.details, { code, path });
    assert.ok(e.message.startsWith(`${path}: `), e.message);
    assert.match(e.message, /previous policy stays in force/);
  }
  assert.deepEqual(await network.policyOf(a.id), expected);
  assert.deepEqual(await network.policyOf(b.id), { allow: [], dryRun: false }, "another workspace's policy is untouched");
});

test('a job keeps the policy in force when it was created and sends it to its agent', async () => {
  await network.set(a, { allow: [{ cidr: '192.0.2.0/24', protocol: 'udp', port: '53-54' }], dryRun: true }, 'test');
  const job = await jobs.create(a, { command: ['true'] }, 'test');
  const snapshot = { allow: [{ cidr: '192.0.2.0/24', protocol: 'udp', ports: { from: 53, to: 54 } }], dryRun: true };
  assert.deepEqual(job.egress, snapshot);
  assert.deepEqual(dispatched.at(-1)?.egress, snapshot);
  await network.set(a, { allow: [] }, 'test');
  assert.deepEqual((await store.getJob(job.id))?.egress, snapshot, 'a later policy change does not alter an existing job');
  const later = await jobs.create(a, { command: ['true'] }, 'test');
  assert.deepEqual(later.egress, { allow: [], dryRun: false });
  assert.deepEqual((await jobs.create(b, { command: ['true'] }, 'test')).egress, { allow: [], dryRun: false });
});

test('denied records go to their job\'s workspace; unknown jobs, other agents\' jobs and malformed records are dropped', async () => {
  const jobA = await jobs.create(a, { command: ['true'] }, 'test');
  const jobB = await jobs.create(b, { command: ['true'] }, 'test');
  const rec = (jobId: string | null, time: string, extra: Partial<DeniedConnection> = {}): DeniedConnection => ({ jobId, cellId: 'cell-1', action: 'denied', destination: '203.0.113.9', protocol: 'tcp', port: 443, time, ...extra });
  assert.equal(await network.recordDenied('agent-2', [rec(jobA.id, '2030-01-01T00:00:00.000Z')]), 0, "another agent's job");
  const kept = await network.recordDenied('agent-1', [
    rec(jobA.id, '2030-01-01T00:00:01.000Z'),
    rec(jobA.id, '2030-01-01T00:00:03.000Z', { action: 'dry-run', protocol: 'icmp', port: null }),
    rec(jobB.id, '2030-01-01T00:00:02.000Z', { destination: '198.51.100.1' }),
    rec('job_unknown', '2030-01-01T00:00:04.000Z'),
    rec(null, '2030-01-01T00:00:05.000Z'),
    rec(jobA.id, 'not a time'),
    rec(jobA.id, '2030-01-01T00:00:06.000Z', { action: 'allowed' as 'denied' }),
    rec(jobA.id, '2030-01-01T00:00:07.000Z', { port: 70000 }),
  ]);
  assert.equal(kept, 3);
  const listA = await network.listDenied(a, { limit: 10 });
  assert.deepEqual(listA.map((r) => [r.time, r.action, r.port]), [['2030-01-01T00:00:03.000Z', 'dry-run', null], ['2030-01-01T00:00:01.000Z', 'denied', 443]]);
  assert.ok(listA.every((r) => r.workspaceId === a.id && r.jobId === jobA.id));
  assert.equal((await network.listDenied(a, { limit: 1 })).length, 1);
  assert.equal((await network.listDenied(a, { limit: 10, jobId: jobA.id })).length, 2);
  assert.deepEqual((await network.listDenied(b, { limit: 10 })).map((r) => r.destination), ['198.51.100.1']);
  assert.equal((await apiError(network.listDenied(b, { limit: 10, jobId: jobA.id }))).code, 'not_found', "another workspace's job is not found");
});

test('a job stored before egress policies existed reads as deny-all', async () => {
  const raw = new Database(join(dir, 'db'));
  const doc = { id: 'job_legacy', workspaceId: a.id, status: 'queued', command: ['true'], env: {}, cwd: '/work', cpu: 1, memoryBytes: 1, timeoutSeconds: 1, diskBytes: 1, runtime: 'runc', createdAt: '2020-01-01T00:00:00.000Z' };
  raw.prepare('INSERT INTO jobs VALUES (?, ?, ?, ?, ?)').run(doc.id, a.id, 'queued', doc.createdAt, JSON.stringify(doc));
  raw.close();
  assert.deepEqual((await store.getJob('job_legacy'))?.egress, { allow: [], dryRun: false });
});
