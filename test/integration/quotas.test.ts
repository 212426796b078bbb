// Per-workspace quotas and fair scheduling: work beyond a workspace's running quota or its agent's capacity waits its
// turn (round robin across workspaces) instead of failing; a full queue, too many streams or objects, and too many
// requests per second are refused with 429 and a documented code (Retry-After where waiting helps).
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { request } from 'node:https';
import { TestCluster } from '../support/cluster.js';
import { CleanroomClient, type Job } from '../../src/sdk/client.js';

let cluster: TestCluster;
const clients: Record<string, CleanroomClient> = {};
const keys: Record<string, string> = {};

before(async () => {
  cluster = await TestCluster.start({
    config: {
      agent: { maxRunningJobs: 3, pool: [{ runtime: 'runc', class: 'small', warm: 2 }] },
      quotas: {
        workspaces: {
          'q-flood': { maxRunningJobs: 2, maxQueuedJobs: 4 },
          'q-rate': { requestsPerSecond: 2, requestBurst: 4 },
          'q-streams': { maxStreams: 1 },
          'q-objects': { maxObjects: 2, maxObjectBytesMiB: 1 },
        },
      },
    },
  });
  for (const name of ['q-flood', 'q-calm', 'q-rate', 'q-streams', 'q-objects']) {
    await cluster.client.createWorkspace({ name });
    keys[name] = (await cluster.client.createApiKey({ workspace: name, name: 'k' })).key;
    clients[name] = new CleanroomClient({ url: cluster.url, apiKey: keys[name], ca: cluster.ca });
  }
});
after(async () => {
  for (const c of Object.values(clients)) c.close();
  await cluster?.stop();
});

/** raw sends one request and returns its status, headers and parsed body. */
function raw(method: string, path: string, key: string, body?: string): Promise<{ status: number; headers: Record<string, string | string[] | undefined>; body: { error?: { code: string; message: string; details?: Record<string, unknown> } } }> {
  return new Promise((resolve, reject) => {
    const req = request(`${cluster.url}${path}`, { method, ca: cluster.ca, headers: { authorization: `Bearer ${key}`, ...(body ? { 'content-type': 'application/octet-stream' } : {}) } }, (res) => {
      let text = '';
      res.setEncoding('utf8').on('data', (d: string) => (text += d));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: text.startsWith('{') ? JSON.parse(text) : {} }));
    });
    req.on('error', reject);
    req.end(body);
  });
}

/**
 * snapshot reads the jobs' states in one request (one store query): states read one job at a time are from different
 * moments, and a job that ended between two reads could be counted beside the one that took its place.
 */
async function snapshot(client: CleanroomClient, jobs: Job[]): Promise<Job[]> {
  const all = await client.listJobs(1000);
  return jobs.map((j) => all.find((x) => x.id === j.id) ?? assert.fail(`job ${j.id} is not listed`));
}

