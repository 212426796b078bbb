// Small parts of the e2b layer: the streaming multipart reader, URL signatures (checked against the SDK's own
// getSignature), per-sandbox access tokens, and the Connect end-stream envelope.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { Readable, Writable } from 'node:stream';
import { ServerResponse, IncomingMessage } from 'node:http';
import { Socket } from 'node:net';
import { getSignature } from 'e2b';
import { boundaryOf, MultipartReader } from '../../src/control/api/e2b/multipart-reader.js';
import { EnvdTokens, signature } from '../../src/control/api/e2b/envd-tokens.js';
import { ConnectStream } from '../../src/control/api/e2b/connect-protocol.js';
import { ConnectError } from '../../src/control/api/e2b/e2b-errors.js';
import { homePath } from '../../src/control/api/e2b/envd-paths.js';

async function* chunked(buf: Buffer, sizes: () => number): AsyncGenerator<Buffer> {
  for (let i = 0; i < buf.length; ) {
    const n = Math.max(1, sizes());
    yield buf.subarray(i, i + n);
    i += n;
  }
}

async function collect(r: Readable): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const c of r) parts.push(c as Buffer);
  return Buffer.concat(parts);
}

test('multipart: parts and their bytes survive any chunking, including a boundary split across chunks', async () => {
  const boundary = '----formdata-undici-0123456789';
  const a = randomBytes(100_000);
  // A part whose data holds a near-delimiter: CRLF + "--" + most of the boundary.
  const b = Buffer.concat([Buffer.from(`x\r\n--${boundary.slice(0, -1)}y`), randomBytes(1000)]);
  const body = Buffer.concat([
    Buffer.from(`preamble\r\n--${boundary}\r\nContent-Disposition: form-data; name="file"; filename="/work/a.bin"\r\nContent-Type: application/octet-stream\r\n\r\n`),
    a,
    Buffer.from(`\r\n--${boundary}\r\nContent-Disposition: form-data; name="file"; filename="rel \\"q\\".txt"\r\n\r\n`),
    b,
    Buffer.from(`\r\n--${boundary}--\r\n`),
  ]);
  assert.equal(boundaryOf(`multipart/form-data; boundary=${boundary}`), boundary);
  assert.equal(boundaryOf('application/octet-stream'), null);
  for (const sizes of [() => 1 + Math.floor(Math.random() * 7), () => 65536, () => 1 + Math.floor(Math.random() * 5000)]) {
    const reader = new MultipartReader(chunked(body, sizes), boundary);
    const one = await reader.next();
    assert.deepEqual(one, { name: 'file', filename: '/work/a.bin' });
    assert.ok((await collect(reader.data())).equals(a));
    const two = await reader.next();
    assert.deepEqual(two, { name: 'file', filename: 'rel "q".txt' });
    assert.ok((await collect(reader.data())).equals(b));
    assert.equal(await reader.next(), null);
  }
});

test('multipart: a body cut short is refused, not taken as a whole file', async () => {
  const boundary = 'B';
  const body = Buffer.from(`--B\r\nContent-Disposition: form-data; name="file"; filename="f"\r\n\r\npartial`);
  const reader = new MultipartReader(chunked(body, () => 3), boundary);
  await reader.next();
  await assert.rejects(collect(reader.data()), (e: unknown) => e instanceof ConnectError && e.code === 'invalid_argument');
});

test("URL signatures are the SDK's own; tokens are per sandbox, stable, checked exactly; an expired signature fails", async () => {
  const tokens = new EnvdTokens(async (ws) => Buffer.alloc(32, ws.length));
  const job = { id: 'sbx_1', workspaceId: 'ws_a', createdAt: '2026-12-05T00:00:00.000Z' };
  const t = await tokens.tokenFor(job);
  assert.equal(await tokens.tokenFor(job), t);
  assert.notEqual(await tokens.tokenFor({ ...job, id: 'sbx_2' }), t);
  assert.notEqual(await tokens.tokenFor({ ...job, workspaceId: 'ws_bb' }), t);
  assert.equal(await tokens.check(job, t), true);
  assert.equal(await tokens.check(job, `${t}x`), false);
  assert.equal(await tokens.check(job, undefined), false);
  const sdk = await getSignature({ path: '/work/a.txt', operation: 'read', user: undefined, envdAccessToken: t });
  assert.equal(signature('/work/a.txt', 'read', '', t, null), sdk.signature);
  assert.equal(await tokens.checkSignature(job, { path: '/work/a.txt', operation: 'read', user: '', signature: sdk.signature, expiration: null }), true);
  assert.equal(await tokens.checkSignature(job, { path: '/work/a.txt', operation: 'write', user: '', signature: sdk.signature, expiration: null }), false);
  const timed = await getSignature({ path: 'p', operation: 'write', user: 'user', expirationInSeconds: 60, envdAccessToken: t });
  const claim = { path: 'p', operation: 'write' as const, user: 'user', signature: timed.signature, expiration: String(timed.expiration) };
  assert.equal(await tokens.checkSignature(job, claim), true);
  assert.equal(await tokens.checkSignature(job, claim, Date.now() + 120_000), false);
});

test('a Connect stream ends with the end-stream envelope (flag 2), carrying the error when there is one', () => {
  const written: Buffer[] = [];
  const res = new ServerResponse(new IncomingMessage(new Socket()));
  const sink = new Writable({ write: (c: Buffer, _e, cb) => (written.push(Buffer.from(c)), cb()) });
  res.assignSocket(sink as unknown as Socket);
  const s = new ConnectStream(res, {}, 50);
  s.send({ event: { start: { pid: 7 } } });
  s.end(new ConnectError('not_found', 'gone'));
  const raw = Buffer.concat(written).toString('latin1');
  const body = Buffer.from(raw.slice(raw.indexOf('\r\n\r\n') + 4), 'latin1');
  // Chunked framing around the envelopes: find them by their JSON.
  const i = body.indexOf('{"event"');
  assert.equal(body[i - 5], 0);
  const j = body.indexOf('{"error"');
  assert.equal(body[j - 5], 2);
  assert.deepEqual(JSON.parse(body.subarray(j, j + body.readUInt32BE(j - 4)).toString()), { error: { code: 'not_found', message: 'gone' } });
});

test('paths: relative and ~ resolve under /work; NUL is refused', () => {
  assert.equal(homePath('a.txt'), '/work/a.txt');
  assert.equal(homePath('~/d/../b'), '/work/b');
  assert.equal(homePath('/etc/x'), '/etc/x');
  assert.equal(homePath(''), '/work');
  assert.throws(() => homePath('a\0b'), ConnectError);
});
