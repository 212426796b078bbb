// A hostile tenant against the plane: a job sized to overflow what a cell accepts is refused up front and never stalls
// the agent for others; a workload cannot open its cell init's memory, read its environ or fds, trace or signal it.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { TestCluster } from '../support/cluster.js';
import { CleanroomClient } from '../../src/sdk/client.js';
import { RUNTIMES } from '../../src/shared/wire.js';

let cluster: TestCluster;
before(async () => {
  cluster = await TestCluster.start();
});
after(async () => {
  await cluster?.stop();
});

test('a job whose command encodes past what a cell accepts is 413 payload_too_large, and other workspaces keep running jobs', async () => {
  // Just under the 1 MiB body limit: 16 strings of 64 KiB encode to more than a cell accepts in one assignment.
  const command = ['true', ...Array.from({ length: 15 }, () => 'A'.repeat(65536)), 'A'.repeat(65460)];
  const refused = await cluster.client.createJob({ command }).then(
    () => assert.fail('an oversized assignment was accepted'),
    (e: { status: number; code: string; message: string }) => e,
  );
  assert.equal(refused.status, 413);
  assert.equal(refused.code, 'payload_too_large');
  assert.match(refused.message, /bytes in the cell; at most \d+/);
  // The same through env, just as large.
  const env = Object.fromEntries(Array.from({ length: 16 }, (_, i) => [`V${i}`, 'B'.repeat(65300)]));
  const refusedEnv = await cluster.client.createJob({ command: ['true'], env }).then(
    () => assert.fail('an oversized env was accepted'),
    (e: { status: number; code: string }) => e,
  );
  assert.deepEqual([refusedEnv.status, refusedEnv.code], [413, 'payload_too_large']);

  // The largest accepted assignment runs (the agent streams it into the cell without blocking), and so do others' jobs.
  const big = await cluster.runJob({ command: ['sh', '-c', 'echo ${#X}'], env: { X: 'C'.repeat(60000), Y: 'D'.repeat(60000) } });
  assert.equal(big.job.status, 'succeeded', big.stderr);
  assert.equal(big.stdout, '60000\n');
  const ws = await cluster.client.createWorkspace({ name: `neighbour-${Date.now()}` });
  const key = await cluster.client.createApiKey({ workspace: ws.name, name: 'k' });
  const other = new CleanroomClient({ url: cluster.url, apiKey: key.key, ca: cluster.ca });
  try {
    const r = await cluster.runJob({ command: ['echo', 'still served'] }, other);
    assert.equal(r.stdout, 'still served\n');
  } finally {
    other.close();
  }
});

for (const runtime of RUNTIMES) {
  test(`${runtime}: the workload cannot open cell init's memory, read its environ or fds, trace or signal it`, async () => {
    const script = [
      // In a subshell: a failed redirection of `exec` ends a POSIX shell.
      'for m in "<" "<>"; do if eval "(exec 3${m}/proc/1/mem)" 2>/dev/null; then echo "OPEN mem $m"; else echo "denied mem $m"; fi; done',
      'if (exec 3<>/proc/1/environ) 2>/dev/null; then echo "OPEN environ rw"; else echo "denied environ rw"; fi',
      'if ls /proc/1/fd >/dev/null 2>&1; then echo "OPEN fd"; else echo "denied fd"; fi',
      'echo "environ: $(tr "\\0" " " < /proc/1/environ 2>/dev/null || echo denied)"',
      'grep -E "^(Uid|CapEff|CapPrm):" /proc/1/status | tr -s "\t" " "',
      // Signals init could receive from inside: it must survive them all and still report this job's exit.
      'for s in TERM INT HUP USR1 USR2 QUIT ALRM STOP KILL; do kill -s $s 1 2>/dev/null && echo "delivered $s"; done; kill -s CONT 1 2>/dev/null',
      'sleep 0.2; echo survived',
    ].join('\n');
    const r = await cluster.runJob({ command: ['sh', '-c', script], runtime, env: { SECRET_ENV: 'job-secret-value' } });
    assert.equal(r.job.status, 'succeeded', `${r.job.status} ${r.job.message ?? ''} ${r.stderr}`);
    const lines = r.stdout.trim().split('\n');
    assert.deepEqual(lines.slice(0, 4), ['denied mem <', 'denied mem <>', 'denied environ rw', 'denied fd']);
    // runc refuses reading init's environ; gVisor's procfs allows it, so it must hold nothing of the job.
    const environ = lines[4] ?? '';
    if (runtime !== 'runsc') assert.equal(environ, 'environ: denied');
    else assert.doesNotMatch(environ, /SECRET|job-secret|CLEANROOM|TOKEN/, environ);
    // Init keeps real and saved uid 0 (so the workload, uid 1000, cannot signal or trace it) and no capability.
    assert.deepEqual(lines.slice(5, 8), ['Uid: 0 1000 0 1000', 'CapPrm: 0000000000000000', 'CapEff: 0000000000000000']);
    assert.deepEqual(lines.slice(8), ['survived'], `signals reached init: ${lines.slice(8).join(', ')}`);
    // ptrace is refused too (seccomp and non-dumpable): python's ctypes PTRACE_ATTACH to pid 1.
    const pt = await cluster.runJob({
      command: ['/usr/bin/python3', '-c', 'import ctypes; l = ctypes.CDLL(None, use_errno=True); r = l.ptrace(16, 1, 0, 0); print(r, ctypes.get_errno())'],
      runtime,
    });
    const [ret, errno] = pt.stdout.trim().split(' ').map(Number);
    assert.equal(ret, -1, `PTRACE_ATTACH to init succeeded: ${pt.stdout}`);
    assert.ok(errno === 1 || errno === 38, `PTRACE_ATTACH failed with EPERM or ENOSYS, got errno ${errno}`);
  });
}
