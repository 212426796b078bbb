/**
 * pooledRandomBytes hands out bytes of Node's CSPRNG (crypto.randomFillSync: OpenSSL's RAND_bytes, a DRBG the kernel
 * seeds) from a pool refilled POOL_BYTES at a time, as Node's randomUUID does with its own cache: a call into the crypto
 * binding costs about as much for 12 bytes as for 4 KiB, and a job takes several small draws (its id, its data key, the
 * nonces of its sealed fields and output). Each draw is copied into an ArrayBuffer of its own (Buffer.allocUnsafeSlow:
 * never a slice of Node's shared Buffer slab, which other buffers' `.buffer` would expose and keep alive) and its bytes
 * in the pool are zeroed at once, so a key drawn here is held only by its caller.
 */
import { randomFillSync } from 'node:crypto';

/** POOL_BYTES is the size of one refill. */
const POOL_BYTES = 4096;
/** MAX_POOLED_BYTES is the largest draw served from the pool (larger ones go to randomFillSync directly). */
const MAX_POOLED_BYTES = 256;

const pool = Buffer.alloc(POOL_BYTES);
let offset = POOL_BYTES;

/** pooledRandomBytes returns `n` fresh random bytes in a buffer of their own (its own ArrayBuffer, of exactly n bytes). */
export function pooledRandomBytes(n: number): Buffer {
  const out = Buffer.allocUnsafeSlow(n);
  if (n > MAX_POOLED_BYTES) return randomFillSync(out);
  if (offset + n > POOL_BYTES) {
    randomFillSync(pool);
    offset = 0;
  }
  pool.copy(out, 0, offset, offset + n);
  pool.fill(0, offset, offset + n);
  offset += n;
  return out;
}
