/** At-rest encryption for the object store: AES-256-GCM envelope keys and a chunked, streaming object format. */
import { createCipheriv, createDecipheriv } from 'node:crypto';
import { pooledRandomBytes } from './random-pool.js';
import { Transform } from 'node:stream';

const KEY_BYTES = 32;
const NONCE_BYTES = 12;
const TAG_BYTES = 16;
const WRAP_VERSION = 0x01;
const WRAPPED_BYTES = 1 + NONCE_BYTES + KEY_BYTES + TAG_BYTES;
const MAGIC = Buffer.from('CRO1', 'latin1');
const CHUNK_BYTES = 65536;
const HEADER_BYTES = MAGIC.length + 4;
const RECORD_BYTES = CHUNK_BYTES + TAG_BYTES;

/** EnvelopeError reports a malformed, tampered, truncated or misattributed key or object. */
export class EnvelopeError extends Error {
  override name = 'EnvelopeError';
}

/** newDataKey returns a fresh random 32-byte AES-256 key. */
export function newDataKey(): Buffer {
  return pooledRandomBytes(KEY_BYTES);
}

/** wrapKey encrypts a 32-byte key under a 32-byte key-encryption key, bound to its owner by `context`. */
export function wrapKey(kek: Buffer, key: Buffer, context: string): Buffer {
  requireKey(kek, 'key-encryption key');
  requireKey(key, 'key to wrap');
  const nonce = pooledRandomBytes(NONCE_BYTES);
  const cipher = createCipheriv('aes-256-gcm', kek, nonce, { authTagLength: TAG_BYTES });
  cipher.setAAD(Buffer.from(context, 'utf8'));
  return Buffer.concat([Buffer.of(WRAP_VERSION), nonce, cipher.update(key), cipher.final(), cipher.getAuthTag()]);
}

/** unwrapKey reverses wrapKey, throwing EnvelopeError unless kek, context and bytes are all authentic. */
export function unwrapKey(kek: Buffer, wrapped: Buffer, context: string): Buffer {
  requireKey(kek, 'key-encryption key');
  if (wrapped.length !== WRAPPED_BYTES || wrapped[0] !== WRAP_VERSION) throw new EnvelopeError('malformed wrapped key');
  const body = 1 + NONCE_BYTES;
  const decipher = createDecipheriv('aes-256-gcm', kek, wrapped.subarray(1, body), { authTagLength: TAG_BYTES });
  decipher.setAAD(Buffer.from(context, 'utf8'));
  decipher.setAuthTag(wrapped.subarray(body + KEY_BYTES));
  const key = decipher.update(wrapped.subarray(body, body + KEY_BYTES));
  try {
    decipher.final();
  } catch {
    key.fill(0);
    throw new EnvelopeError('wrapped key failed authentication (wrong key-encryption key or context, or tampered)');
  }
  return key;
}

/** sealedSize is the exact number of bytes createSealStream produces for `plainBytes` of plaintext. */
export function sealedSize(plainBytes: number): number {
  if (!Number.isSafeInteger(plainBytes) || plainBytes < 0) throw new RangeError(`invalid plaintext size: ${plainBytes}`);
  return HEADER_BYTES + plainBytes + TAG_BYTES * Math.max(1, Math.ceil(plainBytes / CHUNK_BYTES));
}

/** createSealStream encrypts an object in constant memory; nonces are chunk counters, so never reuse a dek for two seals. */
export function createSealStream(dek: Buffer, objectId: string): Transform {
  requireKey(dek, 'data key');
  const idPrefix = Buffer.from(objectId + '\0', 'utf8');
  const held = new HeldBlocks(CHUNK_BYTES);
  let index = 0;
  const sealChunk = (out: Transform, plain: Buffer, final: boolean): void => {
    const cipher = createCipheriv('aes-256-gcm', dek, chunkNonce(index), { authTagLength: TAG_BYTES });
    cipher.setAAD(chunkAad(idPrefix, index, final));
    const ciphertext = cipher.update(plain);
    cipher.final();
    if (ciphertext.length > 0) out.push(ciphertext);
    out.push(cipher.getAuthTag());
    index++;
  };
  const stream = new Transform({
    transform(data: Buffer, _encoding, done) {
      held.push(data, (plain) => sealChunk(this, plain, false));
      done();
    },
    flush(done) {
      sealChunk(this, held.rest(), true);
      done();
    },
    destroy(err, done) {
      held.wipe();
      done(err);
    },
  });
  const header = Buffer.alloc(HEADER_BYTES);
  MAGIC.copy(header);
  header.writeUInt32LE(CHUNK_BYTES, MAGIC.length);
  stream.push(header);
  return stream;
}

