// The agent ↔ control plane contract: a valid message of every type is accepted; missing, extra, wrongly typed and
// oversized fields are refused, without throwing and without echoing the offending value.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import {
  AgentToControlSchema,
  closeReason,
  ControlToAgentSchema,
  helloProtocol,
  MAX_ASSIGNMENT_BYTES,
  MAX_CELL_FILE_BYTES,
  MAX_CLOSE_REASON_BYTES,
  MAX_DENIED_PER_MESSAGE,
  MAX_END_MESSAGE_CHARS,
  MAX_JOB_IDS,
  MAX_LOAD_POOLS,
  MAX_LIST_ENTRIES,
  MAX_SANDBOX_CHUNK_BYTES,
  MAX_OUTPUT_CHUNK_BYTES,
  MAX_POOL_ERROR_CHARS,
  parseAgentMessage,
  parseControlMessage,
  PROTOCOL_VERSION,
  MIN_PROTOCOL_VERSION,
  unpackJobReport,
  type JobReport,
  MAX_REPORT_OUTPUTS,
  MAX_REPORT_OUTPUT_CHARS,
} from '../../src/shared/wire.js';
import { MAX_FRAME_BYTES } from '../../src/agent/cells/frames.js';

type Json = null | boolean | number | string | Json[] | { [k: string]: Json };
type Msg = { [k: string]: Json };

