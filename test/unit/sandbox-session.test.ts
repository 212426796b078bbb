// The agent's side of a sandbox, against a scripted supervisor: output rings and seqs, stream windows and the pause
// they drive, stdin and file-data windows, refusals with stable codes. (Real cells: test/integration/sandbox-*.)
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { SandboxSession, type SandboxRequest } from '../../src/agent/sandbox/sandbox-session.js';
import { OutputRing } from '../../src/agent/sandbox/output-ring.js';
import { FrameDecoder } from '../../src/agent/cells/frames.js';
import { FILE_WINDOW_BYTES, PROC_OUTPUT_RING_BYTES, PROC_STDIN_WINDOW_BYTES, PROC_STREAM_WINDOW_BYTES, type AgentToControl } from '../../src/shared/wire.js';
import { INIT_CHUNK_BYTES } from '../../src/agent/sandbox/init-codec.js';

const JOB = 'job_0123456789abcdef0123';
/** Req is a sandbox request without its jobId (the harness adds it). */
type Req = SandboxRequest extends infer T ? (T extends unknown ? Omit<T, 'jobId'> : never) : never;

/** harness makes a session whose requests to init are decoded as magic + payload, and whose messages are kept. */
function harness(congested = () => false) {
  const toInit: Array<{ magic: string; payload: Buffer }> = [];
  const out: AgentToControl[] = [];
  const s = new SandboxSession(JOB, () => ({ PATH: '/usr/bin' }), {
    toInit: (b) => toInit.push({ magic: b.subarray(0, 4).toString(), payload: b.subarray(8) }),
    toControl: (m) => out.push(m),
    congested,
  });
  const req = (m: Req) => s.handle({ ...m, jobId: JOB } as SandboxRequest);
  return { s, toInit, out, req };
}

function start(h: ReturnType<typeof harness>, procId = 'p1', extra: Partial<Extract<SandboxRequest, { type: 'proc.start' }>> = {}): number {
  h.req({ type: 'proc.start', procId, argv: ['cat'], env: {}, cwd: '/work', timeoutMs: null, pty: null, stdin: true, ...extra });
  const p = h.toInit.at(-1)!;
  assert.equal(p.magic, 'CRP1');
  const id = p.payload.readUInt32LE(0);
  h.s.onFrame({ type: 'proc.started', id, pid: 10 });
  return id;
}

test('OutputRing keeps the newest bytes by offset and reads from any retained seq', () => {
  const r = new OutputRing(10);
  r.append('stdout', Buffer.from('abcd'));
  r.append('stderr', Buffer.from('efgh'));
  assert.deepEqual(r.read(2, 100), { seq: 2, stream: 'stdout', data: Buffer.from('cd') });
  assert.deepEqual(r.read(5, 2), { seq: 5, stream: 'stderr', data: Buffer.from('fg') });
  r.append('stdout', Buffer.from('ijkl'));
  assert.deepEqual([r.start, r.end, r.retainedBytes], [4, 12, 8]);
  assert.deepEqual(r.read(0, 100)?.seq, 4, 'a dropped seq reads from the oldest retained');
  assert.equal(r.read(12, 1), null);
  for (let i = 0; i < 1000; i++) r.append('stdout', Buffer.from('x'));
  assert.ok(r.retainedBytes <= 10);
});

