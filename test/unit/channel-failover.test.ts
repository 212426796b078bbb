// The agent's channel over several control-plane URLs (agent.controlUrls), against real mutual-TLS listeners on
// loopback: an unreachable URL is skipped for the next; a channel that closes fails over to the next URL and wraps
// around; after each welcome the replay and the queued reports follow on the new connection; the backoff between
// failed dials doubles up to its bound.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createServer, type Server } from 'node:https';
import { createServer as createTcpServer } from 'node:net';
import { WebSocketServer, type WebSocket } from 'ws';
import { ControlChannel } from '../../src/agent/channel.js';
import { dataPaths } from '../../src/shared/paths.js';
import { ensurePki } from '../../src/supervisor/pki.js';
import { PROTOCOL_VERSION, type AgentHello, type AgentToControl } from '../../src/shared/wire.js';

const JOB = 'job_0123456789abcdef0123';
const ended: AgentToControl = { type: 'job.ended', jobId: JOB, end: { reason: 'succeeded', exitCode: 0, signal: null, message: null }, timings: {} };
const started: AgentToControl = { type: 'job.started', jobId: 'job_ffffffffffffffffffff', cellId: '0123456789', timings: { take_ms: 1 } };
const hello: AgentHello = { type: 'hello', protocol: PROTOCOL_VERSION, agentId: 'a1b2c3', liveJobIds: [], endedJobIds: [JOB], capacity: 64, images: [], load: { running: 0, capacity: 64, preparing: 0, warm: [] } };
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

const dir = mkdtempSync('/tmp/cleanroom-failover-');
after(() => rmSync(dir, { recursive: true, force: true }));
const paths = dataPaths(dir);
const pki = (async () => {
  await ensurePki(paths, 0, 0, ['127.0.0.1']);
  const read = (f: string) => readFileSync(f, 'utf8');
  return {
    server: { ca: read(paths.pki.caCert), cert: read(paths.pki.serverCert), key: read(paths.pki.serverKey) },
    agent: { ca: read(paths.pki.caCert), cert: read(paths.pki.agentCert), key: read(paths.pki.agentKey) },
  };
})();

/** ControlPlane is one mutual-TLS listener playing a control-plane replica: it welcomes every hello. */
interface ControlPlane {
  url: string;
  /** What each connection received, in connection order. */
  connections: unknown[][];
  sockets: WebSocket[];
  close(): Promise<void>;
}

