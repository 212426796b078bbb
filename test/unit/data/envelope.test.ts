// At-rest envelope encryption: key wrapping, the chunked object format, and refusal of every kind of tampering.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createDecipheriv, randomBytes } from 'node:crypto';
import { Readable, type Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import {
  createOpenStream,
  createSealStream,
  EnvelopeError,
  newDataKey,
  sealedSize,
  unwrapKey,
  wrapKey,
} from '../../../src/control/data/envelope.js';

const CHUNK = 65536;
const HEADER = 8;
const RECORD = CHUNK + 16;
const ID = 'ws_1/obj_2';

async function run(pieces: Buffer[], stage: Transform, emitted: Buffer[] = []): Promise<Buffer> {
  await pipeline(Readable.from(pieces), stage, async (source: AsyncIterable<Buffer>) => {
    for await (const b of source) emitted.push(b);
  });
  return Buffer.concat(emitted);
}

const seal = (plain: Buffer[] | Buffer, dek: Buffer, id = ID) =>
  run(Array.isArray(plain) ? plain : [plain], createSealStream(dek, id));

const open = (sealed: Buffer, dek: Buffer, id = ID, emitted: Buffer[] = []) =>
  run([sealed], createOpenStream(dek, id), emitted);

/** Splits a buffer into pieces of the given sizes, repeating the pattern until it is used up. */
function split(buf: Buffer, sizes: number[]): Buffer[] {
  const pieces: Buffer[] = [];
  for (let offset = 0, i = 0; offset < buf.length; i++) {
    const size = sizes[i % sizes.length] ?? 1;
    pieces.push(buf.subarray(offset, offset + size));
    offset += size;
  }
  return pieces;
}

function record(sealed: Buffer, i: number): Buffer {
  return sealed.subarray(HEADER + i * RECORD, HEADER + (i + 1) * RECORD);
}

function flip(buf: Buffer, at: number): Buffer {
  const copy = Buffer.from(buf);
  copy[at] = (copy[at] ?? 0) ^ 0x01;
  return copy;
}

test('newDataKey returns distinct 32-byte keys', () => {
  const a = newDataKey();
  assert.equal(a.length, 32);
  assert.notDeepEqual(a, newDataKey());
});

test('wrapKey round-trips and has the documented layout', () => {
  const kek = newDataKey();
  const key = newDataKey();
  const wrapped = wrapKey(kek, key, 'workspace:ws_123');
  assert.equal(wrapped.length, 1 + 12 + 32 + 16);
  assert.equal(wrapped[0], 0x01);
  assert.equal(wrapped.includes(key), false);
  assert.deepEqual(unwrapKey(kek, wrapped, 'workspace:ws_123'), key);
  assert.notDeepEqual(wrapKey(kek, key, 'workspace:ws_123'), wrapped, 'nonce is random');
});

test('unwrapKey refuses the wrong context, the wrong kek, and any tampering', () => {
  const kek = newDataKey();
  const wrapped = wrapKey(kek, newDataKey(), 'object:ws_1/obj_2');
  assert.throws(() => unwrapKey(kek, wrapped, 'object:ws_1/obj_3'), EnvelopeError);
  assert.throws(() => unwrapKey(kek, wrapped, 'workspace:ws_1'), EnvelopeError);
  assert.throws(() => unwrapKey(newDataKey(), wrapped, 'object:ws_1/obj_2'), EnvelopeError);
  for (let i = 0; i < wrapped.length; i++) {
    assert.throws(() => unwrapKey(kek, flip(wrapped, i), 'object:ws_1/obj_2'), EnvelopeError, `byte ${i}`);
  }
  assert.throws(() => unwrapKey(kek, wrapped.subarray(0, -1), 'object:ws_1/obj_2'), EnvelopeError);
  assert.throws(() => unwrapKey(kek, Buffer.concat([wrapped, Buffer.of(0)]), 'object:ws_1/obj_2'), EnvelopeError);
  assert.throws(() => unwrapKey(kek.subarray(0, 16), wrapped, 'object:ws_1/obj_2'), EnvelopeError);
  assert.throws(() => wrapKey(kek, Buffer.alloc(16), 'x'), EnvelopeError);
});

test('sealedSize counts the header and one tag per chunk, with at least one chunk', () => {
  assert.equal(sealedSize(0), HEADER + 16);
  assert.equal(sealedSize(1), HEADER + 1 + 16);
  assert.equal(sealedSize(CHUNK), HEADER + RECORD);
  assert.equal(sealedSize(CHUNK + 1), HEADER + RECORD + 1 + 16);
  assert.throws(() => sealedSize(-1), RangeError);
  assert.throws(() => sealedSize(1.5), RangeError);
});

for (const size of [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK]) {
  test(`round trip of ${size} bytes`, async () => {
    const dek = newDataKey();
    const plain = randomBytes(size);
    const sealed = await seal(plain, dek);
    assert.equal(sealed.length, sealedSize(size));
    assert.equal(sealed.subarray(0, 4).toString('latin1'), 'CRO1');
    assert.equal(sealed.readUInt32LE(4), CHUNK);
    if (size >= 16) assert.equal(sealed.includes(plain.subarray(0, 16)), false);
    assert.ok((await open(sealed, dek)).equals(plain));
  });
}

test('round trip of ~5 MiB fed in odd-sized pieces, opened in odd-sized pieces', async () => {
  const dek = newDataKey();
  const plain = randomBytes(5 * 1024 * 1024 + 12345);
  const pieces = [...split(plain.subarray(0, 3_000_000), [1000]), ...split(plain.subarray(3_000_000), [200 * 1024, 7, 65537])];
  const sealed = await seal(pieces, dek);
  assert.equal(sealed.length, sealedSize(plain.length));
  assert.ok((await seal(plain, dek)).equals(sealed), 'output does not depend on how the input is split');
  const opened = await run(split(sealed, [999, 1, RECORD + 3, 200 * 1024]), createOpenStream(dek, ID));
  assert.ok(opened.equals(plain));
});

test('records follow the documented nonce and AAD layout, and wrapped keys the documented layout', async () => {
  const dek = newDataKey();
  const plain = randomBytes(2 * CHUNK + 5);
  const sealed = await seal(plain, dek);
  for (let i = 0; i < 3; i++) {
    const rec = sealed.subarray(HEADER + i * RECORD, Math.min(sealed.length, HEADER + (i + 1) * RECORD));
    const nonce = Buffer.alloc(12);
    nonce.writeBigUInt64BE(BigInt(i), 4);
    const tail = Buffer.alloc(9);
    tail.writeBigUInt64BE(BigInt(i));
    tail[8] = i === 2 ? 1 : 0;
    const d = createDecipheriv('aes-256-gcm', dek, nonce);
    d.setAAD(Buffer.concat([Buffer.from(ID + '\0'), tail]));
    d.setAuthTag(rec.subarray(-16));
    const chunk = Buffer.concat([d.update(rec.subarray(0, -16)), d.final()]);
    assert.ok(chunk.equals(plain.subarray(i * CHUNK, (i + 1) * CHUNK)), `chunk ${i}`);
  }
  const kek = newDataKey();
  const key = newDataKey();
  const wrapped = wrapKey(kek, key, 'workspace:ws_123');
  const d = createDecipheriv('aes-256-gcm', kek, wrapped.subarray(1, 13));
  d.setAAD(Buffer.from('workspace:ws_123'));
  d.setAuthTag(wrapped.subarray(45));
  assert.ok(Buffer.concat([d.update(wrapped.subarray(13, 45)), d.final()]).equals(key));
});

test('seal and open stream, holding back exactly one chunk', () => {
  const dek = newDataKey();
  const sealer = createSealStream(dek, ID);
  sealer.write(randomBytes(3 * CHUNK));
  assert.equal(sealer.readableLength, HEADER + 2 * RECORD);
  const opener = createOpenStream(dek, ID);
  opener.write(Buffer.concat([sealer.read() as Buffer, Buffer.alloc(1)]));
  assert.equal(opener.readableLength, 2 * CHUNK);
  opener.destroy();
  sealer.destroy();
});

test('opening fails with EnvelopeError on every kind of tampering', async (t) => {
  const dek = newDataKey();
  const plain = randomBytes(3 * CHUNK + 100);
  const sealed = await seal(plain, dek);
  assert.equal(sealed.length, HEADER + 3 * RECORD + 116);
  const last = sealed.subarray(HEADER + 3 * RECORD);
  const cases: Record<string, Buffer> = {
    'bad magic': flip(sealed, 0),
    'other chunk size': flip(sealed, 5),
    'flipped ciphertext byte': flip(sealed, HEADER + RECORD + 1234),
    'flipped ciphertext byte in final chunk': flip(sealed, HEADER + 3 * RECORD + 5),
    'flipped tag byte': flip(sealed, HEADER + RECORD - 1),
    'flipped final tag byte': flip(sealed, sealed.length - 16),
    'truncated at a chunk boundary': sealed.subarray(0, HEADER + 2 * RECORD),
    'dropped final chunk': sealed.subarray(0, HEADER + 3 * RECORD),
    'truncated inside a chunk': sealed.subarray(0, sealed.length - 1),
    'header only': sealed.subarray(0, HEADER),
    'partial header': sealed.subarray(0, 5),
    empty: Buffer.alloc(0),
    'swapped chunks': Buffer.concat([sealed.subarray(0, HEADER), record(sealed, 1), record(sealed, 0), sealed.subarray(HEADER + 2 * RECORD)]),
    'final chunk moved forward': Buffer.concat([sealed.subarray(0, HEADER), record(sealed, 0), last]),
    'appended byte': Buffer.concat([sealed, Buffer.of(0)]),
    'appended tag-sized block': Buffer.concat([sealed, Buffer.alloc(16)]),
    'final chunk repeated': Buffer.concat([sealed, last]),
  };
  for (const [name, bytes] of Object.entries(cases)) {
    await t.test(name, async () => {
      const emitted: Buffer[] = [];
      await assert.rejects(open(bytes, dek, ID, emitted), EnvelopeError);
      const out = Buffer.concat(emitted);
      assert.ok(out.equals(plain.subarray(0, out.length)), 'only authentic plaintext is emitted');
    });
  }
  await t.test('another objectId', () => assert.rejects(open(sealed, dek, 'ws_1/obj_3'), EnvelopeError));
  await t.test('another key', () => assert.rejects(open(sealed, newDataKey()), EnvelopeError));
  await t.test('the untampered object still opens', async () => assert.ok((await open(sealed, dek)).equals(plain)));
});

test('appending to an object whose final chunk is full or empty is detected', async () => {
  const dek = newDataKey();
  for (const size of [0, CHUNK, 2 * CHUNK]) {
    const sealed = await seal(randomBytes(size), dek);
    for (const extra of [Buffer.of(0), Buffer.alloc(16), sealed.subarray(HEADER)]) {
      await assert.rejects(open(Buffer.concat([sealed, extra]), dek), EnvelopeError, `size ${size} + ${extra.length}`);
    }
  }
});

test('tampering with a later chunk emits the authentic chunks before it and nothing after', async () => {
  const dek = newDataKey();
  const plain = randomBytes(4 * CHUNK);
  const opener = createOpenStream(dek, ID);
  const emitted: Buffer[] = [];
  opener.on('data', (b: Buffer) => emitted.push(b));
  const failed = new Promise((resolve) => opener.on('error', resolve));
  opener.write(flip(await seal(plain, dek), HEADER + 2 * RECORD + 10));
  assert.ok((await failed) instanceof EnvelopeError);
  assert.ok(Buffer.concat(emitted).equals(plain.subarray(0, 2 * CHUNK)));
});
