// A job's output, exit code and terminal state reach the user through the API and the CLI, for both runtimes.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { TestCluster } from '../support/cluster.js';
import { RUNTIMES } from '../../src/shared/wire.js';

let cluster: TestCluster;
before(async () => {
  cluster = await TestCluster.start();
});
after(async () => {
  await cluster?.stop();
});

for (const runtime of RUNTIMES) {
  test(`${runtime}: stdout, stderr and a non-zero exit code reach the user`, async () => {
    const r = await cluster.runJob({ command: ['sh', '-c', 'echo to-out; echo to-err >&2; exit 7'], runtime });
    assert.equal(r.job.status, 'failed');
    assert.equal(r.job.exitCode, 7);
    assert.equal(r.stdout, 'to-out\n');
    assert.equal(r.stderr, 'to-err\n');
  });

  test(`${runtime}: argv is passed without a shell, env and cwd apply`, async () => {
    const r = await cluster.runJob({ command: ['/usr/bin/printf', '%s|', 'a b', '$HOME', ';rm -rf /'], env: { GREETING: 'hi there' }, cwd: '/tmp', runtime });
    assert.equal(r.job.status, 'succeeded', r.stderr);
    assert.equal(r.stdout, 'a b|$HOME|;rm -rf /|');
    const e = await cluster.runJob({ command: ['sh', '-c', 'echo "$GREETING"; pwd'], env: { GREETING: 'hi there' }, cwd: '/tmp', runtime });
    assert.equal(e.stdout, 'hi there\n/tmp\n');
  });
}

test('the CLI streams output and exits with the job exit code', async () => {
  const r = await cluster.cli(['run', '--', 'sh', '-c', 'echo cli-out; echo cli-err >&2; exit 5']);
  assert.equal(r.code, 5);
  assert.equal(r.stdout, 'cli-out\n');
  assert.match(r.stderr, /cli-err/);
  const ok = await cluster.cli(['run', '--runtime', 'runsc', '--', 'echo', 'from gvisor']);
  assert.equal(ok.code, 0, ok.stderr);
  assert.equal(ok.stdout, 'from gvisor\n');
});

test('a large output arrives complete and in order', async () => {
  const r = await cluster.runJob({ command: ['sh', '-c', 'seq 1 200000'] });
  assert.equal(r.job.status, 'succeeded');
  const lines = r.stdout.trimEnd().split('\n');
  assert.equal(lines.length, 200000);
  assert.equal(lines[199999], '200000');
  const seqs = r.chunks.map((c) => c.seq);
  assert.deepEqual(seqs, [...seqs].sort((a, b) => a - b));
  const stored = await cluster.client.logs(r.job.id);
  assert.equal(stored.complete, true);
  assert.equal(Buffer.concat(stored.chunks.map((c) => c.data)).toString().length, r.stdout.length);
});

test("a stream shows a job's output only once its start and that output are stored", async () => {
  // What a stream shows must hold on any replica a client resumes on: the output is in the store, and so is the start
  // the agent reported before it (a job's writes may go out together; their publication keeps the order).
  for (let i = 0; i < 5; i++) {
    let id = '';
    let first: Promise<{ seq: number; status: string; stored: number }> | null = null;
    const job = await cluster.client.runJob(
      { command: ['sh', '-c', 'echo one; sleep 0.05; echo two'] },
      (c) => {
        first ??= Promise.all([cluster.client.getJob(id), cluster.client.logs(id)]).then(([j, l]) => ({ seq: c.seq, status: j.status, stored: l.chunks.filter((x) => x.seq <= c.seq).length }));
      },
      (created) => (id = created.id),
    );
    assert.equal(job.status, 'succeeded');
    const seen = await first!;
    assert.ok(!['queued', 'assigned'].includes(seen.status), `the first output was shown while the store said ${seen.status}`);
    assert.equal(seen.stored, seen.seq, 'a chunk was shown before it (and those before it) were stored');
  }
});

test('jobs ls, get, logs and --json read back what ran', async () => {
  const r = await cluster.runJob({ command: ['echo', 'readback'] });
  const ls = await cluster.cli(['jobs', 'ls', '--json']);
  assert.equal(ls.code, 0);
  assert.ok((JSON.parse(ls.stdout) as Array<{ id: string }>).some((j) => j.id === r.job.id));
  const get = await cluster.cli(['jobs', 'get', r.job.id, '--json']);
  assert.equal((JSON.parse(get.stdout) as { status: string }).status, 'succeeded');
  const logs = await cluster.cli(['jobs', 'logs', r.job.id]);
  assert.equal(logs.stdout, 'readback\n');
  const human = await cluster.cli(['jobs', 'get', r.job.id]);
  assert.match(human.stdout, /status\s+succeeded/);
});

test('a missing program fails with 127 and says why', async () => {
  const r = await cluster.runJob({ command: ['no-such-program-xyz'] });
  assert.equal(r.job.status, 'failed');
  assert.equal(r.job.exitCode, 127);
  assert.match(r.stderr, /no-such-program-xyz.*not found/);
});

test('a missing working directory under /work is created, like a Dockerfile WORKDIR', async () => {
  const r = await cluster.runJob({ command: ['pwd'], cwd: '/work/a/b' });
  assert.equal(r.job.status, 'succeeded', r.stderr);
  assert.equal(r.stdout, '/work/a/b\n');
});
