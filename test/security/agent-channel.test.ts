// The agent channel against a rogue client that holds the agent's own certificate (so passes mutual TLS): a hello of
// another protocol is refused with a reason that says so; thousands of generated malformed, garbage, oversized and
// type-confused messages (seeded, over fresh connections) are each refused with a close code, never crash the control
// plane nor make it log a stack trace; and well-formed reports about another agent's job change nothing of that job.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import WebSocket from 'ws';
import { isAlive, TestCluster } from '../support/cluster.js';
import { until, waitFor } from '../support/host.js';
import { CHANNEL_CLOSE, MAX_AGENT_MESSAGE_BYTES, MIN_PROTOCOL_VERSION, PROTOCOL_VERSION } from '../../src/shared/wire.js';
import { seeded } from '../support/seeded.js';

let cluster: TestCluster;
let agentPort = 0;
let tls: { ca: string; cert: string; key: string };
let controlPid = 0;
let realAgent = '';
/** A job of the real agent that runs for the whole test: the rogue client aims at it. */
let victim = { id: '', cellId: '', workspaceId: '' };

before(async () => {
  cluster = await TestCluster.start({ config: { agent: { pool: [{ runtime: 'runc', class: 'small', warm: 2 }] } } });
  agentPort = (JSON.parse(readFileSync(join(cluster.dataDir, 'config.json'), 'utf8')) as { control: { agentPort: number } }).control.agentPort;
  const pki = (f: string) => readFileSync(join(cluster.dataDir, 'pki', f), 'utf8');
  tls = { ca: pki('ca.pem'), cert: pki('agent.pem'), key: pki('agent-key.pem') };
  controlPid = Number(readFileSync(join(cluster.dataDir, 'run', 'control.pid'), 'utf8'));
  realAgent = cluster.agentId;
  await cluster.waitWarm();
  const job = await cluster.client.createJob({ command: ['sh', '-c', 'echo start; sleep 600'], timeoutSeconds: 900 });
  const running = await until(() => cluster.client.getJob(job.id), (j) => j.status === 'running' && j.cellId !== null, 60_000);
  assert.equal(running.status, 'running', JSON.stringify(running));
  victim = { id: running.id, cellId: running.cellId!, workspaceId: running.workspaceId };
});

after(async () => {
  await cluster?.stop();
});

/** Outcome is how the control plane ended a rogue connection, and what it sent before. */
interface Outcome {
  code: number;
  reason: string;
  received: Array<{ type?: string }>;
}

/** rogue connects with the agent's certificate, sends the messages in order and resolves when the control plane closes. */
function rogue(messages: Array<string | Buffer>, timeoutMs = 30_000): Promise<Outcome> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(`wss://127.0.0.1:${agentPort}/v1/agent`, { ...tls, perMessageDeflate: false });
    const received: Outcome['received'] = [];
    const timer = setTimeout(() => {
      ws.terminate();
      reject(new Error(`the control plane did not close a rogue connection within ${timeoutMs} ms (sent ${messages.map((m) => m.toString().slice(0, 60)).join(' | ')})`));
    }, timeoutMs);
    ws.on('open', () => {
      for (const m of messages) ws.send(m);
    });
    ws.on('message', (d) => received.push(JSON.parse(d.toString()) as { type?: string }));
    ws.on('error', () => {}); // the close that follows says what happened
    ws.on('close', (code, reason) => {
      clearTimeout(timer);
      resolve({ code, reason: reason.toString(), received });
    });
  });
}

const T = () => new Date().toISOString();
const hello = (agentId: string, extra: Record<string, unknown> = {}) => JSON.stringify({ type: 'hello', protocol: PROTOCOL_VERSION, agentId, liveJobIds: [], endedJobIds: [], capacity: 64, images: [], load: { running: 0, capacity: 64, preparing: 0, warm: [] }, ...extra });
/** SENTINEL is not JSON: after well-formed messages it makes the control plane close, so we know it read them all. */
const SENTINEL = 'end of rogue messages';
const controlLog = () => readFileSync(join(cluster.dataDir, 'run', 'control.log'), 'utf8');
const agentLog = () => readFileSync(join(cluster.dataDir, 'run', 'agent.log'), 'utf8');

