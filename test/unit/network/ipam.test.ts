// Unit tests for the cell address allocator.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Ipam, IpamError } from '../../../src/agent/network/ipam.js';

const code = (fn: () => unknown): string => {
  try {
    fn();
  } catch (e) {
    return e instanceof IpamError ? e.code : `other: ${String(e)}`;
  }
  return 'no error';
};

test('carves one /24 per workspace with the gateway at .1', () => {
  const ipam = new Ipam();
  assert.deepEqual(ipam.allocate('a'), { workspaceId: 'a', address: '10.88.0.2', gateway: '10.88.0.1', subnet: '10.88.0.0/24' });
  assert.equal(ipam.allocate('a').address, '10.88.0.3');
  assert.deepEqual(ipam.allocate('b'), { workspaceId: 'b', address: '10.88.1.2', gateway: '10.88.1.1', subnet: '10.88.1.0/24' });
});

test('refuses public and malformed pools and bad subnet sizes', () => {
  assert.equal(code(() => new Ipam({ pool: '8.8.0.0/16' })), 'PUBLIC_POOL');
  assert.equal(code(() => new Ipam({ pool: '10.0.0.0/7' })), 'PUBLIC_POOL');
  assert.equal(code(() => new Ipam({ pool: '10.88.0.1/16' })), 'INVALID_POOL');
  assert.equal(code(() => new Ipam({ pool: 'nope' })), 'INVALID_POOL');
  assert.equal(code(() => new Ipam({ pool: '10.88.0.0/24', subnetPrefix: 16 })), 'INVALID_POOL');
  assert.doesNotThrow(() => new Ipam({ pool: '172.20.0.0/16' }));
  assert.doesNotThrow(() => new Ipam({ pool: '100.64.0.0/16' }));
});

test('exhausts a subnet (never the network, gateway or broadcast address) and the pool', () => {
  const ipam = new Ipam({ pool: '192.168.0.0/28', subnetPrefix: 29 });
  assert.deepEqual([1, 2, 3, 4, 5].map(() => ipam.allocate('a').address), ['192.168.0.2', '192.168.0.3', '192.168.0.4', '192.168.0.5', '192.168.0.6']);
  assert.equal(code(() => ipam.allocate('a')), 'SUBNET_EXHAUSTED');
  assert.equal(ipam.allocate('b').gateway, '192.168.0.9');
  assert.equal(code(() => ipam.allocate('c')), 'POOL_EXHAUSTED');
});

test('reuses released addresses as late as possible and frees empty subnets', () => {
  const ipam = new Ipam({ pool: '10.1.0.0/16' });
  const first = ipam.allocate('a');
  ipam.allocate('a');
  ipam.release('a', first.address);
  assert.equal(ipam.allocate('a').address, '10.1.0.4', 'next-fit, not the just-released .2');
  const other = new Ipam({ pool: '10.1.0.0/16' });
  const x = other.allocate('x');
  other.release('x', x.address);
  const y = other.allocate('y');
  assert.equal(y.subnet, '10.1.0.0/24', 'an empty subnet goes back to the pool');
  assert.equal(y.address, '10.1.0.3', 'the next workspace continues after the last address handed out in it, not at x’s');
});

test('claim restores live cells after a restart', () => {
  const ipam = new Ipam();
  assert.equal(ipam.claim('a', '10.88.0.7').gateway, '10.88.0.1');
  assert.equal(code(() => ipam.claim('a', '10.88.0.7')), 'ADDRESS_IN_USE');
  assert.equal(code(() => ipam.claim('a', '10.88.0.1')), 'ADDRESS_NOT_IN_SUBNET');
  assert.equal(code(() => ipam.claim('a', '10.88.5.7')), 'ADDRESS_NOT_IN_SUBNET');
});
