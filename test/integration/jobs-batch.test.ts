// A batch create (POST /v1/jobs/batch, the SDK's createJobs) is all or nothing: a bad item, an image that is missing or a
// batch the queue quota cannot hold creates nothing and names what was wrong; a good batch runs every job once, in
// request order, placed or queued like single creates. Runs on SQLite, and on PostgreSQL with CLEANROOM_TEST_STORE=postgres.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, createReadStream, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { TestCluster } from '../support/cluster.js';
import { waitEnded } from '../support/job-burst.js';
import { testImages, toArchive } from '../support/test-images.js';
import { CleanroomClient, CleanroomError, type Job } from '../../src/sdk/client.js';

let cluster: TestCluster;
let small: CleanroomClient;
const tmp = mkdtempSync(join(tmpdir(), 'cleanroom-batch-'));

before(async () => {
  cluster = await TestCluster.start({
    config: { quotas: { workspaces: { 'b-small': { maxRunningJobs: 2, maxQueuedJobs: 3 } } } },
  });
  await cluster.client.createWorkspace({ name: 'b-small' });
  const key = (await cluster.client.createApiKey({ workspace: 'b-small', name: 'k' })).key;
  small = new CleanroomClient({ url: cluster.url, apiKey: key, ca: cluster.ca });
});
after(async () => {
  small?.close();
  await cluster?.stop();
  rmSync(tmp, { recursive: true, force: true });
});

/** refused runs a batch that must fail and returns its error. */
async function refused(client: CleanroomClient, reqs: Parameters<CleanroomClient['createJobs']>[0]): Promise<CleanroomError> {
  const e = await client.createJobs(reqs).then(
    () => assert.fail('the batch was accepted'),
    (err: unknown) => err,
  );
  assert.ok(e instanceof CleanroomError, String(e));
  return e;
}

/** jobIds lists the ids of the workspace's jobs (to see that a refused batch created none). */
async function jobIds(client: CleanroomClient): Promise<Set<string>> {
  return new Set((await client.listJobs(1000)).map((j) => j.id));
}

test('a batch runs every job once, answered in request order, each with its own output', async () => {
  const n = 12;
  const jobs = await cluster.client.createJobs(Array.from({ length: n }, (_, i) => ({ command: ['/bin/echo', `item-${i}`] })));
  assert.equal(jobs.length, n);
  assert.equal(new Set(jobs.map((j) => j.id)).size, n);
  jobs.forEach((j, i) => assert.deepEqual(j.command, ['/bin/echo', `item-${i}`]));
  const ended = await waitEnded(cluster.client, jobs.map((j) => j.id), 60_000);
  for (const [i, j] of jobs.entries()) {
    const done = ended.get(j.id)!;
    assert.equal(done.status, 'succeeded', JSON.stringify(done));
    assert.ok(done.wipe, 'a wipe receipt');
    const logs = await cluster.client.logs(j.id);
    assert.equal(Buffer.concat(logs.chunks.map((c) => c.data)).toString(), `item-${i}\n`);
  }
  // One workload.created audit event per job, as single creates write, and in the chain before the job's token.
  const created = await cluster.client.listAuditEvents({ limit: 500, type: 'workload.created' });
  const minted = await cluster.client.listAuditEvents({ limit: 500, type: 'token.minted' });
  for (const j of jobs) {
    const c = created.filter((e) => e.subject === j.id);
    assert.equal(c.length, 1, j.id);
    const m = minted.find((e) => e.subject === j.id);
    assert.ok(m, `a token.minted event for ${j.id}`);
    assert.ok(c[0]!.seq < m.seq, `${j.id}: created (seq ${c[0]!.seq}) before minted (seq ${m.seq})`);
  }
});

test('the CLI creates a batch from a file and prints the ids in order; a bad item fails it with the code', async () => {
  const file = join(tmp, 'batch.json');
  writeFileSync(file, JSON.stringify([{ command: ['/bin/echo', 'cli-0'] }, { command: ['/bin/echo', 'cli-1'] }]));
  const r = await cluster.cli(['jobs', 'create-batch', file]);
  assert.equal(r.code, 0, r.stderr);
  const ids = r.stdout.trim().split('\n').map((l) => l.split(' ')[0]!);
  assert.equal(ids.length, 2);
  const ended = await waitEnded(cluster.client, ids, 60_000);
  for (const [i, id] of ids.entries()) {
    assert.equal(ended.get(id)!.status, 'succeeded');
    assert.deepEqual(ended.get(id)!.command, ['/bin/echo', `cli-${i}`]);
  }
  writeFileSync(file, JSON.stringify({ jobs: [{ command: ['/bin/true'] }, { command: ['/bin/true'], cpu: 10_000 }] }));
  const bad = await cluster.cli(['jobs', 'create-batch', file]);
  assert.notEqual(bad.code, 0);
  assert.match(bad.stderr, /limit_exceeded/);
});

