// The agent's side of the control channel, against a real WebSocket server on loopback playing the control plane:
// the hello goes alone and everything else waits for the welcome; a refusal's code and reason reach the agent; bad
// messages from the control plane are dropped; a report the control plane would refuse is never sent (a report of
// output alone included); on protocol 5 the reports of a job ready in one turn go as one job.report (with the load,
// after an end), and on protocol 4 one by one.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { WebSocketServer, type WebSocket } from 'ws';
import { ControlChannel } from '../../src/agent/channel.js';
import { CHANNEL_CLOSE, MIN_PROTOCOL_VERSION, PROTOCOL_VERSION, type AgentHello, type AgentLoad, type AgentToControl } from '../../src/shared/wire.js';

const JOB = 'job_0123456789abcdef0123';
const ended: AgentToControl = { type: 'job.ended', jobId: JOB, end: { reason: 'succeeded', exitCode: 0, signal: null, message: null }, timings: {} };
const started: AgentToControl = { type: 'job.started', jobId: 'job_ffffffffffffffffffff', cellId: '0123456789', timings: { take_ms: 1 } };
/** The job.report a lone `started` goes as on protocol 5. */
const startedReport = { type: 'job.report', jobId: 'job_ffffffffffffffffffff', started: { cellId: '0123456789', timings: { take_ms: 1 } } };

/** controlPlane listens on loopback and hands each connection, with the messages received on it, to `serve`. */
async function controlPlane(serve: (ws: WebSocket, received: unknown[]) => void): Promise<{ url: string; close: () => Promise<void> }> {
  const wss = new WebSocketServer({ host: '127.0.0.1', port: 0 });
  await once(wss, 'listening');
  wss.on('connection', (ws) => {
    const received: unknown[] = [];
    ws.on('message', (d) => received.push(JSON.parse(d.toString())));
    serve(ws, received);
  });
  const { port } = wss.address() as { port: number };
  return {
    url: `ws://127.0.0.1:${port}/v1/agent`,
    close: () => {
      for (const c of wss.clients) c.terminate();
      return new Promise((r) => wss.close(() => r()));
    },
  };
}

const hello: AgentHello = { type: 'hello', protocol: PROTOCOL_VERSION, agentId: 'a1b2c3', liveJobIds: [], endedJobIds: [JOB], capacity: 64, images: [], load: { running: 0, capacity: 64, preparing: 0, warm: [] } };
const noTls = { ca: '', cert: '', key: '' };
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

test('a refused hello: the agent hears the code and the reason, and sends nothing but the hello', async () => {
  const reason = `agent speaks protocol ${PROTOCOL_VERSION}, this control plane speaks ${PROTOCOL_VERSION + 1}: upgrade the agent`;
  let seen: unknown[] = [];
  const cp = await controlPlane((ws, received) => {
    seen = received;
    ws.once('message', () => ws.close(CHANNEL_CLOSE.protocolMismatch, reason));
  });
  const channel = new ControlChannel(cp.url, noTls, () => ({ hello, replay: [ended] }));
  channel.send(started);
  try {
    channel.connect();
    const [code, why] = (await once(channel, 'close')) as [number, string];
    assert.equal(code, CHANNEL_CLOSE.protocolMismatch);
    assert.equal(why, reason);
    await sleep(100);
    assert.deepEqual(seen, [hello], 'only the hello went out: the replay and the queued report wait for a welcome');
  } finally {
    channel.close();
    await cp.close();
  }
});