test('a hello of another protocol version is refused with a reason that says so, and nothing after it is applied', async () => {
  // An agent of protocol 1 (no version in its hello) …
  const old = await rogue([JSON.stringify({ type: 'hello', agentId: 'abcdef', liveJobIds: [victim.id] }), JSON.stringify(endedOf(victim.id))]);
  assert.equal(old.code, CHANNEL_CLOSE.protocolMismatch);
  assert.equal(old.reason, `agent speaks protocol 1, this control plane speaks ${MIN_PROTOCOL_VERSION} to ${PROTOCOL_VERSION}: upgrade the agent`);
  assert.deepEqual(old.received, [], 'no welcome, no assignment');
  // … and one newer than the control plane.
  const newer = await rogue([hello('abcdef', { protocol: PROTOCOL_VERSION + 1 })]);
  assert.equal(newer.code, CHANNEL_CLOSE.protocolMismatch);
  assert.equal(newer.reason, `agent speaks protocol ${PROTOCOL_VERSION + 1}, this control plane speaks ${MIN_PROTOCOL_VERSION} to ${PROTOCOL_VERSION}: upgrade the control plane`);
  const unreadable = await rogue([hello('abcdef', { protocol: '2' })]);
  assert.equal(unreadable.code, CHANNEL_CLOSE.protocolMismatch);
  assert.match(unreadable.reason, /no readable protocol version/);
  // The operator sees it in the control plane's log too.
  await waitFor(() => controlLog().includes('agent speaks protocol 1, this control plane speaks'), 5000);
  assert.equal((await cluster.client.getJob(victim.id)).status, 'running');
});

test('well-formed reports about another agent\'s job change nothing of it', async () => {
  const before = await cluster.client.getJob(victim.id);
  const reports = hostileReports(victim.id, victim.cellId);
  // A rogue agent that claims the job as its own (live, and ended) in its hello, then reports on it.
  const out = await rogue([hello('abcdef', { liveJobIds: [victim.id], endedJobIds: [victim.id] }), ...reports.map((r) => JSON.stringify(r)), SENTINEL]);
  assert.equal(out.code, CHANNEL_CLOSE.badMessage, out.reason);
  // At most an acknowledgement of the spooled receipt (if it was applied before the close): no credentials, no assignment.
  assert.equal(out.received[0]?.type, 'welcome');
  assert.deepEqual(out.received.filter((m) => m.type !== 'welcome' && m.type !== 'receipts.stored'), []);
  await assertVictimUntouched(before);
});

test('fuzz: thousands of malformed messages over fresh connections are each refused, and the control plane keeps serving', async () => {
  const seed = Number(process.env.CLEANROOM_FUZZ_SEED ?? 7_041_977);
  const rand = seeded(seed);
  const cases = generateCases(rand, 2200);
  const before = await cluster.client.getJob(victim.id);
  const codes = new Map<number, number>();
  const wrong: string[] = [];
  let messages = 0;
  const t0 = Date.now();
  // A few connections at once, each slot with its own rogue agent id (a hello replaces a connection of the same id).
  const SLOTS = 6;
  let next = 0;
  await Promise.all(
    Array.from({ length: SLOTS }, async (_, slot) => {
      const agentId = `f0f0f${slot}`;
      for (let i = next++; i < cases.length; i = next++) {
        const c = cases[i]!;
        const sent = c.withHello ? [hello(agentId), ...c.messages, SENTINEL] : [...c.messages, SENTINEL];
        messages += c.messages.length;
        const out = await rogue(sent);
        codes.set(out.code, (codes.get(out.code) ?? 0) + 1);
        if (!c.expect.includes(out.code)) wrong.push(`case ${i} (${c.kind}): closed ${out.code} "${out.reason}", expected ${c.expect.join(' or ')}; first message ${c.messages[0]?.toString().slice(0, 120)}`);
        if (out.received.some((m) => m.type !== 'welcome' && m.type !== 'receipts.stored')) wrong.push(`case ${i} (${c.kind}): the rogue was sent ${JSON.stringify(out.received).slice(0, 200)}`);
      }
    }),
  );
  const seconds = (Date.now() - t0) / 1000;
  console.log(`fuzz seed ${seed}: ${cases.length} connections, ${messages} malformed or hostile messages in ${seconds.toFixed(1)} s; close codes ${JSON.stringify(Object.fromEntries(codes))}`);
  assert.ok(messages >= 2000, `only ${messages} messages`);
  assert.deepEqual(wrong.slice(0, 20), [], `seed ${seed}`);

  // The control plane is the same process, alive and serving; the real agent never lost its connection.
  assert.ok(isAlive(controlPid), 'the control plane died');
  assert.equal(Number(readFileSync(join(cluster.dataDir, 'run', 'control.pid'), 'utf8')), controlPid);
  await waitFor(async () => (await cluster.client.health()).agents === 1, 15_000);
  await assertVictimUntouched(before);
  const log = controlLog();
  assert.doesNotMatch(log, /"stack"|^\s+at .+:\d+:\d+\)?$/m, 'a stack trace in the control plane log');
  assert.doesNotMatch(log, /agent report failed|hello handling failed|unhandled/);
  assert.ok(!log.split('\n').some((l) => l.includes('agent disconnected') && l.includes(`"agentId":"${realAgent}"`)), 'the real agent was disconnected');
  assert.doesNotMatch(agentLog(), /dropped a message from the control plane|closed the channel/);

  // The real agent's reports still apply: the victim ends as cancelled (not as the rogue said), and a new job succeeds.
  await cluster.client.cancelJob(victim.id);
  const ended = await until(() => cluster.client.getJob(victim.id), (j) => j.status !== 'running', 30_000);
  assert.equal(ended.status, 'cancelled', JSON.stringify(ended));
  assert.equal((await cluster.client.logs(victim.id)).chunks.map((c) => Buffer.from(c.data).toString()).join(''), 'start\n');
  const r = await cluster.runJob({ command: ['sh', '-c', 'echo still serving'] });
  assert.equal(r.job.status, 'succeeded', JSON.stringify(r.job));
  assert.equal(r.stdout, 'still serving\n');
});

