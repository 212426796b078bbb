// The agent's side of the control channel, against a real WebSocket server on loopback playing the control plane:
// the hello goes alone and everything else waits for the welcome; a refusal's code and reason reach the agent; bad
// messages from the control plane are dropped; a report the control plane would refuse is never sent.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { WebSocketServer, type WebSocket } from 'ws';
import { ControlChannel } from '../../src/agent/channel.js';
import { CHANNEL_CLOSE, PROTOCOL_VERSION, type AgentHello, type AgentToControl } from '../../src/shared/wire.js';

const JOB = 'job_0123456789abcdef0123';
const ended: AgentToControl = { type: 'job.ended', jobId: JOB, end: { reason: 'succeeded', exitCode: 0, signal: null, message: null }, timings: {} };
const started: AgentToControl = { type: 'job.started', jobId: 'job_ffffffffffffffffffff', cellId: '0123456789', timings: { take_ms: 1 } };

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
    // Sent while welcomed: straight out.
    channel.send(started);
    while (seen.length < 4 && Date.now() < deadline) await sleep(10);
    assert.deepEqual(seen.at(-1), started);
  } finally {
    channel.close();
    await cp.close();
  }
});

test('a report the control plane would refuse is dropped and reported, not sent', async () => {
  let seen: unknown[] = [];
  const cp = await controlPlane((ws, received) => {
    seen = received;
    ws.once('message', () => ws.send(JSON.stringify({ type: 'welcome', protocol: PROTOCOL_VERSION })));
  });
  const channel = new ControlChannel(cp.url, noTls, () => ({ hello, replay: [] }));
  const dropped: string[] = [];
  channel.on('bad-outgoing', (type: string, problem: string) => dropped.push(`${type} ${problem}`));
  try {
    channel.connect();
    await once(channel, 'open');
    channel.send({ ...ended, end: { ...ended.end, message: 'x'.repeat(100_000) } } as AgentToControl);
    channel.send(started);
    const deadline = Date.now() + 5000;
    while (seen.length < 2 && Date.now() < deadline) await sleep(10);
    await sleep(50);
    assert.deepEqual(seen, [hello, started]);
    assert.equal(dropped.length, 1);
    assert.match(dropped[0]!, /^job\.ended end\.message: /);
  } finally {
    channel.close();
    await cp.close();
  }
});