/** createOpenStream decrypts a sealed object, emitting only authenticated plaintext and failing with EnvelopeError. */
export function createOpenStream(dek: Buffer, objectId: string): Transform {
  requireKey(dek, 'data key');
  const idPrefix = Buffer.from(objectId + '\0', 'utf8');
  const header = Buffer.alloc(HEADER_BYTES);
  let headerFill = 0;
  const held = new HeldBlocks(RECORD_BYTES);
  let index = 0;
  const openChunk = (out: Transform, record: Buffer, final: boolean): void => {
    if (record.length < TAG_BYTES) throw new EnvelopeError('sealed object is truncated');
    const split = record.length - TAG_BYTES;
    const decipher = createDecipheriv('aes-256-gcm', dek, chunkNonce(index), { authTagLength: TAG_BYTES });
    decipher.setAAD(chunkAad(idPrefix, index, final));
    decipher.setAuthTag(record.subarray(split));
    const plain = decipher.update(record.subarray(0, split));
    try {
      decipher.final();
    } catch {
      plain.fill(0);
      throw new EnvelopeError(`sealed object chunk ${index} failed authentication (wrong key or object, or tampered)`);
    }
    if (plain.length > 0) out.push(plain);
    index++;
  };
  return new Transform({
    transform(data: Buffer, _encoding, done) {
      try {
        if (headerFill < HEADER_BYTES) {
          const n = data.copy(header, headerFill);
          headerFill += n;
          data = data.subarray(n);
          if (headerFill === HEADER_BYTES) checkHeader(header);
        }
        held.push(data, (record) => openChunk(this, record, false));
        done();
      } catch (err) {
        done(err as Error);
      }
    },
    flush(done) {
      try {
        if (headerFill < HEADER_BYTES) throw new EnvelopeError('sealed object is truncated (incomplete header)');
        openChunk(this, held.rest(), true);
        done();
      } catch (err) {
        done(err as Error);
      }
    },
  });
}

function checkHeader(header: Buffer): void {
  if (!header.subarray(0, MAGIC.length).equals(MAGIC)) throw new EnvelopeError('not a sealed object (bad magic)');
  const chunkBytes = header.readUInt32LE(MAGIC.length);
  if (chunkBytes !== CHUNK_BYTES) throw new EnvelopeError(`unsupported chunk size ${chunkBytes}`);
}

function requireKey(key: Buffer, what: string): void {
  if (key.length !== KEY_BYTES) throw new EnvelopeError(`${what} must be ${KEY_BYTES} bytes, got ${key.length}`);
}

function chunkNonce(index: number): Buffer {
  const nonce = Buffer.alloc(NONCE_BYTES);
  nonce.writeBigUInt64BE(BigInt(index), NONCE_BYTES - 8);
  return nonce;
}

function chunkAad(idPrefix: Buffer, index: number, final: boolean): Buffer {
  const aad = Buffer.alloc(idPrefix.length + 9);
  idPrefix.copy(aad);
  aad.writeBigUInt64BE(BigInt(index), idPrefix.length);
  aad[idPrefix.length + 8] = final ? 1 : 0;
  return aad;
}

/** HeldBlocks cuts a byte stream into fixed-size blocks, holding back the last one until more bytes prove it is not final. */
class HeldBlocks {
  private readonly block: Buffer;
  private fill = 0;

  constructor(size: number) {
    this.block = Buffer.alloc(size);
  }

  /** push consumes `data`, passing each block known not to be last to `emit`, which must use it synchronously. */
  push(data: Buffer, emit: (block: Buffer) => void): void {
    const size = this.block.length;
    let offset = 0;
    while (offset < data.length) {
      if (this.fill === size) {
        emit(this.block);
        this.fill = 0;
      }
      if (this.fill === 0 && data.length - offset > size) {
        emit(data.subarray(offset, offset + size));
        offset += size;
        continue;
      }
      const n = data.copy(this.block, this.fill, offset);
      this.fill += n;
      offset += n;
    }
  }

  /** rest returns the held final block, possibly empty. */
  rest(): Buffer {
    return this.block.subarray(0, this.fill);
  }

  /** wipe zeroes the held bytes. */
  wipe(): void {
    this.block.fill(0);
  }
}