test('welcomed: the replay and the queued reports follow, in order; bad messages from the control plane are dropped', async () => {
  let seen: unknown[] = [];
  let helloAloneFor50ms = false;
  const cp = await controlPlane((ws, received) => {
    seen = received;
    ws.once('message', () =>
      setTimeout(() => {
        helloAloneFor50ms = received.length === 1;
        ws.send(JSON.stringify({ type: 'welcome', protocol: PROTOCOL_VERSION }));
        ws.send('{not json');
        ws.send(JSON.stringify({ type: 'assign', job: { jobId: JOB, command: 'rm -rf /' }, credentials: {} }));
        ws.send(JSON.stringify({ type: 'cancel', jobId: JOB, extra: 1 }));
        ws.send(JSON.stringify({ type: 'cancel', jobId: JOB }));
      }, 50),
    );
  });
  const channel = new ControlChannel(cp.url, noTls, () => ({ hello, replay: [ended] }));
  const bad: Array<[string, unknown]> = [];
  const messages: unknown[] = [];
  channel.on('bad-message', (problem: string, value: unknown) => bad.push([problem, value]));
  channel.on('message', (m: unknown) => messages.push(m));
  channel.send(started);
  try {
    channel.connect();
    await once(channel, 'open');
    const deadline = Date.now() + 5000;
    while ((messages.length < 1 || seen.length < 3) && Date.now() < deadline) await sleep(10);
    assert.ok(helloAloneFor50ms, 'nothing followed the hello before the welcome');
    assert.deepEqual(seen, [hello, ended, started]);
    assert.deepEqual(messages, [{ type: 'cancel', jobId: JOB }]);
    assert.deepEqual(bad.map(([p]) => p.split(':')[0]), ['not JSON', 'job.command', 'message']);
    assert.equal((bad[1]?.[1] as { type?: string }).type, 'assign', 'the agent is given what it could parse, to fail that job');
    // Sent while welcomed: out at the end of the turn (protocol 5: as a job.report).
    channel.send(started);
    while (seen.length < 4 && Date.now() < deadline) await sleep(10);
    assert.deepEqual(seen.at(-1), startedReport);
  } finally {
    channel.close();
    await cp.close();
  }
});

/** welcomedChannel is a channel to a control plane that welcomes it, with what it received and what the agent dropped. */
async function welcomedChannel() {
  const got: { seen: unknown[] } = { seen: [] };
  const cp = await controlPlane((ws, received) => {
    got.seen = received;
    ws.once('message', () => ws.send(JSON.stringify({ type: 'welcome', protocol: PROTOCOL_VERSION })));
  });
  const channel = new ControlChannel(cp.url, noTls, () => ({ hello, replay: [] }));
  const dropped: string[] = [];
  channel.on('bad-outgoing', (type: string, problem: string) => dropped.push(`${type} ${problem}`));
  return { cp, channel, dropped, got };
}

test('a report the control plane would refuse is dropped and reported, not sent', async () => {
  const { cp, channel, dropped, got } = await welcomedChannel();
  try {
    channel.connect();
    await once(channel, 'open');
    channel.send({ ...ended, end: { ...ended.end, message: 'x'.repeat(100_000) } } as AgentToControl);
    channel.send(started);
    const deadline = Date.now() + 5000;
    while (got.seen.length < 2 && Date.now() < deadline) await sleep(10);
    await sleep(50);
    assert.deepEqual(got.seen, [hello, startedReport]);
    assert.equal(dropped.length, 1);
    assert.match(dropped[0]!, /^job\.report ended\.end\.message: /);
  } finally {
    channel.close();
    await cp.close();
  }
});

test('a report of output alone is checked as any report (its answer kept per job id): a bad job id is dropped every time', async () => {
  const { cp, channel, dropped, got } = await welcomedChannel();
  const output = (jobId: string): AgentToControl => ({ type: 'job.output', jobId, stream: 'stdout', data: 'aGkK' });
  try {
    channel.connect();
    await once(channel, 'open');
    for (let turn = 0; turn < 2; turn++) {
      channel.send(output('not an id!'));
      await sleep(20);
    }
    channel.send(started); // checks the job's report of output alone ahead
    await sleep(20);
    channel.send(output('job_ffffffffffffffffffff'));
    const deadline = Date.now() + 5000;
    while (got.seen.length < 3 && Date.now() < deadline) await sleep(10);
    await sleep(50);
    assert.deepEqual(got.seen, [hello, startedReport, { type: 'job.report', jobId: 'job_ffffffffffffffffffff', output: [{ stream: 'stdout', data: 'aGkK' }] }]);
    assert.equal(dropped.length, 2);
    for (const d of dropped) assert.match(d, /^job\.report jobId: /);
  } finally {
    channel.close();
    await cp.close();
  }
});

