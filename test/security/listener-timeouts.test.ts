// Every connection to the API and data listeners is bounded (config control.timeouts, shortened here): a client that never
// completes TLS, trickles its headers (slow-loris), says nothing, or trickles a body it is not authorized to send is cut off
// within its deadline, with a 408 in the error shape once HTTP has begun. What legitimately takes long still works: an
// authorized upload slower than the request deadline, and followed jobs silent for longer than every deadline.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { connect as tcpConnect } from 'node:net';
import type { TLSSocket } from 'node:tls';
import { TIMEOUT_CHECK_INTERVAL_MS } from '../../src/control/api/listener.js';
import type { OutputChunk } from '../../src/sdk/client.js';
import { TestCluster } from '../support/cluster.js';
import { rawExchange, type RawExchange, type RawTarget } from '../support/raw-http.js';

const T = { tlsHandshakeMs: 1500, headersMs: 1500, requestMs: 2500, uploadIdleMs: 1500, keepAliveMs: 2000 };
/** SLACK_MS allows for a loaded 2-core host (other clusters run here too). */
const SLACK_MS = 1500;

let cluster: TestCluster;
let ports: Array<[name: string, target: RawTarget]>;

before(async () => {
  cluster = await TestCluster.start({ config: { control: { timeouts: T }, data: { maxObjectMiB: 8 }, agent: { pool: [{ runtime: 'runc', class: 'small', warm: 2 }] } } });
  const u = new URL(cluster.url);
  ports = [
    ['api', { host: u.hostname, port: Number(u.port), ca: cluster.ca }],
    ['data', { host: u.hostname, port: cluster.dataPort, ca: cluster.ca }],
  ];
});
after(async () => {
  await cluster?.stop();
});

const onBothPorts = (f: (name: string, target: RawTarget) => Promise<void>) => Promise.all(ports.map(([name, target]) => f(name, target)));

function assertWithin(ms: number, low: number, high: number, what: string): void {
  assert.ok(ms >= low && ms <= high, `${what}: ${ms} ms, expected ${low}–${high}`);
}

function assert408(x: RawExchange, what: string): void {
  assert.ok(x.closed, `${what}: the connection stays open`);
  const r = x.responses[0];
  assert.ok(r, `${what}: no response before the close (${x.error ?? 'no error'})`);
  assert.equal(r.status, 408, `${what}: ${r.body.toString()}`);
  assert.equal((JSON.parse(r.body.toString()) as { error: { code: string } }).error.code, 'request_timeout');
}

/** trickle writes `head`, then one byte of `rest` every `everyMs` until the connection closes. */
function trickle(head: string, rest: string, everyMs: number): (s: TLSSocket) => void {
  return (s) => {
    s.write(head);
    let i = 0;
    const t = setInterval(() => (s.writable && i < rest.length ? s.write(rest[i++]!) : clearInterval(t)), everyMs);
    s.once('close', () => clearInterval(t));
  };
}

test('a TCP connection that never completes TLS is dropped within tlsHandshakeMs, on both ports', async () => {
  const hang = (port: number, bytes: Buffer | null) =>
    new Promise<number>((resolve, reject) => {
      const started = Date.now();
      const s = tcpConnect(port, '127.0.0.1', () => bytes && s.write(bytes));
      s.on('error', () => {});
      s.on('close', () => resolve(Date.now() - started));
      setTimeout(() => reject(new Error(`port ${port}: still open after ${T.tlsHandshakeMs + 10_000} ms`)), T.tlsHandshakeMs + 10_000).unref();
    });
  await onBothPorts(async (name, t) => {
    // Silent, and the start of a ClientHello record that never completes.
    const [silent, partial] = await Promise.all([hang(t.port, null), hang(t.port, Buffer.from([0x16, 0x03, 0x01, 0x02, 0x00, 0x01]))]);
    assertWithin(silent, T.tlsHandshakeMs - 100, T.tlsHandshakeMs + SLACK_MS, `${name}: silent TCP client`);
    assertWithin(partial, T.tlsHandshakeMs - 100, T.tlsHandshakeMs + SLACK_MS, `${name}: partial ClientHello`);
  });
});

test('slow-loris headers, and a TLS client that sends nothing, get 408 request_timeout within headersMs, on both ports', async () => {
  const bound = T.headersMs + TIMEOUT_CHECK_INTERVAL_MS + SLACK_MS;
  await onBothPorts(async (name, t) => {
    const [loris, silent] = await Promise.all([
      rawExchange(t, trickle('GET /v1/health HTTP/1.1\r\nhost: localhost\r\n', `x-slow: ${'a'.repeat(200)}\r\n\r\n`, 50), { timeoutMs: bound + 5000 }),
      rawExchange(t, () => {}, { timeoutMs: bound + 5000 }),
    ]);
    assert408(loris, `${name}: slow-loris`);
    assertWithin(loris.elapsedMs, T.headersMs - 100, bound, `${name}: slow-loris cut off after`);
    assert408(silent, `${name}: silent client`);
    assertWithin(silent.elapsedMs, T.headersMs - 100, bound, `${name}: silent client cut off after`);
  });
});

