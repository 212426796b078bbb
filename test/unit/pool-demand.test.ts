// The demand-sized warm pool: its target follows the peak of starts within one prepare interval, within min and max.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { PoolDemand } from '../../src/agent/cells/pool-demand.js';

test('no demand keeps the minimum; a fixed pool stays fixed', () => {
  const d = new PoolDemand(60_000);
  assert.equal(d.size(2, 10, 0).target, 2);
  assert.match(d.size(2, 10, 0).reason, /minimum 2/);
  for (let i = 0; i < 50; i++) d.started(1000 + i);
  assert.deepEqual(d.size(3, 3, 2000), { target: 3, reason: 'fixed at 3' });
});

test('a burst sizes the pool to absorb the same burst again, capped at the maximum', () => {
  const d = new PoolDemand(60_000);
  d.prepared(400); // one prepare ≈ 400 ms: counted in windows of at least 1 s
  for (let i = 0; i < 30; i++) d.started(10_000 + i * 10); // 30 starts in 0.3 s
  assert.equal(d.size(2, 100, 11_000).target, 30);
  assert.match(d.size(2, 100, 11_000).reason, /peak 30 starts within one prepare \(1000 ms\)/);
  assert.equal(d.size(2, 20, 11_000).target, 20);
  assert.match(d.size(2, 20, 11_000).reason, /maximum 20/);
});

test('a steady rate needs rate × prepare time cells; slower prepares need more', () => {
  const d = new PoolDemand(60_000);
  for (let t = 0; t < 20_000; t += 100) d.started(t); // 10 starts/s
  d.prepared(1000);
  assert.equal(d.size(1, 100, 20_000).target, 10);
  for (let i = 0; i < 30; i++) d.prepared(3000); // the estimate follows slower prepares
  assert.ok(d.size(1, 100, 20_000).target >= 28, String(d.size(1, 100, 20_000).target));
});

test('demand ages out of the window and the target falls back to the minimum', () => {
  const d = new PoolDemand(10_000);
  for (let i = 0; i < 40; i++) d.started(i);
  assert.equal(d.size(2, 100, 100).target, 40);
  assert.equal(d.size(2, 100, 10_100).target, 2);
});