test('an invalid item refuses the whole batch and says which item', async () => {
  const before = await jobIds(cluster.client);
  // Caught by the schema: the path names the item.
  const schema = await refused(cluster.client, [{ command: ['/bin/true'] }, { command: [] }]);
  assert.equal(schema.code, 'invalid_request');
  assert.match(schema.message, /jobs\.1\.command/);
  // Caught against the workspace's limits: same code as a single create, and the index.
  const limits = await refused(cluster.client, [{ command: ['/bin/true'] }, { command: ['/bin/true'] }, { command: ['/bin/true'], cpu: 10_000 }]);
  assert.equal(limits.code, 'limit_exceeded');
  assert.equal((limits.details as { index?: number }).index, 2);
  assert.match(limits.message, /^jobs\[2\]: /);
  const runtime = await refused(cluster.client, [{ command: ['/bin/true'], runtime: 'nope' }]);
  assert.equal(runtime.code, 'unsupported_runtime');
  assert.equal((runtime.details as { index?: number }).index, 0);
  const empty = await refused(cluster.client, []);
  assert.equal(empty.code, 'invalid_request');
  const tooMany = await refused(cluster.client, Array.from({ length: 101 }, () => ({ command: ['/bin/true'] })));
  assert.equal(tooMany.code, 'invalid_request');
  assert.deepEqual(await jobIds(cluster.client), before, 'no job was created');
});

test('a batch the queue quota cannot hold whole creates nothing; one that fits runs and queues like single creates', async () => {
  // b-small: 2 running, 3 waiting. Six jobs would need 4 places in the queue.
  const over = await refused(small, Array.from({ length: 6 }, () => ({ command: ['/bin/true'] })));
  assert.equal(over.code, 'quota_exceeded');
  assert.equal(over.status, 429);
  assert.equal((over.details as { quota?: string }).quota, 'maxQueuedJobs');
  // Larger than the running quota and the queue together: retrying cannot help, so no retry time is offered.
  assert.equal((over.details as { retryAfterSeconds?: number }).retryAfterSeconds, undefined);
  assert.match(over.message, /split it/);
  assert.equal((await small.listJobs(100)).length, 0, 'no job was created');
  const jobs = await small.createJobs(Array.from({ length: 5 }, (_, i) => ({ command: ['sh', '-c', `sleep 0.3; echo ${i}`] })));
  assert.equal(jobs.length, 5);
  // Two went to agents at once, three wait (in order); nothing more fits until they drain.
  assert.deepEqual(jobs.map((j) => (j.status === 'queued' ? 'queued' : 'placed')), ['placed', 'placed', 'queued', 'queued', 'queued']);
  const more = await refused(small, [{ command: ['/bin/true'] }]);
  assert.equal(more.code, 'quota_exceeded');
  const ended = await waitEnded(small, jobs.map((j) => j.id), 60_000);
  for (const j of jobs) assert.equal(ended.get(j.id)!.status, 'succeeded');
});

test('mixed images in one batch: each job runs on its own; a missing image refuses the batch at its index', async () => {
  const images = await testImages();
  const archive = join(tmp, 'busybox.tar');
  await toArchive(images.busybox, 'oci-archive', archive);
  const img = await cluster.client.importImageArchive('batch-busybox:1', createReadStream(archive), { size: statSync(archive).size });
  const ready = await cluster.client.waitForImage(img.id, { timeoutMs: 120_000, intervalMs: 100 });
  assert.equal(ready.state, 'ready', JSON.stringify(ready.error));

  const before = await jobIds(cluster.client);
  const missing = await refused(cluster.client, [{ command: ['/bin/true'] }, { image: 'batch-busybox:1', command: ['/bin/true'] }, { image: 'no-such-image:1', command: ['/bin/true'] }]);
  assert.equal(missing.code, 'image_not_found');
  assert.equal((missing.details as { index?: number }).index, 2);
  assert.deepEqual(await jobIds(cluster.client), before, 'no job was created');

  // The host root has perl; the busybox image has none.
  const probe = ['sh', '-c', 'test -e /usr/bin/perl && echo host || echo image'];
  const jobs: Job[] = await cluster.client.createJobs([{ command: probe }, { image: 'batch-busybox:1', command: probe }, { command: probe }, { image: 'batch-busybox:1', command: probe }]);
  const ended = await waitEnded(cluster.client, jobs.map((j) => j.id), 120_000);
  const outs: string[] = [];
  for (const j of jobs) {
    assert.equal(ended.get(j.id)!.status, 'succeeded', JSON.stringify(ended.get(j.id)));
    outs.push(Buffer.concat((await cluster.client.logs(j.id)).chunks.map((c) => c.data)).toString().trim());
  }
  assert.deepEqual(outs, ['host', 'image', 'host', 'image']);
  assert.equal(jobs[1]!.imageDigest, ready.digest);
});
