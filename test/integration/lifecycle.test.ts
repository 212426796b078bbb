// Jobs end as timeout, oom, cancelled; fork bombs stay inside; cells are single-use and leave nothing behind.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { TestCluster } from '../support/cluster.js';
import { leftovers, waitFor } from '../support/host.js';

let cluster: TestCluster;
before(async () => {
  cluster = await TestCluster.start();
});
after(async () => {
  await cluster?.stop();
});

for (const runtime of ['runc', 'runsc'] as const) {
  test(`${runtime}: a sleep past its timeout ends as timeout`, async () => {
    const t0 = Date.now();
    const r = await cluster.runJob({ command: ['sleep', '30'], timeoutSeconds: 1, runtime });
    assert.equal(r.job.status, 'timeout');
    assert.ok(Date.now() - t0 < 10_000, 'timeout took too long to apply');
  });

  test(`${runtime}: a memory hog ends as oom`, async () => {
    const r = await cluster.runJob({ command: ['python3', '-c', 'x = bytearray(400 * 1024 * 1024); print("survived")'], memoryMiB: 64, runtime });
    assert.equal(r.job.status, 'oom', `ended ${r.job.status}: ${r.stdout} ${r.stderr}`);
    assert.doesNotMatch(r.stdout, /survived/);
  });

  test(`${runtime}: cancel ends a running job as cancelled`, async () => {
    const created = await cluster.client.createJob({ command: ['sh', '-c', 'echo started; sleep 60'], runtime });
    const ended = cluster.client.followLogs(created.id, () => {});
    await waitFor(async () => (await cluster.client.getJob(created.id)).status === 'running');
    await cluster.client.cancelJob(created.id);
    const job = await ended;
    assert.equal(job.status, 'cancelled');
    const again = await cluster.client.cancelJob(created.id).catch((e: { code: string; status: number }) => e);
    assert.equal((again as { code: string }).code, 'conflict');
    assert.equal((again as { status: number }).status, 409);
  });
}

test('a fork bomb is stopped by the pids limit and the host stays healthy', async () => {
  const r = await cluster.runJob({ command: ['sh', '-c', 'bomb() { bomb | bomb & }; bomb 2>/dev/null; sleep 2; echo alive'], timeoutSeconds: 30 });
  assert.ok(['succeeded', 'failed', 'timeout'].includes(r.job.status), r.job.status);
  // The host can still start processes and the next job runs normally.
  assert.equal(execFileSync('echo', ['host ok']).toString(), 'host ok\n');
  const next = await cluster.runJob({ command: ['echo', 'next'] });
  assert.equal(next.stdout, 'next\n');
});

test('two jobs get two distinct cells and leave nothing on the host', async () => {
  const [a, b] = await Promise.all([
    cluster.runJob({ command: ['sh', '-c', 'echo $$; cat /proc/self/uid_map'] }),
    cluster.runJob({ command: ['sh', '-c', 'echo $$; cat /proc/self/uid_map'] }),
  ]);
  assert.ok(a.job.cellId && b.job.cellId);
  assert.notEqual(a.job.cellId, b.job.cellId);
  assert.notEqual(a.stdout.split('\n')[1], b.stdout.split('\n')[1], 'two cells share a host uid range');
  await waitFor(async () => leftovers(cluster, [a.job.cellId!, b.job.cellId!]).length === 0, 10_000).catch(() => {});
  assert.deepEqual(leftovers(cluster, [a.job.cellId!, b.job.cellId!]), []);
});

test('bad input never leaves a cell behind', async () => {
  const before = await cluster.client.pool();
  await cluster.client.createJob({ command: [] }).catch(() => {});
  await cluster.client.createJob({ command: ['true'], runtime: 'kata' }).catch(() => {});
  await cluster.client.createJob({ command: ['true'], memoryMiB: 1 << 20 }).catch(() => {});
  await cluster.waitWarm();
  const afterPool = await cluster.client.pool();
  const busy = (p: typeof before) => Object.values(p.agents).flatMap((a) => Object.values(a)).reduce((n, e) => n + e.busy, 0);
  assert.equal(busy(afterPool), 0);
  assert.equal(busy(before), 0);
});