async function controlPlane(): Promise<ControlPlane> {
  const { server: tls } = await pki;
  const server: Server = createServer({ ...tls, requestCert: true, rejectUnauthorized: true });
  const wss = new WebSocketServer({ server, path: '/v1/agent' });
  const connections: unknown[][] = [];
  const sockets: WebSocket[] = [];
  wss.on('connection', (ws) => {
    const received: unknown[] = [];
    connections.push(received);
    sockets.push(ws);
    ws.on('message', (d) => {
      const m = JSON.parse(d.toString()) as { type: string };
      received.push(m);
      if (m.type === 'hello') ws.send(JSON.stringify({ type: 'welcome', protocol: PROTOCOL_VERSION }));
    });
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const { port } = server.address() as { port: number };
  return {
    url: `wss://127.0.0.1:${port}/v1/agent`,
    connections,
    sockets,
    close: () => {
      for (const c of wss.clients) c.terminate();
      wss.close();
      return new Promise((r) => server.close(() => r()));
    },
  };
}

/** deadUrl is a wss URL on a loopback port nothing listens on (bound, then released). */
async function deadUrl(): Promise<string> {
  const s = createTcpServer();
  s.listen(0, '127.0.0.1');
  await once(s, 'listening');
  const { port } = s.address() as { port: number };
  await new Promise((r) => s.close(r));
  return `wss://127.0.0.1:${port}/v1/agent`;
}

async function until(what: string, cond: () => boolean, ms = 10_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(10);
  }
}

test('an unreachable URL is skipped for the next; the replay and queued reports follow the welcome there', async () => {
  const dead = await deadUrl();
  const a = await controlPlane();
  const channel = new ControlChannel([dead, a.url], (await pki).agent, () => ({ hello, replay: [ended] }), () => 1);
  const dialed: string[] = [];
  channel.on('dialing', (u: string) => dialed.push(u));
  channel.on('dial-error', () => {});
  channel.send(started);
  try {
    channel.connect();
    await once(channel, 'open');
    assert.equal(channel.url, a.url);
    assert.deepEqual(dialed, [dead, a.url]);
    await until('the replay', () => (a.connections[0]?.length ?? 0) >= 3);
    assert.deepEqual(a.connections[0], [hello, ended, started]);
  } finally {
    channel.close();
    await a.close();
  }
});

test('a channel that closes fails over to the next URL, in turn, wrapping around; each welcome gets the replay', async () => {
  const a = await controlPlane();
  const b = await controlPlane();
  const channel = new ControlChannel([a.url, b.url], (await pki).agent, () => ({ hello, replay: [ended] }), () => 1);
  const dialed: string[] = [];
  channel.on('dialing', (u: string) => dialed.push(u));
  try {
    channel.connect();
    await once(channel, 'open');
    assert.equal(channel.url, a.url);
    // A goes away mid-channel (a replica crash): B next, and B hears the hello and the replay.
    a.sockets[0]!.terminate();
    await once(channel, 'open');
    assert.equal(channel.url, b.url);
    channel.send(started);
    await until('the replay on B', () => (b.connections[0]?.length ?? 0) >= 3);
    // Sent while welcomed (protocol 5): as a job.report.
    assert.deepEqual(b.connections[0], [hello, ended, { type: 'job.report', jobId: 'job_ffffffffffffffffffff', started: { cellId: '0123456789', timings: { take_ms: 1 } } }]);
    // B closes too (a clean close this time): round to A again.
    b.sockets[0]!.close(1001, 'going away');
    await once(channel, 'open');
    assert.equal(channel.url, a.url);
    assert.deepEqual(dialed, [a.url, b.url, a.url]);
    await until('the replay on A', () => (a.connections[1]?.length ?? 0) >= 2);
    assert.deepEqual(a.connections[1], [hello, ended]);
  } finally {
    channel.close();
    await a.close();
    await b.close();
  }
});

test('with every URL down, the dials go round the list with a doubling backoff, and connect once one is up', async () => {
  const [d1, d2] = [await deadUrl(), await deadUrl()];
  const channel = new ControlChannel([d1, d2], (await pki).agent, () => ({ hello, replay: [] }), () => 1);
  const dialed: Array<[string, number]> = [];
  channel.on('dialing', (u: string) => dialed.push([u, performance.now()]));
  channel.on('dial-error', () => {});
  try {
    channel.connect();
    await until('five dials', () => dialed.length >= 5);
    assert.deepEqual(dialed.map(([u]) => u), [d1, d2, d1, d2, d1]);
    const gaps = dialed.slice(1).map(([, t], i) => t - dialed[i]![1]);
    // 100, 200, 400, 800 ms (jitter fixed at 1 here), each at least its backoff and less than the next one's.
    gaps.forEach((g, i) => {
      const backoff = 100 * 2 ** i;
      assert.ok(g >= backoff - 5 && g < backoff * 2 + 100, `gap ${i} of ${Math.round(g)} ms for a backoff of ${backoff} ms`);
    });
  } finally {
    channel.close();
  }
  // The jitter scales each wait (by [0.5, 1) by default): half the first backoff here.
  const quick = new ControlChannel([d1], (await pki).agent, () => ({ hello, replay: [] }), () => 0.5);
  quick.on('dial-error', () => {});
  const times: number[] = [];
  quick.on('dialing', () => times.push(performance.now()));
  try {
    quick.connect();
    await until('three dials', () => times.length >= 3);
    assert.ok(times[1]! - times[0]! < 100, 'half of the first backoff');
  } finally {
    quick.close();
  }
});
