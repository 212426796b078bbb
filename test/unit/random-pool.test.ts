// pooledRandomBytes: fresh bytes of the asked length in a buffer of their own, never the same draw twice, across refills.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { pooledRandomBytes } from '../../src/control/data/random-pool.js';

test('draws are of the asked length, distinct across many refills, and independent of each other', () => {
  const seen = new Set<string>();
  for (let i = 0; i < 5000; i++) {
    const b = pooledRandomBytes(12 + (i % 21));
    assert.equal(b.length, 12 + (i % 21));
    seen.add(b.toString('hex'));
  }
  assert.equal(seen.size, 5000);
  const a = pooledRandomBytes(32);
  const copy = Buffer.from(a);
  pooledRandomBytes(32).fill(0);
  assert.deepEqual(a, copy, 'zeroing one draw leaves another alone');
  assert.equal(pooledRandomBytes(1000).length, 1000);
  // Each draw owns its memory: not a slice of Node's shared Buffer slab, nor of another draw's ArrayBuffer.
  const draws = [pooledRandomBytes(32), pooledRandomBytes(32), pooledRandomBytes(12), pooledRandomBytes(1000)];
  for (const d of draws) {
    assert.equal(d.byteOffset, 0);
    assert.equal(d.buffer.byteLength, d.length, 'an ArrayBuffer of the draw\'s own size');
  }
  assert.equal(new Set(draws.map((d) => d.buffer)).size, draws.length, 'no two draws share an ArrayBuffer');
  assert.notEqual(pooledRandomBytes(16).buffer, Buffer.from('a small sibling').buffer);
  assert.notDeepEqual(pooledRandomBytes(32), Buffer.alloc(32));
});