test('a flood waits its turn: at most its running quota runs, the queue is bounded (429), and another workspace is served at once', async () => {
  const flood = clients['q-flood']!;
  const created: Job[] = [];
  // Running quota 2 + queue of 4: the 7th and 8th are refused.
  const results = await Promise.allSettled(Array.from({ length: 8 }, () => flood.createJob({ command: ['sleep', '3'] })));
  const refused = results.filter((r): r is PromiseRejectedResult => r.status === 'rejected').map((r) => r.reason as { status: number; code: string; details?: { quota?: string } });
  for (const r of results) if (r.status === 'fulfilled') created.push(r.value);
  assert.equal(created.length, 6, `accepted ${created.length} of 8: ${JSON.stringify(refused)}`);
  assert.deepEqual(refused.map((r) => [r.status, r.code]), [[429, 'quota_exceeded'], [429, 'quota_exceeded']]);

  // Another workspace's job starts without waiting for the flood (the agent has room for 3; the flood may use 2).
  // Placed by its create (not queued behind the flood, whatever the host's speed), and it runs.
  const calmClient = clients['q-calm']!;
  const calmJob = await calmClient.createJob({ command: ['echo', 'served'] });
  assert.notEqual(calmJob.status, 'queued', 'the calm workspace waits behind the flood');
  let served = '';
  assert.equal((await calmClient.followLogs(calmJob.id, (c) => (served += c.data.toString()))).status, 'succeeded');
  assert.equal(served, 'served\n');

  // While the flood drains, never more than 2 of its jobs run at once, and all 6 end.
  let peak = 0;
  for (;;) {
    const now = await snapshot(flood, created);
    peak = Math.max(peak, now.filter((j) => j.status === 'running' || j.status === 'assigned').length);
    if (now.every((j) => !['queued', 'assigned', 'running'].includes(j.status))) {
      assert.deepEqual(now.map((j) => j.status), Array(6).fill('succeeded'));
      break;
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  assert.ok(peak <= 2 && peak >= 1, `the flood ran ${peak} jobs at once (quota 2)`);
});

test("an agent runs at most its capacity at once; the rest are queued and run later", async () => {
  const calm = clients['q-calm']!;
  const jobs = await Promise.all(Array.from({ length: 5 }, () => calm.createJob({ command: ['sleep', '2'] })));
  let peak = 0;
  for (;;) {
    const now = await snapshot(calm, jobs);
    peak = Math.max(peak, now.filter((j) => j.status === 'running' || j.status === 'assigned').length);
    if (now.every((j) => !['queued', 'assigned', 'running'].includes(j.status))) {
      assert.deepEqual(now.map((j) => j.status), Array(5).fill('succeeded'));
      break;
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  assert.equal(peak, 3, `the agent (capacity 3) ran ${peak} jobs at once`);
});

test('more requests per second than the quota get 429 rate_limited with Retry-After; the budget refills', async () => {
  const statuses: number[] = [];
  let limited: Awaited<ReturnType<typeof raw>> | null = null;
  for (let i = 0; i < 10; i++) {
    const r = await raw('GET', '/v1/jobs?limit=1', keys['q-rate']!);
    statuses.push(r.status);
    if (r.status === 429) limited ??= r;
  }
  assert.deepEqual(statuses.slice(0, 4), [200, 200, 200, 200], 'the burst is served');
  assert.ok(limited, `no request was limited: ${statuses.join(',')}`);
  assert.equal(limited.body.error?.code, 'rate_limited');
  assert.match(String(limited.headers['retry-after']), /^\d+$/);
  // Other workspaces are not affected.
  assert.equal((await raw('GET', '/v1/jobs?limit=1', keys['q-calm']!)).status, 200);
  await new Promise((r) => setTimeout(r, Number(limited.headers['retry-after']) * 1000 + 200));
  assert.equal((await raw('GET', '/v1/jobs?limit=1', keys['q-rate']!)).status, 200, 'served again after Retry-After');
});

test('a second live stream over the quota is 429 quota_exceeded; closing the first frees its place', async () => {
  const c = clients['q-streams']!;
  const job = await c.createJob({ command: ['sleep', '3'] });
  const first = request(`${cluster.url}/v1/jobs/${job.id}/logs?follow=true`, { ca: cluster.ca, headers: { authorization: `Bearer ${keys['q-streams']}` } });
  const opened = new Promise<import('node:http').IncomingMessage>((resolve, reject) => first.on('response', resolve).on('error', reject));
  first.end();
  const res = await opened;
  assert.equal(res.statusCode, 200);
  const second = await raw('GET', `/v1/jobs/${job.id}/logs?follow=true`, keys['q-streams']!);
  assert.equal(second.status, 429);
  assert.equal(second.body.error?.code, 'quota_exceeded');
  assert.equal(second.body.error?.details?.quota, 'maxStreams');
  res.destroy();
  first.destroy();
  // The place is freed when the server sees the connection close: follow again as soon as it has.
  let ended: Job | null = null;
  for (const deadline = Date.now() + 10_000; !ended; ) {
    ended = await c.followLogs(job.id, () => {}).catch((e: { code?: string }) => {
      if (e.code !== 'quota_exceeded' || Date.now() > deadline) throw e;
      return new Promise<null>((r) => setTimeout(() => r(null), 100));
    });
  }
  assert.equal(ended.status, 'succeeded');
});

test('objects beyond the count or byte quota are refused with 429 quota_exceeded and nothing is stored', async () => {
  const c = clients['q-objects']!;
  await c.putObject('a', Buffer.from('one'));
  await c.putObject('b', Buffer.from('two'));
  await c.putObject('a', Buffer.from('replacing does not add an object'));
  const third = await raw('PUT', '/v1/data/objects/c', keys['q-objects']!, 'three');
  assert.deepEqual([third.status, third.body.error?.code, third.body.error?.details?.quota], [429, 'quota_exceeded', 'maxObjects']);
  await c.deleteObject('b');
  const big = await raw('PUT', '/v1/data/objects/big', keys['q-objects']!, 'x'.repeat(1024 * 1024 + 1));
  assert.deepEqual([big.status, big.body.error?.code, big.body.error?.details?.quota], [429, 'quota_exceeded', 'maxObjectBytesMiB']);
  assert.deepEqual((await c.listObjects()).objects.map((o) => o.key).sort(), ['a']);
});