/** assertVictimUntouched checks the victim job is as the real agent left it: running, its cell, its output, no receipt or denials. */
async function assertVictimUntouched(before: { status: string; cellId: string | null; timings: Record<string, number> }): Promise<void> {
  await new Promise((r) => setTimeout(r, 300)); // reports are applied in order, after the close: give the queue a moment
  const now = await cluster.client.getJob(victim.id);
  assert.equal(now.status, 'running', JSON.stringify(now));
  assert.equal(now.cellId, before.cellId);
  assert.equal(now.wipe, null);
  assert.deepEqual(now.timings, before.timings);
  const output = (await cluster.client.logs(victim.id)).chunks.map((c) => Buffer.from(c.data).toString()).join('');
  assert.equal(output, 'start\n');
  const denied = await cluster.client.listDeniedConnections({ jobId: victim.id });
  assert.deepEqual(denied, []);
}

function endedOf(jobId: string) {
  return { type: 'job.ended', jobId, end: { reason: 'succeeded', exitCode: 0, signal: null, message: 'ended by a rogue' }, timings: {}, outputDroppedBytes: 0 };
}

/** hostileReports are well-formed reports about a job, as its agent would send them. */
function hostileReports(jobId: string, cellId: string): object[] {
  const t = T();
  return [
    { type: 'job.started', jobId, cellId: 'deadbeef00', timings: { take_ms: 1 } },
    { type: 'job.output', jobId, stream: 'stdout', data: Buffer.from('INJECTED\n').toString('base64') },
    { type: 'job.output', jobId, stream: 'stderr', data: Buffer.from('INJECTED\n').toString('base64') },
    { type: 'network.denied', records: [{ jobId, cellId, action: 'denied', destination: '203.0.113.66', protocol: 'tcp', port: 6666, time: t }] },
    endedOf(jobId),
    { ...endedOf(jobId), end: { reason: 'failed', exitCode: 1, signal: null, message: null } },
    {
      type: 'job.wiped',
      jobId,
      receipt: { volumeId: 'v-0123456789abcdef', cellId, keyIdentifier: null, keyStateAfterRemoval: 'absent', loopDevices: [], startedAt: t, finishedAt: t, totalMs: 1, steps: [] },
      spooled: true,
    },
    { type: 'pool.status', requestId: randomUUID(), pool: {}, volumes: { warm: 0, inUse: 0, wiping: 0, wiped: 0, wipeFailed: 0 } },
    // The same in one job.report (protocol 5).
    {
      type: 'job.report',
      jobId,
      started: { cellId: 'deadbeef00', timings: { take_ms: 1 } },
      output: [{ stream: 'stdout', data: Buffer.from('INJECTED\n').toString('base64') }],
      ended: { end: { reason: 'failed', exitCode: 1, signal: null, message: null }, timings: {} },
      wiped: { receipt: { volumeId: 'v-fedcba9876543210', cellId, keyIdentifier: null, keyStateAfterRemoval: 'absent', loopDevices: [], startedAt: t, finishedAt: t, totalMs: 1, steps: [] } },
    },
  ];
}