const T = '2030-01-01T00:00:00.000Z';
const JOB = 'job_0123456789abcdef0123';
const MiB = 1024 * 1024;
const receipt: Msg = {
  volumeId: 'v-0123456789abcdef',
  cellId: '0123456789',
  keyIdentifier: '0123456789abcdef0123456789abcdef',
  keyStateAfterRemoval: 'absent',
  loopDevices: ['/dev/loop3'],
  startedAt: T,
  finishedAt: T,
  totalMs: 12.5,
  steps: [{ step: 'remove-key', at: T, ms: 3.25, detail: 'absent' }, { step: 'tombstone', at: T, ms: 0.1 }],
};
const spec: Msg = {
  jobId: JOB,
  workspaceId: 'ws_0123456789abcdef',
  command: ['sh', '-c', 'echo hi'],
  env: { A: '1', _B: 'two' },
  cwd: '/work',
  cpu: 0.5,
  memoryBytes: 512 * MiB,
  timeoutSeconds: 30,
  diskBytes: 256 * MiB,
  runtime: 'runc',
  egress: { allow: [{ cidr: '203.0.113.0/24', protocol: 'tcp', ports: { from: 443, to: 443 } }, { cidr: '198.51.100.7/32', protocol: 'any' }], dryRun: false },
  outputLimitBytes: 64 * MiB,
  image: { digest: `sha256:${'a'.repeat(64)}`, uid: 1000, gid: 1000 },
  mode: 'job',
};
const manifest: Msg = {
  digest: `sha256:${'b'.repeat(64)}`,
  layers: [{ digest: `sha256:${'c'.repeat(64)}`, diffId: `sha256:${'d'.repeat(64)}`, mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', size: 1234 }],
  config: { env: ['PATH=/usr/bin:/bin'], workingDir: '/app', entrypoint: ['/bin/sh'], cmd: ['-c', 'echo hi'], user: '1000:1000' },
  architecture: 'amd64',
  os: 'linux',
};
const PROC = 'p_0123456789';
const STREAM = 's_0123456789';
const OP = 'op_0123456789';
const stat = { name: 'a.txt', type: 'file', size: 12, mode: 0o644, mtimeMs: 1_764_892_800_000 };
const credentials = { token: 'eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl', expiresAt: T };

/** One valid message of every type an agent sends. */
const AGENT: Record<string, Msg> = {
  hello: { type: 'hello', protocol: PROTOCOL_VERSION, agentId: 'a1b2c3', liveJobIds: [JOB], endedJobIds: ['job_ffffffffffffffffffff'], capacity: 64, images: [`sha256:${'b'.repeat(64)}`], load: { running: 1, capacity: 64, preparing: 2, warm: [{ image: null, runtime: 'runc', sizeClass: 'small', cells: 3 }, { image: `sha256:${'b'.repeat(64)}`, runtime: 'runsc', sizeClass: 'large', cells: 1 }], offers: { runtimes: ['runc', 'crun'], classes: [{ name: 'small', cpu: 1, memoryBytes: 512 * 1024 * 1024, diskBytes: 256 * 1024 * 1024 }] } } },
  'agent.load': { type: 'agent.load', load: { running: 0, capacity: 8, preparing: 0, warm: [] } },
  'job.started': { type: 'job.started', jobId: JOB, cellId: '0123456789', timings: { take_ms: 1.5, assign_ms: 20.25, cold: 0 } },
  'job.output': { type: 'job.output', jobId: JOB, stream: 'stdout', data: Buffer.from('hello\n').toString('base64') },
  'job.ended': { type: 'job.ended', jobId: JOB, end: { reason: 'failed', exitCode: 3, signal: null, message: 'exit 3' }, timings: { wipe_ms: 2 }, outputDroppedBytes: 0 },
  'job.wiped': { type: 'job.wiped', jobId: JOB, receipt, timings: { wipe_ms: 3 }, spooled: true },
  'job.report': {
    type: 'job.report',
    jobId: JOB,
    started: { cellId: '0123456789', timings: { take_ms: 1.5 } },
    output: [{ stream: 'stdout', data: Buffer.from('hello\n').toString('base64') }, { stream: 'stderr', data: Buffer.from('oops\n').toString('base64') }],
    ended: { end: { reason: 'failed', exitCode: 3, signal: null, message: 'exit 3' }, timings: { exec_ms: 2 }, outputDroppedBytes: 0 },
    wiped: { receipt, timings: { wipe_ms: 3 } },
    load: { running: 0, capacity: 8, preparing: 0, warm: [{ image: null, runtime: 'runc', sizeClass: 'small', cells: 8 }] },
  },
  'network.denied': { type: 'network.denied', records: [{ jobId: JOB, cellId: '0123456789', action: 'denied', destination: '203.0.113.9', protocol: 'tcp', port: 443, time: T }] },
  'pool.status': {
    type: 'pool.status',
    requestId: randomUUID(),
    pool: { 'runc/small': { target: 2, warm: 2, preparing: 0, busy: 1, lastError: 'no loop device' } },
    volumes: { warm: 2, inUse: 1, wiping: 0, wiped: 5, wipeFailed: 0 },
  },
  'image.prepared': { type: 'image.prepared', digest: `sha256:${'b'.repeat(64)}`, unpackedBytes: 4096, error: { code: 'image_layer_invalid', message: 'a/../b escapes the layer' } },
  'image.removed': { type: 'image.removed', digest: `sha256:${'b'.repeat(64)}` },
  'proc.started': { type: 'proc.started', jobId: JOB, procId: PROC, pid: 7 },
  'proc.start.failed': { type: 'proc.start.failed', jobId: JOB, procId: PROC, code: 'command_not_found', message: 'no such command: nope' },
  'proc.output': { type: 'proc.output', jobId: JOB, procId: PROC, streamId: STREAM, seq: 6, stream: 'stderr', data: Buffer.from('hello\n').toString('base64') },
  'proc.exited': { type: 'proc.exited', jobId: JOB, procId: PROC, exitCode: null, signal: 9, timedOut: true, outputSeq: 12 },
  'proc.stdin.ack': { type: 'proc.stdin.ack', jobId: JOB, procId: PROC, seq: 100 },
  'proc.error': { type: 'proc.error', jobId: JOB, procId: PROC, streamId: STREAM, code: 'stdin_closed', message: 'stdin is closed' },
  'proc.listed': {
    type: 'proc.listed',
    jobId: JOB,
    requestId: randomUUID(),
    procs: [{ procId: PROC, pid: 7, argv: ['sleep', '10'], pty: false, running: true, exitCode: null, signal: null, timedOut: false, startedAt: T, firstSeq: 0, nextSeq: 0 }],
  },
  'file.data': { type: 'file.data', jobId: JOB, opId: OP, seq: 0, data: Buffer.from('file').toString('base64') },
  'file.ack': { type: 'file.ack', jobId: JOB, opId: OP, seq: 4 },
  'file.result': { type: 'file.result', jobId: JOB, opId: OP, ok: false, entries: [stat], truncated: false, stat, bytes: 4, code: 'no_space', message: 'No space left on device' },
};

/** One valid message of every type the control plane sends. */
const CONTROL: Record<string, Msg> = {
  welcome: { type: 'welcome', protocol: PROTOCOL_VERSION },
  assign: { type: 'assign', job: spec, credentials },
  'token.refresh': { type: 'token.refresh', jobId: JOB, credentials },
  cancel: { type: 'cancel', jobId: JOB },
  'pool.get': { type: 'pool.get', requestId: randomUUID() },
  'receipts.stored': { type: 'receipts.stored', volumeIds: ['v-0123456789abcdef'] },
  'sandbox.timeout': { type: 'sandbox.timeout', jobId: JOB, timeoutSeconds: 600 },
  'proc.start': { type: 'proc.start', jobId: JOB, procId: PROC, argv: ['sh', '-c', 'echo hi'], env: { A: '1' }, cwd: '/work', timeoutMs: 5000, pty: { cols: 80, rows: 24 }, stdin: true, streamId: STREAM },
  'proc.stdin': { type: 'proc.stdin', jobId: JOB, procId: PROC, data: Buffer.from('input').toString('base64') },
  'proc.signal': { type: 'proc.signal', jobId: JOB, procId: PROC, signal: 15 },
  'proc.resize': { type: 'proc.resize', jobId: JOB, procId: PROC, cols: 120, rows: 40 },
  'proc.attach': { type: 'proc.attach', jobId: JOB, procId: PROC, streamId: STREAM, fromSeq: 0 },
  'proc.detach': { type: 'proc.detach', jobId: JOB, streamId: STREAM },
  'proc.ack': { type: 'proc.ack', jobId: JOB, streamId: STREAM, seq: 65536 },
  'proc.list': { type: 'proc.list', jobId: JOB, requestId: randomUUID() },
  'file.op': { type: 'file.op', jobId: JOB, opId: OP, op: 'write', path: '/work/a.txt', recursive: false, mode: 0o600 },
  'file.data': { type: 'file.data', jobId: JOB, opId: OP, seq: 0, data: null },
  'file.ack': { type: 'file.ack', jobId: JOB, opId: OP, seq: 4 },
  'image.prepare': { type: 'image.prepare', image: manifest, maxUnpackedBytes: 4096 * MiB },
  'image.remove': { type: 'image.remove', digest: `sha256:${'b'.repeat(64)}` },
};

// Paths ('*' for any array index or record key) where a field may be left out, may be null, or is a map of free keys.
const OPTIONAL = new Set(['outputDroppedBytes', 'ended.outputDroppedBytes', 'timings@job.wiped', 'started@job.report', 'output@job.report', 'ended@job.report', 'wiped@job.report', 'load@job.report', 'wiped.timings', 'wiped.receipt.steps.*.detail', 'spooled', 'receipt.steps.*.detail', 'job.egress.allow.*.ports', 'job.mode', 'load.offers', 'streamId@proc.start', 'recursive', 'mode@file.op', 'entries', 'truncated', 'stat', 'bytes', 'code@file.result', 'message@file.result', 'job.image']);
const NULLABLE = new Set(['ended.end.exitCode', 'ended.end.signal', 'ended.end.message', 'wiped.receipt.cellId', 'wiped.receipt.keyIdentifier', 'wiped.receipt.keyStateAfterRemoval', 'timeoutMs', 'pty', 'streamId@proc.start', 'data@proc.stdin', 'data@file.data', 'signal@proc.exited', 'exitCode@proc.exited', 'procId@proc.error', 'streamId@proc.error', 'procs.*.pid', 'procs.*.exitCode', 'procs.*.signal', 'end.exitCode', 'end.signal', 'end.message', 'jobId@job.wiped', 'receipt.cellId', 'receipt.keyIdentifier', 'receipt.keyStateAfterRemoval', 'records.*.jobId', 'records.*.port', 'requestId@pool.status', 'pool.*.lastError', 'job.image', 'job.image.uid', 'job.image.gid', 'error@image.prepared', 'image.config.entrypoint', 'image.config.cmd', 'load.warm.*.image']);
const MAPS = new Set(['timings', 'started.timings', 'ended.timings', 'wiped.timings', 'job.env', 'pool', 'env@proc.start']);

const agentOk = (m: unknown) => parseAgentMessage(JSON.stringify(m)).ok;
const controlOk = (m: unknown) => parseControlMessage(JSON.stringify(m)).ok;
const clone = <T>(v: T): T => structuredClone(v);
const kind = (v: unknown) => (v === null ? 'null' : Array.isArray(v) ? 'array' : typeof v);

/** matches says whether a path (in a message of the type) is in the set, '*' standing for any one step. */
function matches(set: Set<string>, path: string[], type: string): boolean {
  const generic = path.map((p) => (/^\d+$/.test(p) ? '*' : p)).join('.');
  return set.has(generic) || set.has(`${generic}@${type}`) || [...set].some((s) => s.includes('*') && new RegExp(`^${s.replace(/\./g, '\\.').replace(/\*/g, '[^.]+')}$`).test(generic));
}

/** mutations yields every single-field change that must be refused: a field left out, an extra field, a value of another type. */
function* mutations(msg: Msg): Generator<[string, Msg]> {
  const type = String(msg.type);
  const nodes: Array<[string[], Json]> = [];
  const walk = (path: string[], v: Json) => {
    nodes.push([path, v]);
    if (v !== null && typeof v === 'object') for (const [k, c] of Object.entries(v)) walk([...path, k], c as Json);
  };
  walk([], msg);
  for (const [path, node] of nodes) {
    if (node === null || typeof node !== 'object') continue;
    const isMap = matches(MAPS, path, type);
    if (!Array.isArray(node) && !isMap) {
      const extra = clone(msg);
      (at(extra, path) as Msg).unexpected = 1;
      yield [`extra field at ${path.join('.') || '(top)'}`, extra];
      for (const k of Object.keys(node)) {
        if (path.length === 0 && k === 'type') continue;
        if (matches(OPTIONAL, [...path, k], type)) continue;
        const m = clone(msg);
        delete (at(m, path) as Msg)[k];
        yield [`missing ${[...path, k].join('.')}`, m];
      }
    }
    for (const [k, v] of Object.entries(node)) {
      if (path.length === 0 && k === 'type') continue;
      for (const other of [12345, 'x', true, null, [], {}] as Json[]) {
        if (kind(other) === kind(v)) continue;
        if (other === null && matches(NULLABLE, [...path, k], type)) continue;
        const m = clone(msg);
        (at(m, path) as Record<string, Json>)[k] = other;
        yield [`${[...path, k].join('.')} as ${kind(other)}`, m];
      }
    }
  }
}

function at(root: Json, path: string[]): Json {
  return path.reduce<Json>((n, k) => (n as Record<string, Json>)[k] as Json, root);
}

test('a valid message of every type is accepted, at both ends', () => {
  const agentTypes = AgentToControlSchema.options.map((o) => o.shape.type.value).sort();
  const controlTypes = ControlToAgentSchema.options.map((o) => o.shape.type.value).sort();
  assert.deepEqual(Object.keys(AGENT).sort(), agentTypes, 'every agent message type has a sample');
  assert.deepEqual(Object.keys(CONTROL).sort(), controlTypes, 'every control message type has a sample');
  for (const [type, m] of Object.entries(AGENT)) assert.deepEqual(parseAgentMessage(JSON.stringify(m)), { ok: true, msg: m }, type);
  for (const [type, m] of Object.entries(CONTROL)) assert.deepEqual(parseControlMessage(JSON.stringify(m)), { ok: true, msg: m }, type);
  // Optional fields may be left out.
  const { outputDroppedBytes: _d, ...ended } = AGENT['job.ended']!;
  assert.ok(agentOk(ended));
  const { timings: _t, spooled: _s, ...wiped } = AGENT['job.wiped']!;
  assert.ok(agentOk({ ...wiped, jobId: null }));
  // An agent of the previous protocol is still served; a welcome names the version both speak.
  assert.ok(agentOk({ ...AGENT.hello, protocol: MIN_PROTOCOL_VERSION }));
  assert.ok(controlOk({ type: 'welcome', protocol: MIN_PROTOCOL_VERSION }));
  // A job.report may hold any one of its parts alone.
  const { started, output, ended: end, wiped: wipe, load: _l, ...head } = AGENT['job.report'] as Record<string, unknown>;
  for (const part of [{ started }, { output }, { ended: end }, { wiped: wipe }]) assert.ok(agentOk({ ...head, ...part }), Object.keys(part)[0]);
  // What a report means: the single messages it stands for, in order, each valid on its own.
  const singles = unpackJobReport(AGENT['job.report'] as unknown as JobReport);
  assert.deepEqual(singles.map((m) => m.type), ['job.started', 'job.output', 'job.output', 'job.ended', 'job.wiped', 'agent.load']);
  for (const m of singles) assert.ok(agentOk(m), m.type);
  // Messages of one direction are not accepted in the other (file.data and file.ack go both ways).
  const both = new Set(['file.data', 'file.ack']);
  for (const [type, m] of Object.entries(AGENT)) if (!both.has(type)) assert.equal(controlOk(m), false, type);
  for (const [type, m] of Object.entries(CONTROL)) if (!both.has(type)) assert.equal(agentOk(m), false, type);
});

test('every missing, extra or wrongly typed field is refused', () => {
  let n = 0;
  for (const [samples, ok] of [[AGENT, agentOk], [CONTROL, controlOk]] as const) {
    for (const m of Object.values(samples)) {
      for (const [what, bad] of mutations(m)) {
        assert.equal(ok(bad), false, `${String(m.type)}: ${what} was accepted`);
        n++;
      }
    }
  }
  assert.ok(n > 300, `only ${n} mutations`);
});

test('oversized and out-of-range values are refused', () => {
  const a = (type: string, patch: (m: Msg & Record<string, any>) => void) => {
    const m = clone(AGENT[type]!) as Msg & Record<string, any>;
    patch(m);
    return agentOk(m);
  };
  const c = (type: string, patch: (m: Msg & Record<string, any>) => void) => {
    const m = clone(CONTROL[type]!) as Msg & Record<string, any>;
    patch(m);
    return controlOk(m);
  };
  const refused: Array<[string, boolean]> = [
    ['id of 65 characters', a('job.started', (m) => (m.jobId = `job_${'a'.repeat(61)}`))],
    ['id with a space', a('job.started', (m) => (m.jobId = 'job 1'))],
    ['empty id', a('job.started', (m) => (m.jobId = ''))],
    ['agent id that is not 6 hex digits', a('hello', (m) => (m.agentId = 'real-agent'))],
    ['another protocol version', a('hello', (m) => (m.protocol = PROTOCOL_VERSION + 1))],
    ['a hello without a protocol version', a('hello', (m) => delete m.protocol)],
    ['a hello without a load (protocol 3)', a('hello', (m) => delete m.load)],
    [`a hello of protocol ${MIN_PROTOCOL_VERSION - 1}`, a('hello', (m) => (m.protocol = MIN_PROTOCOL_VERSION - 1))],
    ['a job.report with nothing in it', a('job.report', (m) => (delete m.started, delete m.output, delete m.ended, delete m.wiped))],
    ['a job.report with only a load', a('job.report', (m) => (delete m.started, delete m.output, delete m.ended, delete m.wiped, (m.load = m.load)))],
    ['a job.report with an empty output list', a('job.report', (m) => (m.output = []))],
    [`a job.report of ${MAX_REPORT_OUTPUTS + 1} outputs`, a('job.report', (m) => (m.output = Array.from({ length: MAX_REPORT_OUTPUTS + 1 }, () => m.output[0])))],
    [`a job.report of more than ${MAX_REPORT_OUTPUT_CHARS} output characters`, a('job.report', (m) => (m.output = Array.from({ length: 5 }, () => ({ stream: 'stdout', data: Buffer.alloc(MAX_REPORT_OUTPUT_CHARS / 5).toString('base64') }))))],
    ['a job.report with output that is not base64', a('job.report', (m) => (m.output[0].data = 'aGVsbG8*'))],
    ['a job.report with an end of an unknown reason', a('job.report', (m) => (m.ended.end.reason = 'exploded'))],
    ['a load with a negative warm count', a('agent.load', (m) => (m.load.warm = [{ image: null, runtime: 'runc', sizeClass: 'small', cells: -1 }]))],
    ['a load with a fractional running count', a('agent.load', (m) => (m.load.running = 0.5))],
    ['a load with capacity 0', a('agent.load', (m) => (m.load.capacity = 0))],
    ['a load on an image that is no digest', a('agent.load', (m) => (m.load.warm = [{ image: 'alpine', runtime: 'runc', sizeClass: 'small', cells: 1 }]))],
    ['a load on an unknown runtime', a('agent.load', (m) => (m.load.warm = [{ image: null, runtime: 'docker', sizeClass: 'small', cells: 1 }]))],
    ['offers of an unknown runtime', a('agent.load', (m) => (m.load.offers = { runtimes: ['docker'], classes: [{ name: 'small', cpu: 1, memoryBytes: 1, diskBytes: 1 }] }))],
    ['offers without a class', a('agent.load', (m) => (m.load.offers = { runtimes: ['runc'], classes: [] }))],
    ['offers of a class with no cpu', a('agent.load', (m) => (m.load.offers = { runtimes: ['runc'], classes: [{ name: 'small', cpu: 0, memoryBytes: 1, diskBytes: 1 }] }))],
    ['offers naming a runtime more often than there are runtimes', a('agent.load', (m) => (m.load.offers = { runtimes: ['runc', 'runc', 'runc', 'runc'], classes: [{ name: 'small', cpu: 1, memoryBytes: 1, diskBytes: 1 }] }))],
    ['a load with an upper-case class', a('agent.load', (m) => (m.load.warm = [{ image: null, runtime: 'runc', sizeClass: 'Small', cells: 1 }]))],
    [`a load of ${MAX_LOAD_POOLS + 1} pools`, a('agent.load', (m) => (m.load.warm = Array.from({ length: MAX_LOAD_POOLS + 1 }, () => ({ image: null, runtime: 'runc', sizeClass: 'small', cells: 1 }))))],
    ['a load with an extra field', a('agent.load', (m) => (m.load.extra = 1))],
    [`${MAX_JOB_IDS + 1} live job ids`, a('hello', (m) => (m.liveJobIds = Array.from({ length: MAX_JOB_IDS + 1 }, (_, i) => `job_${i}`)))],
    ['output over one cell frame', a('job.output', (m) => (m.data = Buffer.alloc(MAX_OUTPUT_CHUNK_BYTES + 3).toString('base64')))],
    ['output that is not base64', a('job.output', (m) => (m.data = 'aGVsbG8*'))],
    ['output of a wrong length', a('job.output', (m) => (m.data = 'aGVsbG8'))],
    ['a third stream', a('job.output', (m) => (m.stream = 'stdin'))],
    ['negative dropped bytes', a('job.ended', (m) => (m.outputDroppedBytes = -1))],
    ['fractional dropped bytes', a('job.ended', (m) => (m.outputDroppedBytes = 1.5))],
    ['huge dropped bytes', a('job.ended', (m) => (m.outputDroppedBytes = 1e300))],
    ['exit code 256', a('job.ended', (m) => (m.end.exitCode = 256))],
    ['unknown end reason', a('job.ended', (m) => (m.end.reason = 'exploded'))],
    ['end message too long', a('job.ended', (m) => (m.end.message = 'x'.repeat(MAX_END_MESSAGE_CHARS + 1)))],
    ['65 timings', a('job.ended', (m) => (m.timings = Object.fromEntries(Array.from({ length: 65 }, (_, i) => [`t${i}`, i]))))],
    ['timing with an upper-case name', a('job.started', (m) => (m.timings = { Take_ms: 1 }))],
    ['timing of 1e13', a('job.started', (m) => (m.timings = { take_ms: 1e13 }))],
    ['257 wipe steps', a('job.wiped', (m) => (m.receipt.steps = Array.from({ length: 257 }, () => ({ step: 's', at: T, ms: 1 }))))],
    ['wipe step detail too long', a('job.wiped', (m) => (m.receipt.steps[0].detail = 'x'.repeat(4097)))],
    ['not a loop device', a('job.wiped', (m) => (m.receipt.loopDevices = ['/etc/passwd']))],
    ['not a time', a('job.wiped', (m) => (m.receipt.startedAt = 'yesterday'))],
    ['unknown key state', a('job.wiped', (m) => (m.receipt.keyStateAfterRemoval = 'maybe'))],
    [`${MAX_DENIED_PER_MESSAGE + 1} denied records`, a('network.denied', (m) => (m.records = Array.from({ length: MAX_DENIED_PER_MESSAGE + 1 }, () => m.records[0])))],
    ['denied port 70000', a('network.denied', (m) => (m.records[0].port = 70000))],
    ['denied destination too long', a('network.denied', (m) => (m.records[0].destination = 'x'.repeat(65)))],
    ['pool key that is no runtime/class', a('pool.status', (m) => (m.pool = { 'docker/small': m.pool['runc/small'] }))],
    ['65 pools', a('pool.status', (m) => (m.pool = Object.fromEntries(Array.from({ length: 65 }, (_, i) => [`runc/c${i}`, m.pool['runc/small']]))))],
    ['pool error too long', a('pool.status', (m) => (m.pool['runc/small'].lastError = 'x'.repeat(MAX_POOL_ERROR_CHARS + 1)))],
    ['negative volume count', a('pool.status', (m) => (m.volumes.warm = -1))],
    ['assignment over what a cell accepts', c('assign', (m) => (m.job.env = { BIG: 'x'.repeat(60_000), ...Object.fromEntries(Array.from({ length: 20 }, (_, i) => [`E${i}`, 'y'.repeat(60_000)])) }))],
    ['4097 arguments', c('assign', (m) => (m.job.command = Array.from({ length: 4097 }, () => 'a')))],
    ['empty command', c('assign', (m) => (m.job.command = []))],
    ['NUL in an argument', c('assign', (m) => (m.job.command = ['a\0b']))],
    ['env name with a dash', c('assign', (m) => (m.job.env = { 'A-B': '1' }))],
    ['relative cwd', c('assign', (m) => (m.job.cwd = 'work'))],
    ['unknown runtime', c('assign', (m) => (m.job.runtime = 'kata'))],
    ['non-canonical CIDR', c('assign', (m) => (m.job.egress.allow[0].cidr = '203.0.113.1/24'))],
    ['257 egress rules', c('assign', (m) => (m.job.egress.allow = Array.from({ length: 257 }, () => m.job.egress.allow[1])))],
    ['port range backwards', c('assign', (m) => (m.job.egress.allow[0].ports = { from: 444, to: 443 }))],
    ['zero cpu', c('assign', (m) => (m.job.cpu = 0))],
    ['token over a cell file', c('assign', (m) => (m.credentials.token = `a.${'b'.repeat(MAX_CELL_FILE_BYTES)}.c`))],
    ['token that is no JWS', c('token.refresh', (m) => (m.credentials.token = 'secret'))],
    ['1001 volume ids', c('receipts.stored', (m) => (m.volumeIds = Array.from({ length: 1001 }, () => 'v-0')))],
    ['welcome of another version', c('welcome', (m) => (m.protocol = 1))],
    ['welcome of a newer version', c('welcome', (m) => (m.protocol = PROTOCOL_VERSION + 1))],
    ['a sandbox with a command', c('assign', (m) => (m.job.mode = 'sandbox'))],
    ['an unknown mode', c('assign', (m) => (m.job.mode = 'vm'))],
    ['a process without argv', c('proc.start', (m) => (m.argv = []))],
    ['a relative cwd for a process', c('proc.start', (m) => (m.cwd = 'work'))],
    ['a terminal of 0 columns', c('proc.start', (m) => (m.pty.cols = 0))],
    ['a process timeout over 24 h', c('proc.start', (m) => (m.timeoutMs = 24 * 3600 * 1000 + 1))],
    ['signal 65', c('proc.signal', (m) => (m.signal = 65))],
    ['stdin over one chunk', c('proc.stdin', (m) => (m.data = Buffer.alloc(MAX_SANDBOX_CHUNK_BYTES + 3).toString('base64')))],
    ['a relative file path', c('file.op', (m) => (m.path = 'a.txt'))],
    ['a path with NUL', c('file.op', (m) => (m.path = '/work/a\0b'))],
    ['a path over 4096 bytes', c('file.op', (m) => (m.path = `/${'é'.repeat(2048)}`))],
    ['an unknown file op', c('file.op', (m) => (m.op = 'chmod'))],
    ['rename without to', c('file.op', (m) => (m.op = 'rename'))],
    ['to without rename', c('file.op', (m) => (m.to = '/work/b'))],
    ['mode 01000 for a write', c('file.op', (m) => (m.mode = 0o1000))],
    ['an unknown file error code', a('file.result', (m) => (m.code = 'disk_full'))],
    [`${MAX_LIST_ENTRIES + 1} list entries`, a('file.result', (m) => (m.entries = Array.from({ length: MAX_LIST_ENTRIES + 1 }, () => stat)))],
  ];
  for (const [what, ok] of refused) assert.equal(ok, false, `${what} was accepted`);
  // The limits themselves are accepted.
  assert.ok(a('job.output', (m) => (m.data = Buffer.alloc(MAX_OUTPUT_CHUNK_BYTES).toString('base64'))), 'a full cell frame of output');
  assert.ok(a('network.denied', (m) => (m.records = Array.from({ length: MAX_DENIED_PER_MESSAGE }, () => m.records[0]))));
  assert.ok(c('assign', (m) => (m.job.env = { BIG: 'x'.repeat(60_000) })));
  assert.ok(MAX_ASSIGNMENT_BYTES > 60_000);
  assert.ok(c('assign', (m) => ((m.job.mode = 'sandbox'), (m.job.command = []))), 'a sandbox takes no command');
  assert.ok(c('file.op', (m) => ((m.op = 'rename'), (m.to = '/work/b'))), 'a rename');
  assert.ok(c('proc.stdin', (m) => (m.data = Buffer.alloc(MAX_SANDBOX_CHUNK_BYTES).toString('base64'))), 'a full stdin chunk');
  const { mode: _m, ...job } = CONTROL.assign!.job as Msg;
  const parsed = parseControlMessage(JSON.stringify({ ...CONTROL.assign, job }));
  assert.ok(parsed.ok && parsed.msg.type === 'assign' && parsed.msg.job.mode === 'job', 'mode defaults to job');
});

test('one job.output carries at most one cell frame (wire.ts and frames.ts agree)', () => {
  assert.equal(MAX_OUTPUT_CHUNK_BYTES, MAX_FRAME_BYTES);
});

test('garbage, deep nesting, huge numbers and prototype keys are refused without throwing or polluting', () => {
  const deep = (d: number) => '['.repeat(d) + ']'.repeat(d);
  const inputs = [
    '',
    'null',
    '"hello"',
    '[]',
    '{}',
    '{"type":"hello"',
    `{"type":"job.started","jobId":"${JOB}","cellId":"c","timings":${deep(100_000)}}`,
    `{"type":"job.ended","jobId":"${JOB}","end":{"reason":"failed","exitCode":1e400,"signal":null,"message":null},"timings":{}}`,
    `{"type":"job.ended","jobId":"${JOB}","end":{"reason":"failed","exitCode":-0.5,"signal":null,"message":null},"timings":{}}`,
    `{"type":"job.output","jobId":"${JOB}","stream":"stdout","data":"aGk=","__proto__":{"polluted":true}}`,
    `{"type":"job.started","jobId":"${JOB}","cellId":"c","timings":{"__proto__":{"polluted":true}},"constructor":{"prototype":{"polluted":true}}}`,
    `{"type":"__proto__"}`,
    `{"type":"toString"}`,
    '\u0000\u0001\u0002',
  ];
  for (const raw of inputs) {
    assert.doesNotThrow(() => parseAgentMessage(raw));
    assert.equal(parseAgentMessage(raw).ok, false, raw.slice(0, 80));
    assert.doesNotThrow(() => parseControlMessage(raw));
    assert.equal(parseControlMessage(raw).ok, false);
  }
  // In a map, a __proto__ key is dropped: it never becomes the parsed object's prototype.
  const r = parseAgentMessage(`{"type":"job.started","jobId":"${JOB}","cellId":"c","timings":{"a":1,"__proto__":{"b":2}}}`);
  assert.ok(r.ok);
  assert.equal(r.ok && Object.getPrototypeOf(r.msg.type === 'job.started' ? r.msg.timings : null), Object.prototype);
  assert.equal(({} as Record<string, unknown>).polluted, undefined);
});

test('a refusal names the field, never its value', () => {
  const m = clone(CONTROL['token.refresh']!) as Record<string, any>;
  m.credentials.token = 'SECRET SECRET';
  const r = parseControlMessage(JSON.stringify(m));
  assert.equal(r.ok, false);
  assert.ok(!r.ok && r.problem.startsWith('credentials.token:'), !r.ok ? r.problem : '');
  assert.ok(!r.ok && !r.problem.includes('SECRET'));
  const long = parseAgentMessage(JSON.stringify({ ...AGENT['job.started'], ['k'.repeat(10_000)]: 1 }));
  assert.ok(!long.ok && long.problem.length < 300);
});

test('helloProtocol reads the version of any hello, and a close reason fits a close frame', () => {
  assert.equal(helloProtocol({ type: 'hello', agentId: 'a1b2c3', liveJobIds: [] }), 1);
  assert.equal(helloProtocol({ type: 'hello', protocol: 7 }), 7);
  assert.equal(helloProtocol({ type: 'hello', protocol: '2' }), 'unreadable');
  assert.equal(helloProtocol({ type: 'hello', protocol: 1e300 }), 'unreadable');
  assert.equal(helloProtocol({ type: 'job.started' }), null);
  assert.equal(helloProtocol(null), null);
  assert.equal(helloProtocol(JSON.parse('{"type":"hello","__proto__":{"protocol":2}}')), 1);
  const reason = closeReason(`bad message: ${'é'.repeat(200)}`);
  assert.ok(Buffer.byteLength(reason) <= MAX_CLOSE_REASON_BYTES);
  assert.ok(!reason.includes('\ufffd'));
  assert.equal(closeReason('short'), 'short');
  assert.ok(!/[\ud800-\udbff]$/.test(closeReason('x'.repeat(120) + '😀😀')), 'no half of a surrogate pair');
});

test('checking a message costs little', () => {
  const raw = JSON.stringify({ ...AGENT['job.output'], data: Buffer.alloc(4096, 7).toString('base64') });
  const n = 20_000;
  const t0 = performance.now();
  for (let i = 0; i < n; i++) assert.ok(parseAgentMessage(raw).ok);
  const perMessageUs = ((performance.now() - t0) * 1000) / n;
  // Measured near 15 µs on a 2-core VM; the bound leaves room for a loaded machine.
  assert.ok(perMessageUs < 500, `${perMessageUs.toFixed(1)} µs per 4 KiB output message`);
});
