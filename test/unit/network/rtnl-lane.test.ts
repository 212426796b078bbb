// RtnlLane: one call at a time, in call order, and a failure does not stall the lane.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { RtnlLane } from '../../../src/agent/network/netlink/rtnl-lane.js';

test('runs one call at a time, in order, and survives a failed call', async () => {
  const lane = new RtnlLane();
  const order: string[] = [];
  let inFlight = 0;
  let most = 0;
  const call = (name: string, fail = false) => async () => {
    inFlight++;
    most = Math.max(most, inFlight);
    order.push(name);
    await new Promise((r) => setTimeout(r, 5));
    inFlight--;
    if (fail) throw new Error(name);
    return name;
  };
  const results = await Promise.allSettled([
    lane.run(call('first')),
    lane.run(call('prepare-1', true)),
    lane.run(call('prepare-2')),
    lane.run(call('wipe')),
  ]);
  assert.equal(most, 1);
  assert.deepEqual(order, ['first', 'prepare-1', 'prepare-2', 'wipe']);
  assert.deepEqual(results.map((r) => r.status), ['fulfilled', 'rejected', 'fulfilled', 'fulfilled']);
  assert.equal(await lane.run(call('after')), 'after');
});
