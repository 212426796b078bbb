// Sandboxes at the agent level, processes: a real agent, real cells (runc and runsc) and the in-cell supervisor,
// driven over the agent channel by a test control plane (test/support/sandbox-control.ts). Requires root.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { TestCluster } from '../support/cluster.js';
import { SandboxControl } from '../support/sandbox-control.js';
import { RUNTIMES, type Runtime } from '../../src/shared/wire.js';

let cluster: TestCluster;
let control: SandboxControl;
const sandboxes = new Map<Runtime, string>();

before(async () => {
  cluster = await TestCluster.start({ config: { agent: { pool: [{ runtime: 'runc', class: 'small', warm: 1 }, { runtime: 'runsc', class: 'small', warm: 1 }, { runtime: 'crun', class: 'small', warm: 1 }] } } });
  await cluster.waitWarm();
  control = await SandboxControl.takeOver(cluster);
  for (const runtime of RUNTIMES) sandboxes.set(runtime, (await control.createSandbox(runtime)).jobId);
});

after(async () => {
  await control?.close();
  await cluster?.stop();
});

for (const runtime of RUNTIMES) {
  const id = () => sandboxes.get(runtime)!;

  test(`${runtime}: exec echo, an exit code, a missing command, a bad cwd`, async () => {
    const r = await control.exec(id(), ['echo', 'hello']);
    assert.equal(r.stdout, 'hello\n');
    assert.equal(r.exitCode, 0);
    assert.equal(r.outputSeq, 6);
    const f = await control.exec(id(), ['sh', '-c', 'echo out; echo err >&2; exit 7']);
    assert.deepEqual([f.stdout, f.stderr, f.exitCode], ['out\n', 'err\n', 7]);
    await assert.rejects(control.exec(id(), ['no-such-command-here']), (e: Error & { code?: string }) => e.code === 'command_not_found');
    await assert.rejects(control.exec(id(), ['true'], { cwd: '/proc/1/root/x' }), (e: Error & { code?: string }) => e.code === 'invalid_cwd');
    // It runs as the workload user, in the cell's namespaces, with its env.
    const who = await control.exec(id(), ['sh', '-c', 'id -u; id -g; echo $HOME; echo $MINE; cat /proc/self/status | grep -E "^(CapEff|NoNewPrivs)"'], { env: { MINE: 'mine' } });
    // (gVisor's /proc/self/status has no NoNewPrivs line.)
    assert.match(who.stdout, runtime !== 'runsc' ? /^1000\n1000\n\/work\nmine\nCapEff:\s+0000000000000000\nNoNewPrivs:\s+1\n$/ : /^1000\n1000\n\/work\nmine\nCapEff:\s+0000000000000000\n$/);
  });

  test(`${runtime}: output streams in order with byte seqs`, async () => {
    const r = await control.exec(id(), ['sh', '-c', 'i=0; while [ $i -lt 2000 ]; do echo line-$i; i=$((i+1)); done']);
    const expected = Array.from({ length: 2000 }, (_, i) => `line-${i}\n`).join('');
    assert.equal(r.stdout, expected);
    assert.equal(r.outputSeq, expected.length);
    for (let i = 1; i < r.seqs.length; i++) assert.ok(r.seqs[i]! > r.seqs[i - 1]!, 'seqs increase');
    assert.equal(r.seqs[0], 0);
  });

  test(`${runtime}: stdin streams in and closes; stdin after close is refused`, async () => {
    const input = Array.from({ length: 5000 }, (_, i) => `in-${i}\n`).join('');
    const r = await control.exec(id(), ['sh', '-c', 'wc -c; echo done'], { stdin: input });
    assert.equal(r.stdout, `${input.length}\ndone\n`);
    // A process that waits on stdin; stdin after close gets stdin_closed.
    const procId = `p_${randomUUID()}`;
    control.send({ type: 'proc.start', jobId: id(), procId, argv: ['sh', '-c', 'cat >/dev/null; sleep 2'], env: {}, cwd: '/work', timeoutMs: null, pty: null, stdin: true });
    await control.waitFor((m) => m.type === 'proc.started' && m.procId === procId);
    control.send({ type: 'proc.stdin', jobId: id(), procId, data: null });
    control.send({ type: 'proc.stdin', jobId: id(), procId, data: Buffer.from('late').toString('base64') });
    const err = await control.waitFor((m) => m.type === 'proc.error' && m.procId === procId);
    assert.equal(err.type === 'proc.error' && err.code, 'stdin_closed');
  });

  test(`${runtime}: a background process keeps running; list; reattach from a seq; signal`, async () => {
    const procId = `p_${randomUUID()}`;
    control.send({ type: 'proc.start', jobId: id(), procId, argv: ['sh', '-c', 'trap "echo got-term; exit 0" TERM; i=0; while true; do echo tick-$i; i=$((i+1)); sleep 0.05; done'], env: {}, cwd: '/work', timeoutMs: null, pty: null, stdin: false });
    await control.waitFor((m) => m.type === 'proc.started' && m.procId === procId);
    await new Promise((r) => setTimeout(r, 600));
    const requestId = randomUUID();
    control.send({ type: 'proc.list', jobId: id(), requestId });
    const listed = await control.waitFor((m) => m.type === 'proc.listed' && m.requestId === requestId);
    const me = listed.type === 'proc.listed' ? listed.procs.find((p) => p.procId === procId) : undefined;
    assert.ok(me?.running, JSON.stringify(listed));
    assert.ok(me.nextSeq > 20, `output so far: ${me.nextSeq}`);
    // Attach from a seq inside the output ("tick-0\n" is 7 bytes): the stream starts exactly there.
    const streamId = `s_${randomUUID()}`;
    const from = control.received.length;
    control.send({ type: 'proc.attach', jobId: id(), procId, streamId, fromSeq: 7 });
    const first = await control.waitFor((m) => m.type === 'proc.output' && m.streamId === streamId, 10_000, from);
    assert.ok(first.type === 'proc.output');
    assert.equal(first.seq, 7);
    assert.ok(Buffer.from(first.data, 'base64').toString().startsWith('tick-1\n'));
    control.send({ type: 'proc.signal', jobId: id(), procId, signal: 15 });
    const exited = await control.waitFor((m) => m.type === 'proc.exited' && m.procId === procId);
    assert.ok(exited.type === 'proc.exited');
    assert.equal(exited.exitCode, 0);
    // Everything up to outputSeq can still be read, and ends with the trap's line.
    const all = `s_${randomUUID()}`;
    const f2 = control.received.length;
    control.send({ type: 'proc.attach', jobId: id(), procId, streamId: all, fromSeq: 0 });
    let text = '';
    const stop = control.onMessage((m) => {
      if (m.type !== 'proc.output' || m.streamId !== all) return;
      const data = Buffer.from(m.data, 'base64');
      text += data.toString();
      control.send({ type: 'proc.ack', jobId: id(), streamId: all, seq: m.seq + data.length });
    });
    await control.waitFor(() => Buffer.byteLength(text) >= exited.outputSeq, 10_000, f2);
    stop();
    assert.ok(text.startsWith('tick-0\ntick-1\n'));
    assert.ok(text.includes('got-term\n'), text.slice(-40)); // (sh may then report its sleep, killed with the group)
  });

  test(`${runtime}: a process past its timeout is killed and says so`, async () => {
    const t0 = Date.now();
    const r = await control.exec(id(), ['sleep', '30'], { timeoutMs: 500 });
    assert.equal(r.timedOut, true);
    assert.equal(r.signal, 9);
    assert.ok(Date.now() - t0 < 5000);
  });

  test(`${runtime}: a PTY: a shell prints its terminal size, and again after a resize`, async () => {
    const procId = `p_${randomUUID()}`;
    const streamId = `s_${randomUUID()}`;
    let out = '';
    const stop = control.onMessage((m) => {
      if (m.type === 'proc.output' && m.streamId === streamId) out += Buffer.from(m.data, 'base64').toString();
    });
    control.send({ type: 'proc.start', jobId: id(), procId, argv: ['sh', '-c', 'stty size; read x; stty size; tty; echo "got $x"'], env: {}, cwd: '/work', timeoutMs: 20_000, pty: { cols: 100, rows: 30 }, stdin: true, streamId });
    await control.waitFor(() => out.includes('30 100'));
    control.send({ type: 'proc.resize', jobId: id(), procId, cols: 132, rows: 43 });
    control.send({ type: 'proc.stdin', jobId: id(), procId, data: Buffer.from('hello\n').toString('base64') });
    const exited = await control.waitFor((m) => m.type === 'proc.exited' && m.procId === procId);
    await control.waitFor(() => out.includes('got hello'));
    stop();
    assert.ok(exited.type === 'proc.exited' && exited.exitCode === 0, JSON.stringify(exited));
    assert.match(out, /30 100\r\n[\s\S]*43 132\r\n\/dev\/pts\/\d+\r\ngot hello\r\n$/);
  });
}