test('output streams with byte seqs within the stream window; acks move it; the base env is merged', () => {
  const h = harness();
  const id = start(h, 'p1', { streamId: 's1', env: { MINE: '1' } });
  assert.match(h.toInit[0]!.payload.toString(), /PATH=\/usr\/bin\0MINE=1\0/);
  const chunk = Buffer.alloc(64 * 1024, 1);
  for (let i = 0; i < 6; i++) h.s.onFrame({ type: 'proc.output', id, stream: 'stdout', data: chunk });
  const sent = () => h.out.filter((m) => m.type === 'proc.output').reduce((n, m) => n + Buffer.from((m as { data: string }).data, 'base64').length, 0);
  assert.equal(sent(), PROC_STREAM_WINDOW_BYTES);
  const seqs = h.out.filter((m) => m.type === 'proc.output').map((m) => (m as { seq: number }).seq);
  assert.deepEqual(seqs, [0, 65536, 131072, 196608]);
  h.req({ type: 'proc.ack', streamId: 's1', seq: 65536 });
  assert.equal(sent(), PROC_STREAM_WINDOW_BYTES + 65536);
  h.s.onFrame({ type: 'proc.exited', id, code: 0, signal: null });
  assert.deepEqual(h.out.at(-1), { type: 'proc.exited', jobId: JOB, procId: 'p1', exitCode: 0, signal: null, timedOut: false, outputSeq: 6 * 65536 });
  // After the exit, the rest still streams on acks.
  h.req({ type: 'proc.ack', streamId: 's1', seq: 6 * 65536 });
  assert.equal(sent(), 6 * 65536);
});

test('a lagging stream pauses init\'s reading of the process at half a ring, and resumes it once caught up', () => {
  const h = harness();
  const id = start(h, 'p1', { streamId: 's1' });
  const flows = () => h.toInit.filter((m) => m.magic === 'CRW1').map((m) => m.payload.readUInt32LE(4));
  const chunk = Buffer.alloc(64 * 1024);
  let total = 0;
  while (flows().length === 0) {
    h.s.onFrame({ type: 'proc.output', id, stream: 'stdout', data: chunk });
    total += chunk.length;
    assert.ok(total < PROC_OUTPUT_RING_BYTES, 'paused before the ring is full');
  }
  assert.deepEqual(flows(), [1]);
  assert.equal(total - PROC_STREAM_WINDOW_BYTES, PROC_OUTPUT_RING_BYTES / 2);
  for (let seq = 0; flows().length === 1 && seq <= total; seq += 64 * 1024) h.req({ type: 'proc.ack', streamId: 's1', seq });
  assert.deepEqual(flows(), [1, 0]);
  // A process nobody is attached to never pauses: its oldest output leaves the ring.
  const id2 = start(h, 'p2');
  for (let i = 0; i < 40; i++) h.s.onFrame({ type: 'proc.output', id: id2, stream: 'stderr', data: chunk });
  assert.deepEqual(flows(), [1, 0]);
  h.req({ type: 'proc.list', requestId: 'r1' });
  const listed = h.out.at(-1);
  assert.ok(listed?.type === 'proc.listed');
  const p2 = listed.procs.find((p) => p.procId === 'p2')!;
  assert.equal(p2.nextSeq, 40 * 65536);
  assert.ok(p2.nextSeq - p2.firstSeq <= PROC_OUTPUT_RING_BYTES);
});

test('stdin goes to init within its chunk window, the close after it; past the window, after close or exit: refused', () => {
  const h = harness();
  const id = start(h);
  const stdin = () => h.toInit.filter((m) => m.magic === 'CRI1').reduce((n, m) => n + m.payload.length - 4, 0);
  h.req({ type: 'proc.stdin', procId: 'p1', data: Buffer.alloc(100_000).toString('base64') });
  assert.equal(stdin(), INIT_CHUNK_BYTES, 'init gets at most one chunk window');
  h.req({ type: 'proc.stdin', procId: 'p1', data: null });
  assert.equal(h.toInit.filter((m) => m.magic === 'CRC1').length, 0, 'the close waits for the data');
  h.s.onFrame({ type: 'proc.stdin', id, taken: INIT_CHUNK_BYTES, closed: false });
  assert.deepEqual(h.out.at(-1), { type: 'proc.stdin.ack', jobId: JOB, procId: 'p1', seq: INIT_CHUNK_BYTES });
  assert.equal(stdin(), 100_000);
  assert.equal(h.toInit.filter((m) => m.magic === 'CRC1').length, 1);
  h.req({ type: 'proc.stdin', procId: 'p1', data: 'aGk=' });
  assert.deepEqual(h.out.at(-1), { type: 'proc.error', jobId: JOB, procId: 'p1', streamId: null, code: 'stdin_closed', message: 'the stdin of process p1 is closed' });
  const h2 = harness();
  start(h2);
  for (let i = 0; i < 2; i++) h2.req({ type: 'proc.stdin', procId: 'p1', data: Buffer.alloc(PROC_STDIN_WINDOW_BYTES / 2).toString('base64') });
  h2.req({ type: 'proc.stdin', procId: 'p1', data: 'aGk=' });
  assert.ok(h2.out.at(-1)?.type === 'proc.error' && (h2.out.at(-1) as { code: string }).code === 'window_exceeded');
  h2.req({ type: 'proc.signal', procId: 'nope', signal: 9 });
  assert.ok(h2.out.at(-1)?.type === 'proc.error' && (h2.out.at(-1) as { code: string }).code === 'not_found');
});