test('protocol 5: the reports of a job ready in one turn go as one job.report, with the load after an end; others keep their place', async () => {
  let seen: Array<Record<string, unknown>> = [];
  const cp = await controlPlane((ws, received) => {
    seen = received as Array<Record<string, unknown>>;
    ws.once('message', () => ws.send(JSON.stringify({ type: 'welcome', protocol: PROTOCOL_VERSION })));
  });
  const channel = new ControlChannel(cp.url, noTls, () => ({ hello, replay: [] }));
  const load: AgentLoad = { running: 0, capacity: 64, preparing: 0, warm: [] };
  channel.reportLoad = () => load;
  const A = 'job_aaaaaaaaaaaaaaaaaaaa';
  const B = 'job_bbbbbbbbbbbbbbbbbbbb';
  const out = (jobId: string, text: string): AgentToControl => ({ type: 'job.output', jobId, stream: 'stdout', data: Buffer.from(text).toString('base64') });
  const end = (jobId: string): AgentToControl => ({ ...ended, jobId });
  try {
    channel.connect();
    await once(channel, 'open');
    // One turn: A starts, B writes, A writes twice and ends, B ends.
    channel.send({ ...started, jobId: A });
    channel.send(out(B, 'b1'));
    channel.send(out(A, 'a1'));
    channel.send(out(A, 'a2'));
    channel.send(end(A));
    channel.send(end(B));
    // Another message flushes what came before it: B's late output goes before it, then the pool status after.
    await sleep(20);
    channel.send(out(B, 'late'));
    channel.send({ type: 'pool.status', requestId: null, pool: {}, volumes: { warm: 0, inUse: 0, wiping: 0, wiped: 0, wipeFailed: 0 } });
    // A report out of order for its job (an output after the end) starts a new job.report.
    await sleep(20);
    channel.send(end(A));
    channel.send(out(A, 'x'));
    const deadline = Date.now() + 5000;
    while (seen.length < 7 && Date.now() < deadline) await sleep(10);
    const b64 = (t: string) => Buffer.from(t).toString('base64');
    const endPart = { end: ended.type === 'job.ended' ? ended.end : null, timings: {} };
    assert.deepEqual(seen.slice(1), [
      { type: 'job.report', jobId: A, started: { cellId: '0123456789', timings: { take_ms: 1 } }, output: [{ stream: 'stdout', data: b64('a1') }, { stream: 'stdout', data: b64('a2') }], ended: endPart },
      { type: 'job.report', jobId: B, output: [{ stream: 'stdout', data: b64('b1') }], ended: endPart, load },
      { type: 'job.report', jobId: B, output: [{ stream: 'stdout', data: b64('late') }] },
      { type: 'pool.status', requestId: null, pool: {}, volumes: { warm: 0, inUse: 0, wiping: 0, wiped: 0, wipeFailed: 0 } },
      { type: 'job.report', jobId: A, ended: endPart },
      { type: 'job.report', jobId: A, output: [{ stream: 'stdout', data: b64('x') }], load },
    ]);
  } finally {
    channel.close();
    await cp.close();
  }
});

test(`protocol ${MIN_PROTOCOL_VERSION}: a control plane of the previous build is sent each report on its own`, async () => {
  let seen: unknown[] = [];
  const cp = await controlPlane((ws, received) => {
    seen = received;
    ws.once('message', () => ws.send(JSON.stringify({ type: 'welcome', protocol: MIN_PROTOCOL_VERSION })));
  });
  const channel = new ControlChannel(cp.url, noTls, () => ({ hello, replay: [] }));
  channel.reportLoad = () => ({ running: 0, capacity: 64, preparing: 0, warm: [] });
  try {
    channel.connect();
    await once(channel, 'open');
    channel.send(started);
    channel.send(ended);
    const deadline = Date.now() + 5000;
    while (seen.length < 3 && Date.now() < deadline) await sleep(10);
    await sleep(30);
    assert.deepEqual(seen, [hello, started, ended]);
  } finally {
    channel.close();
    await cp.close();
  }
});

test('flush sends the reports gathered so far at once (a job\'s first output): what the same turn adds later goes as a report of its own, in order', async () => {
  const { cp, channel, got } = await welcomedChannel();
  const A = 'job_aaaaaaaaaaaaaaaaaaaa';
  const out = (text: string): AgentToControl => ({ type: 'job.output', jobId: A, stream: 'stdout', data: Buffer.from(text).toString('base64') });
  try {
    channel.connect();
    await once(channel, 'open');
    channel.send({ ...started, jobId: A });
    channel.send(out('first'));
    channel.flush();
    channel.send(out('second'));
    channel.send({ ...ended, jobId: A });
    const deadline = Date.now() + 5000;
    while (got.seen.length < 3 && Date.now() < deadline) await sleep(10);
    await sleep(50);
    const b64 = (t: string) => Buffer.from(t).toString('base64');
    assert.deepEqual(got.seen.slice(1), [
      { type: 'job.report', jobId: A, started: { cellId: '0123456789', timings: { take_ms: 1 } }, output: [{ stream: 'stdout', data: b64('first') }] },
      { type: 'job.report', jobId: A, output: [{ stream: 'stdout', data: b64('second') }], ended: { end: ended.type === 'job.ended' ? ended.end : null, timings: {} } },
    ]);
  } finally {
    channel.close();
    await cp.close();
  }
});
