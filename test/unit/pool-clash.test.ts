// An agent refuses a network.pool that an address of the host already sits in (another agent's gateway on the same
// pool), but not its own interfaces' addresses nor addresses outside the pool.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { NetworkInterfaceInfo } from 'node:os';
import { poolClash } from '../../src/agent/network/pool-clash.js';

const v4 = (address: string): NetworkInterfaceInfo => ({ address, family: 'IPv4', netmask: '255.255.255.255', mac: '00:00:00:00:00:00', internal: false, cidr: `${address}/32` });

test('poolClash names the foreign interface holding an address in the pool', () => {
  const ifs = { lo: [v4('127.0.0.1')], eth0: [v4('192.0.2.10')], cra1b2c3gw: [v4('10.88.0.1')] };
  assert.equal(poolClash('10.88.0.0/16', 'cra1b2c3', ifs), null, 'its own gateway does not count');
  assert.deepEqual(poolClash('10.88.0.0/16', 'crffffff', ifs), { iface: 'cra1b2c3gw', address: '10.88.0.1' });
  assert.equal(poolClash('10.89.0.0/16', 'crffffff', ifs), null);
  assert.deepEqual(poolClash('192.0.2.0/24', 'crffffff', ifs), { iface: 'eth0', address: '192.0.2.10' });
  assert.equal(poolClash('10.88.0.0/16', 'crffffff', { x: [{ ...v4('10.88.0.1'), family: 'IPv6', address: 'fe80::1', scopeid: 0 }] }), null);
});