test('process starts are refused with stable codes: a taken id, a failed exec, too many at once', () => {
  const h = harness();
  start(h);
  h.req({ type: 'proc.start', procId: 'p1', argv: ['x'], env: {}, cwd: '/', timeoutMs: null, pty: null, stdin: false });
  assert.ok(h.out.at(-1)?.type === 'proc.start.failed' && (h.out.at(-1) as { code: string }).code === 'exists');
  h.req({ type: 'proc.start', procId: 'p2', argv: ['nope'], env: {}, cwd: '/', timeoutMs: null, pty: null, stdin: false });
  h.s.onFrame({ type: 'proc.failed', id: h.toInit.at(-1)!.payload.readUInt32LE(0), errno: 2, stage: 0 });
  assert.ok(h.out.at(-1)?.type === 'proc.start.failed' && (h.out.at(-1) as { code: string }).code === 'command_not_found');
  for (let i = 0; i < 70; i++) h.req({ type: 'proc.start', procId: `q${i}`, argv: ['x'], env: {}, cwd: '/', timeoutMs: null, pty: null, stdin: false });
  assert.ok(h.out.some((m) => m.type === 'proc.start.failed' && m.code === 'too_many_processes'));
});

test('a write is fed to init within its chunk window and acked as init takes it; a read is credited by the reader\'s acks', () => {
  const h = harness();
  h.req({ type: 'file.op', opId: 'w1', op: 'write', path: '/work/f' });
  const wid = h.toInit.at(-1)!.payload.readUInt32LE(0);
  h.req({ type: 'file.data', opId: 'w1', seq: 0, data: Buffer.alloc(200_000).toString('base64') });
  const data = () => h.toInit.filter((m) => m.magic === 'CRD1').reduce((n, m) => n + m.payload.length - 4, 0);
  assert.equal(data(), INIT_CHUNK_BYTES);
  h.s.onFrame({ type: 'file.taken', id: wid, bytes: INIT_CHUNK_BYTES });
  assert.deepEqual(h.out.at(-1), { type: 'file.ack', jobId: JOB, opId: 'w1', seq: INIT_CHUNK_BYTES });
  h.req({ type: 'file.data', opId: 'w1', seq: 200_000, data: Buffer.alloc(FILE_WINDOW_BYTES).toString('base64') });
  assert.deepEqual(h.out.at(-1), { type: 'file.result', jobId: JOB, opId: 'w1', ok: false, code: 'window_exceeded', message: `more than ${FILE_WINDOW_BYTES} bytes in flight; wait for file.ack` });
  h.s.onFrame({ type: 'file.result', id: wid, errno: 0 });
  assert.equal(h.out.filter((m) => m.type === 'file.result').length, 1, 'an aborted op is answered once');

  h.req({ type: 'file.op', opId: 'r1', op: 'read', path: '/work/f' });
  const rop = h.toInit.at(-1)!;
  assert.equal(rop.payload.readUInt32LE(16), FILE_WINDOW_BYTES, 'a read starts with a window of credit');
  const rid = rop.payload.readUInt32LE(0);
  h.s.onFrame({ type: 'file.data', id: rid, data: Buffer.from('hello') });
  h.req({ type: 'file.ack', opId: 'r1', seq: 5 });
  assert.deepEqual(h.toInit.at(-1)!.magic, 'CRG1');
  assert.equal(h.toInit.at(-1)!.payload.readUInt32LE(4), 5);
  h.s.onFrame({ type: 'file.result', id: rid, errno: 0 });
  assert.deepEqual(h.out.slice(-2), [
    { type: 'file.data', jobId: JOB, opId: 'r1', seq: 5, data: null },
    { type: 'file.result', jobId: JOB, opId: 'r1', ok: true, bytes: 5 },
  ]);
  h.req({ type: 'file.op', opId: 'x', op: 'stat', path: '/nope' });
  h.s.onFrame({ type: 'file.result', id: h.toInit.at(-1)!.payload.readUInt32LE(0), errno: 2 });
  assert.deepEqual(h.out.at(-1), { type: 'file.result', jobId: JOB, opId: 'x', ok: false, code: 'not_found', message: 'ENOENT' });
});