for (const runtime of ['runc', 'runsc'] as const) {
  test(`${runtime}: a sandbox's deadline is reset by sandbox.timeout; its end wipes its cell; later requests are refused`, async () => {
    const { jobId } = await control.createSandbox(runtime, { timeoutSeconds: 600 });
    // A background process does not keep a sandbox past its deadline.
    const procId = `p_${randomUUID()}`;
    control.send({ type: 'proc.start', jobId, procId, argv: ['sleep', '600'], env: {}, cwd: '/work', timeoutMs: null, pty: null, stdin: false });
    await control.waitFor((m) => m.type === 'proc.started' && m.procId === procId);
    const t0 = Date.now();
    control.send({ type: 'sandbox.timeout', jobId, timeoutSeconds: 1 });
    const ended = await control.waitFor((m) => m.type === 'job.ended' && m.jobId === jobId, 20_000);
    assert.ok(ended.type === 'job.ended' && ended.end.reason === 'timeout', JSON.stringify(ended));
    assert.ok(Date.now() - t0 >= 900 && Date.now() - t0 < 15_000);
    const wiped = await control.waitFor((m) => m.type === 'job.wiped' && m.jobId === jobId, 30_000);
    assert.ok(wiped.type === 'job.wiped' && wiped.receipt.keyStateAfterRemoval === 'absent', JSON.stringify(wiped));
    const from = control.received.length;
    control.send({ type: 'proc.start', jobId, procId: `p_${randomUUID()}`, argv: ['true'], env: {}, cwd: '/work', timeoutMs: null, pty: null, stdin: false });
    control.send({ type: 'file.op', jobId, opId: 'op_after', op: 'stat', path: '/work' });
    const failed = await control.waitFor((m) => m.type === 'proc.start.failed' && m.jobId === jobId, 5000, from);
    assert.ok(failed.type === 'proc.start.failed' && failed.code === 'sandbox_not_running');
    const fr = await control.waitFor((m) => m.type === 'file.result' && m.opId === 'op_after', 5000, from);
    assert.ok(fr.type === 'file.result' && fr.code === 'sandbox_not_running');
    // Cancel ends another one the job way: cancelled, wiped.
    const other = await control.createSandbox(runtime);
    const { ended: e2, wiped: w2 } = await control.end(other.jobId);
    assert.equal(e2.end.reason, 'cancelled');
    assert.equal(w2.receipt.keyStateAfterRemoval, 'absent');
  });
}

