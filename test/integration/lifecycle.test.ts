// Jobs end as timeout, oom, cancelled; fork bombs stay inside; cells are single-use and leave nothing behind.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { loadConfig } from '../../src/shared/config.js';
import { TestCluster } from '../support/cluster.js';
import { leftovers, waitFor } from '../support/host.js';

let cluster: TestCluster;
before(async () => {
  cluster = await TestCluster.start();
});
after(async () => {
  await cluster?.stop();
});

for (const runtime of RUNTIMES) {
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

// FORK_BOMB runs as the job's main process: it starts a fork bomb, then tries to fork itself until the kernel refuses
// (EAGAIN: the cell's pids limit is full), says so, and exits 0 once the test drops /work/go into its volume — so the test
// decides when the bomb ends, with no timing window. Every process of the bomb forks for ever and never exits (a failed
// fork only makes it pause), so the limit stays full: a bomb of short-lived shells can die out, or leave free slots.
const FORK_BOMB = String.raw`
import os, sys, time
if os.fork() == 0:
    null = os.open('/dev/null', os.O_RDWR)
    os.dup2(null, 1)
    os.dup2(null, 2)
    while True:
        try:
            os.fork()
        except OSError:
            time.sleep(0.05)
def refused():
    try:
        pid = os.fork()
    except BlockingIOError:
        return True
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)
    return False
deadline = time.monotonic() + 60
while not refused():
    if time.monotonic() > deadline:
        sys.exit('the bomb never filled the pids limit')
    time.sleep(0.05)
print('saturated', flush=True)
while not os.path.exists('/work/go'):
    time.sleep(0.1)
print('done', flush=True)
`;
import { RUNTIMES } from '../../src/shared/wire.js';

test('a fork bomb fills only its own pids limit: the host and other jobs run on, and the job ends as its main process says', async () => {
  const created = await cluster.client.createJob({ command: ['python3', '-c', FORK_BOMB], runtime: 'runc', cpu: 0.5, timeoutSeconds: 300 });
  let stdout = '';
  let saturated!: () => void;
  const isSaturated = new Promise<void>((r) => (saturated = r));
  const ended = cluster.client.followLogs(created.id, (c) => {
    stdout += c.data.toString('utf8');
    if (stdout.startsWith('saturated\n')) saturated();
  });
  const early = await Promise.race([isSaturated.then(() => null), ended]);
  assert.equal(early, null, `the job ended before its bomb filled the pids limit: ${JSON.stringify(early)} ${stdout}`);
  const cellId = (await cluster.client.getJob(created.id)).cellId!;
  assert.match(cellId, /^[0-9a-f]{10}$/);

  // The kernel holds the bomb at the pids limit of the job's size class and has refused its forks.
  const limit = loadConfig(join(cluster.dataDir, 'config.json')).agent.classes.find((c) => c.name === 'small')?.pids;
  assert.equal(limit, 256, 'the default small class allows 256 processes');
  const pids = join('/sys/fs/cgroup/pids', `cr-${cluster.agentId}-${cellId}`);
  assert.equal(readFileSync(join(pids, 'pids.max'), 'utf8').trim(), String(limit));
  // Its processes never exit: the limit stays full (but for the main process's own probe, which it re-takes at once).
  const current = Number(readFileSync(join(pids, 'pids.current'), 'utf8'));
  assert.ok(current <= limit, `${current} processes in a cell limited to ${limit}`);
  assert.ok(current >= limit - 8, `only ${current} of ${limit} processes: the bomb is not holding the limit`);
  const refusals = Number(/^max (\d+)$/m.exec(readFileSync(join(pids, 'pids.events'), 'utf8'))?.[1]);
  assert.ok(refusals > 0, `no fork was refused at the limit (pids.events: max ${refusals})`);
  // While it rages, the host starts processes and another job runs normally.
  assert.equal(execFileSync('echo', ['host ok']).toString(), 'host ok\n');
  const next = await cluster.runJob({ command: ['echo', 'next'], runtime: 'runc' });
  assert.deepEqual([next.job.status, next.stdout], ['succeeded', 'next\n']);

  // The main process exits 0 with the bomb still running: the job succeeded, and the bomb dies with its cell.
  const config = JSON.parse(readFileSync(join(cluster.dataDir, 'agent', 'cells', cellId, 'config.json'), 'utf8')) as { mounts: Array<{ destination: string; source: string }> };
  const work = config.mounts.find((m) => m.destination === '/work')?.source;
  assert.equal(typeof work, 'string', 'no host directory behind the cell\'s /work');
  writeFileSync(join(work!, 'go'), '');
  const job = await ended;
  assert.deepEqual([job.status, job.exitCode, stdout], ['succeeded', 0, 'saturated\ndone\n'], job.message ?? '');
  await waitFor(() => leftovers(cluster, [cellId]).length === 0, 30_000, () => `the bomb's cell left: ${leftovers(cluster, [cellId]).join(', ')}`);
});

test('two jobs get two distinct cells and leave nothing on the host', async () => {
  const [a, b] = await Promise.all([
    cluster.runJob({ command: ['sh', '-c', 'echo $$; cat /proc/self/uid_map'] }),
    cluster.runJob({ command: ['sh', '-c', 'echo $$; cat /proc/self/uid_map'] }),
  ]);
  for (const r of [a, b]) assert.match(r.job.cellId ?? '', /^[0-9a-f]{10}$/);
  assert.notEqual(a.job.cellId, b.job.cellId);
  assert.notEqual(a.stdout.split('\n')[1], b.stdout.split('\n')[1], 'two cells share a host uid range');
  const cells = [a.job.cellId!, b.job.cellId!];
  await waitFor(() => leftovers(cluster, cells).length === 0, 10_000, () => `left on the host: ${leftovers(cluster, cells).join(', ')}`);
});

test('bad input is refused and never leaves a cell or a job behind', async () => {
  const busy = (p: Awaited<ReturnType<typeof cluster.client.pool>>) => Object.values(p.agents).flatMap((a) => Object.values(a)).reduce((n, e) => n + e.busy, 0);
  await waitFor(async () => busy(await cluster.client.pool()) === 0, 30_000, () => 'cells of earlier tests still busy');
  const jobsBefore = (await cluster.client.listJobs()).map((j) => j.id);
  await assert.rejects(cluster.client.createJob({ command: [] }), { status: 400, code: 'invalid_request' });
  await assert.rejects(cluster.client.createJob({ command: ['true'], runtime: 'kata' }), { status: 422, code: 'unsupported_runtime' });
  await assert.rejects(cluster.client.createJob({ command: ['true'], memoryMiB: 1 << 20 }), { status: 422, code: 'limit_exceeded' });
  assert.equal(busy(await cluster.client.pool()), 0, 'a refused request took a cell');
  await cluster.waitWarm();
  assert.deepEqual((await cluster.client.listJobs()).map((j) => j.id), jobsBefore, 'a refused request created a job');
});