test('a congested channel holds streams back instead of queueing more', async () => {
  let congested = true;
  const h = harness(() => congested);
  const id = start(h, 'p1', { streamId: 's1' });
  h.s.onFrame({ type: 'proc.output', id, stream: 'stdout', data: Buffer.from('x') });
  assert.equal(h.out.filter((m) => m.type === 'proc.output').length, 0);
  congested = false;
  await new Promise((r) => setTimeout(r, 60));
  assert.equal(h.out.filter((m) => m.type === 'proc.output').length, 1);
  h.s.close();
  assert.equal(new FrameDecoder().pending, false);
});

test('a reconnect rewinds streams to their acks, cancels file operations, and drops streams nobody re-attaches', async (t) => {
  t.mock.timers.enable({ apis: ['setTimeout'] });
  const h = harness();
  const id = start(h, 'p1', { streamId: 's1' });
  const id2 = start(h, 'p2', { streamId: 's2' });
  h.s.onFrame({ type: 'proc.output', id, stream: 'stdout', data: Buffer.from('abcdef') });
  h.req({ type: 'proc.ack', streamId: 's1', seq: 2 });
  h.req({ type: 'file.op', opId: 'r1', op: 'read', path: '/work/f' });
  const rid = h.toInit.at(-1)!.payload.readUInt32LE(0);
  const before = h.out.length;
  h.s.onReconnect();
  const after = h.out.slice(before);
  assert.deepEqual(after[0], { type: 'file.result', jobId: JOB, opId: 'r1', ok: false, code: 'io_error', message: 'the channel to the control plane was re-established while the operation ran; run it again' });
  assert.ok(h.toInit.some((m) => m.magic === 'CRX1' && m.payload.readUInt32LE(0) === rid), 'the operation is cancelled in init');
  const resent = after.find((m) => m.type === 'proc.output');
  assert.ok(resent?.type === 'proc.output' && resent.seq === 2 && Buffer.from(resent.data, 'base64').toString() === 'cdef', 'resent from the ack');
  // s1 is acked again (alive); s2 is not: after the orphan delay it no longer holds p2 back.
  h.req({ type: 'proc.ack', streamId: 's1', seq: 6 });
  t.mock.timers.tick(30_000);
  const flowsBefore = h.toInit.filter((m) => m.magic === 'CRW1').length;
  for (let i = 0; i < 20; i++) h.s.onFrame({ type: 'proc.output', id: id2, stream: 'stdout', data: Buffer.alloc(65536) });
  assert.equal(h.toInit.filter((m) => m.magic === 'CRW1').length, flowsBefore, 'p2 is not paused by a dropped stream');
  h.s.onFrame({ type: 'proc.output', id, stream: 'stdout', data: Buffer.from('g') });
  assert.ok(h.out.at(-1)?.type === 'proc.output' && (h.out.at(-1) as { streamId: string }).streamId === 's1', 's1 still streams');
  h.s.close();
});