test('a trickled body not authorized as an upload is cut off at requestMs: a JSON body (408), an upload without a credential (401 at once)', async () => {
  const bound = T.requestMs + TIMEOUT_CHECK_INTERVAL_MS + SLACK_MS;
  const json = `POST /v1/jobs HTTP/1.1\r\nhost: localhost\r\nauthorization: Bearer ${cluster.apiKey}\r\ncontent-type: application/json\r\ncontent-length: 400\r\n\r\n`;
  const upload = 'PUT /v1/data/objects/slow/anonymous HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/octet-stream\r\ncontent-length: 400\r\n\r\n';
  const [jsonBody, ...uploads] = await Promise.all([
    rawExchange(ports[0]![1], trickle(json, `{"command":["${'x'.repeat(380)}"]}`, 50), { timeoutMs: bound + 5000 }),
    ...ports.map(([, t]) => rawExchange(t, trickle(upload, 'y'.repeat(400), 50), { timeoutMs: bound + 5000 })),
  ]);
  assert408(jsonBody!, 'slow JSON body');
  assertWithin(jsonBody!.elapsedMs, T.requestMs - 100, bound, 'slow JSON body cut off after');
  for (const [i, x] of uploads.entries()) {
    // The refusal comes before the body is read; the rest is read and discarded, but only until the deadline.
    assert.deepEqual(x.responses.map((r) => r.status), [401], `upload ${i}`);
    assert.ok(x.closed, `upload ${i}: the connection stays open`);
    assertWithin(x.elapsedMs, T.requestMs - 100, bound, `unauthorized slow upload ${i} cut off after`);
  }
});

test('an authorized upload slower than requestMs completes, on both ports; one that stalls is dropped after uploadIdleMs with a 408', async () => {
  await onBothPorts(async (name, t) => {
    const body = randomBytes(24 * 8192);
    const key = `slow/${name}`;
    const head = `PUT /v1/data/objects/${key} HTTP/1.1\r\nhost: localhost\r\nauthorization: Bearer ${cluster.apiKey}\r\ncontent-type: application/octet-stream\r\ncontent-length: ${body.length}\r\n\r\n`;
    const slow = await rawExchange(
      t,
      (s) => {
        s.write(head);
        let i = 0;
        const tick = setInterval(() => (s.writable && i < 24 ? s.write(body.subarray(i++ * 8192, i * 8192)) : clearInterval(tick)), 200);
        s.once('close', () => clearInterval(tick));
      },
      { stopAfter: 1, timeoutMs: 30_000 },
    );
    assert.ok(slow.elapsedMs > T.requestMs + TIMEOUT_CHECK_INTERVAL_MS, `${name}: the upload took only ${slow.elapsedMs} ms: it does not test the deadline`);
    const r = slow.responses[0];
    assert.equal(r?.status, 201, `${name}: ${r?.body.toString() ?? slow.error}`);
    assert.equal((JSON.parse(r.body.toString()) as { sha256: string }).sha256, createHash('sha256').update(body).digest('hex'));

    let lastWrite = 0;
    const stalled = await rawExchange(
      t,
      (s) => {
        s.write(head.replace(key, `${key}-stalled`));
        s.write(body.subarray(0, 8192), () => (lastWrite = Date.now()));
      },
      { timeoutMs: T.uploadIdleMs + 10_000 },
    );
    assert408(stalled, `${name}: stalled upload`);
    assertWithin(Date.now() - lastWrite, T.uploadIdleMs - 100, T.uploadIdleMs + SLACK_MS + 1000, `${name}: stalled upload dropped after`);
    const gone = await cluster.client.raw('GET', `/v1/data/objects/${key}-stalled`);
    assert.equal(gone.status, 404, 'a stalled upload stored nothing');
  });
});

test('followed jobs silent for longer than every deadline stream to their end (POST ?follow=true and GET logs?follow=true)', async () => {
  const silentMs = T.requestMs + T.keepAliveMs + 1500;
  const command = ['sh', '-c', `sleep ${silentMs / 1000}; echo late`];
  const text = (chunks: OutputChunk[]) => Buffer.concat(chunks.map((c) => c.data)).toString();
  const created: OutputChunk[] = [];
  const followed: OutputChunk[] = [];
  const [viaCreate, viaLogs] = await Promise.all([
    cluster.client.runJob({ command, timeoutSeconds: 30 }, (c) => created.push(c)),
    cluster.client.createJob({ command, timeoutSeconds: 30 }).then((j) => cluster.client.followLogs(j.id, (c) => followed.push(c))),
  ]);
  assert.equal(viaCreate.status, 'succeeded');
  assert.equal(text(created).trim(), 'late');
  assert.equal(viaLogs.status, 'succeeded');
  assert.equal(text(followed).trim(), 'late');
});

test('an idle kept-alive connection is closed after keepAliveMs, which responses advertise', async () => {
  await onBothPorts(async (name, t) => {
    const x = await rawExchange(t, Buffer.from('GET /.well-known/jwks.json HTTP/1.1\r\nhost: localhost\r\n\r\n'), { timeoutMs: T.keepAliveMs + 10_000 });
    assert.equal(x.responses[0]?.status, 200, name);
    assert.equal(x.responses[0]?.headers['keep-alive'], `timeout=${T.keepAliveMs / 1000}`);
    // Node keeps the socket 1 s past the advertised timeout, so that a client reusing it at the last moment is not reset.
    assertWithin(x.elapsedMs, T.keepAliveMs - 100, T.keepAliveMs + 1000 + SLACK_MS, `${name}: idle kept-alive connection closed after`);
  });
});