test('runc: a dropped control channel kills no process; the stream resumes from its last ack after the reconnect', async () => {
  const jobId = sandboxes.get('runc')!;
  const procId = `p_${randomUUID()}`;
  const streamId = `s_${randomUUID()}`;
  let text = '';
  let acked = 0;
  const stop = control.onMessage((m) => {
    if (m.type !== 'proc.output' || m.streamId !== streamId) return;
    const data = Buffer.from(m.data, 'base64');
    // A chunk may come twice after the reconnect (resent from the last ack): keep only what is new.
    if (m.seq + data.length <= acked) return;
    text += data.subarray(Math.max(0, acked - m.seq)).toString();
    acked = m.seq + data.length;
    control.send({ type: 'proc.ack', jobId, streamId, seq: acked });
  });
  control.send({ type: 'proc.start', jobId, procId, argv: ['sh', '-c', 'i=0; while [ $i -lt 60 ]; do echo n-$i; i=$((i+1)); sleep 0.05; done'], env: {}, cwd: '/work', timeoutMs: null, pty: null, stdin: false, streamId });
  await control.waitFor(() => text.includes('n-5\n'));
  await control.reconnect();
  const exited = await control.waitFor((m) => m.type === 'proc.exited' && m.procId === procId, 30_000);
  await control.waitFor(() => exited.type === 'proc.exited' && acked >= exited.outputSeq, 10_000);
  stop();
  assert.ok(exited.type === 'proc.exited' && exited.exitCode === 0);
  assert.equal(text, Array.from({ length: 60 }, (_, i) => `n-${i}\n`).join(''), 'every line once, in order');
});