/** FuzzCase is one fresh connection: optionally a valid hello, then the messages, and the close codes that may answer. */
interface FuzzCase {
  kind: string;
  withHello: boolean;
  messages: Array<string | Buffer>;
  expect: number[];
}


const BAD = CHANNEL_CLOSE.badMessage;
const TOO_BIG = 1009; // RFC 6455: message too big (ws enforces maxPayload)

function generateCases(rand: () => number, n: number): FuzzCase[] {
  const int = (k: number) => Math.floor(rand() * k);
  const pick = <T>(xs: readonly T[]): T => xs[int(xs.length)]!;
  const hex = (k: number) => Array.from({ length: k }, () => '0123456789abcdef'[int(16)]).join('');
  const str = () => pick([
    () => '',
    () => 'x'.repeat(int(70_000)),
    () => String.fromCharCode(...Array.from({ length: int(40) }, () => int(0xd7ff))),
    () => '\u0000\u202e../../etc/passwd',
    () => '__proto__',
    () => `job_${hex(20)}`,
    () => victim.id,
  ])();
  const num = () => pick([0, -1, -0, 1.5, 2 ** 53 + 1, 1e308, -1e308, Number.MAX_SAFE_INTEGER, 255, 256, 65536, 4294967296]);
  const jsonValue = (depth: number): unknown => {
    const r = int(depth > 3 ? 4 : 7);
    if (r === 0) return null;
    if (r === 1) return rand() < 0.5;
    if (r === 2) return num();
    if (r === 3) return str();
    if (r === 4) return Array.from({ length: int(4) }, () => jsonValue(depth + 1));
    // JSON.parse makes __proto__ an own key, as it arrives on the wire.
    if (r === 5) return JSON.parse(`{"__proto__":${JSON.stringify(jsonValue(depth + 1))},"constructor":{"prototype":{"polluted":true}}}`) as unknown;
    return Object.fromEntries(Array.from({ length: int(4) }, () => [pick(['type', 'jobId', 'data', '__proto__', 'seq', 'x']), jsonValue(depth + 1)]));
  };
  // A message of a random type, well-formed except for what a mutation changes.
  const template = (): Record<string, unknown> => {
    const jobId = pick([victim.id, `job_${hex(20)}`]);
    const t = T();
    return pick([
      () => ({ type: 'job.started', jobId, cellId: hex(10), timings: { take_ms: 1 } }),
      () => ({ type: 'job.output', jobId, stream: 'stdout', data: Buffer.from('x').toString('base64') }),
      () => endedOf(jobId),
      () => ({ type: 'job.wiped', jobId, receipt: { volumeId: `v-${hex(16)}`, cellId: hex(10), keyIdentifier: hex(32), keyStateAfterRemoval: 'absent', loopDevices: ['/dev/loop1'], startedAt: t, finishedAt: t, totalMs: 3, steps: [{ step: 's', at: t, ms: 1 }] } }),
      () => ({ type: 'network.denied', records: [{ jobId, cellId: hex(10), action: 'denied', destination: '203.0.113.1', protocol: 'udp', port: 53, time: t }] }),
      () => ({ type: 'pool.status', requestId: randomUUID(), pool: { 'runc/small': { target: 1, warm: 1, preparing: 0, busy: 0, lastError: null } }, volumes: { warm: 1, inUse: 0, wiping: 0, wiped: 0, wipeFailed: 0 } }),
    ])();
  };
  // mutate changes one field somewhere in the message (never its type): removed, retyped, oversized, or a key added.
  const mutate = (m: Record<string, unknown>): Record<string, unknown> => {
    const objects: Array<Record<string, unknown>> = [];
    const walk = (v: unknown) => {
      if (v && typeof v === 'object') {
        if (!Array.isArray(v)) objects.push(v as Record<string, unknown>);
        for (const c of Object.values(v)) walk(c);
      }
    };
    walk(m);
    const o = pick(objects);
    const keys = Object.keys(o).filter((k) => o !== m || k !== 'type');
    const k = keys.length ? pick(keys) : 'x';
    switch (int(7)) {
      case 0:
        delete o[k];
        break;
      case 1:
        o[k] = jsonValue(0);
        break;
      case 2:
        o[k] = typeof o[k] === 'string' ? 'x'.repeat(100_000 + int(900_000)) : Array.from({ length: 20_000 }, () => 1);
        break;
      case 3:
        o[k] = num();
        break;
      case 4:
        Object.defineProperty(o, pick(['__proto__', 'constructor', 'prototype']), { value: { polluted: true }, enumerable: true, writable: true, configurable: true });
        break;
      case 5:
        o[pick(['seq', 'extra', 'agentId', 'workspaceId'])] = pick([-1, 'ws_other', 'abcdef']);
        break;
      default: {
        let deep: unknown = 1;
        for (let d = 0; d < 2000 + int(50_000); d++) deep = [deep];
        o[k] = deep;
      }
    }
    return m;
  };
  const cases: FuzzCase[] = [];
  for (let i = 0; i < n; i++) {
    const r = int(100);
    if (r < 10) {
      // Garbage bytes (binary) or text that is no JSON.
      const bytes = Buffer.from(Array.from({ length: 1 + int(300) }, () => int(256)));
      cases.push({ kind: 'garbage', withHello: rand() < 0.5, messages: [rand() < 0.5 ? bytes : bytes.toString('latin1')], expect: [BAD] });
    } else if (r < 20) {
      // Any JSON at all, deep nesting and huge numbers included.
      const raw = pick([() => JSON.stringify(jsonValue(0)), () => '['.repeat(100_000) + ']'.repeat(100_000), () => '{"type":"job.ended","jobId":"x","end":1e999999}', () => '123456789012345678901234567890e99999']);
      cases.push({ kind: 'json', withHello: rand() < 0.5, messages: [raw()], expect: [BAD] });
    } else if (r < 70) {
      let m = template();
      for (let j = 0, k = 1 + int(3); j < k; j++) m = mutate(m);
      // Rarely, a mutation leaves it well-formed (an optional field removed): then it is applied (or ignored), and the
      // sentinel closes the connection.
      cases.push({ kind: 'mutated', withHello: true, messages: [JSON.stringify(m)], expect: [BAD, TOO_BIG] });
    } else if (r < 85) {
      // Well-formed reports about a job of another agent, or about no job at all.
      const jobId = pick([victim.id, `job_${hex(20)}`, `job_${hex(20)}`]);
      cases.push({ kind: 'hostile', withHello: true, messages: hostileReports(jobId, hex(10)).map((x) => JSON.stringify(x)), expect: [BAD] });
    } else if (r < 92) {
      // Out of order: a report before any hello, or a second hello.
      const first = rand() < 0.5;
      cases.push({ kind: 'order', withHello: !first, messages: [first ? JSON.stringify(template()) : hello('a0a0a0')], expect: [CHANNEL_CLOSE.protocolViolation] });
    } else if (r < 99) {
      // Hellos of other or unreadable versions, and well-versioned hellos that are malformed.
      const protocol = pick<unknown>([undefined, 0, 1, MIN_PROTOCOL_VERSION - 1, PROTOCOL_VERSION + 1, -1, 1e308, '2', null, [2], { v: 2 }]);
      const h: Record<string, unknown> = { type: 'hello', agentId: 'a0a0a0', liveJobIds: [victim.id], endedJobIds: [] };
      if (protocol !== undefined) h.protocol = protocol;
      const versioned = rand() < 0.3;
      if (versioned) Object.assign(h, { protocol: PROTOCOL_VERSION, agentId: pick(['ABCDEF', '', 'x'.repeat(100), 7, null]) });
      cases.push({ kind: 'hello', withHello: false, messages: [JSON.stringify(h)], expect: [versioned ? BAD : CHANNEL_CLOSE.protocolMismatch] });
    } else {
      // Larger than any message an agent sends.
      cases.push({ kind: 'oversized', withHello: rand() < 0.5, messages: [`{"type":"job.output","data":"${'A'.repeat(MAX_AGENT_MESSAGE_BYTES + int(1000))}"}`], expect: [TOO_BIG] });
    }
  }
  return cases;
}
