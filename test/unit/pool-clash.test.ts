// An agent refuses a network.pool that an address of the host already sits in (another agent's gateway on the same
// pool), but not its own interfaces' addresses nor addresses outside the pool.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { NetworkInterfaceInfo } from 'node:os';
import { poolClash, poolRouteClash } from '../../src/agent/network/pool-clash.js';

const v4 = (address: string): NetworkInterfaceInfo => ({ address, family: 'IPv4', netmask: '255.255.255.255', mac: '00:00:00:00:00:00', internal: false, cidr: `${address}/32` });

test('poolClash names the foreign interface holding an address in the pool', () => {
  const ifs = { lo: [v4('127.0.0.1')], eth0: [v4('192.0.2.10')], cra1b2c3gw: [v4('10.88.0.1')] };
  assert.equal(poolClash('10.88.0.0/16', 'cra1b2c3', ifs), null, 'its own gateway does not count');
  assert.deepEqual(poolClash('10.88.0.0/16', 'crffffff', ifs), { iface: 'cra1b2c3gw', address: '10.88.0.1' });
  assert.equal(poolClash('10.89.0.0/16', 'crffffff', ifs), null);
  assert.deepEqual(poolClash('192.0.2.0/24', 'crffffff', ifs), { iface: 'eth0', address: '192.0.2.10' });
  assert.equal(poolClash('10.88.0.0/16', 'crffffff', { x: [{ ...v4('10.88.0.1'), family: 'IPv6', address: 'fe80::1', scopeid: 0 }] }), null);
});

test('poolRouteClash names a route inside the pool on a device that is not this agent’s', () => {
  assert.equal(poolRouteClash('cra1b2c3', [{ dst: '10.88.0.0/16', dev: 'cra1b2c3up' }, { dst: '10.88.0.1', dev: 'cra1b2c3gw', type: 'local', table: 'local' }]), null, 'its own uplink and gateway do not count');
  assert.deepEqual(poolRouteClash('crffffff', [{ dst: '10.88.0.0/16', dev: 'cra1b2c3up' }]), { dst: '10.88.0.0/16', dev: 'cra1b2c3up' }, "another agent's uplink on the same pool");
  assert.deepEqual(poolRouteClash('crffffff', [{ dst: '10.88.0.0/16', dev: 'tun0' }]), { dst: '10.88.0.0/16', dev: 'tun0' }, "an operator's route");
  assert.deepEqual(poolRouteClash('crffffff', [{ dst: '10.88.4.0/24', type: 'blackhole' }]), { dst: '10.88.4.0/24', type: 'blackhole' }, 'a route without a device');
  assert.equal(poolRouteClash('crffffff', []), null);
});
