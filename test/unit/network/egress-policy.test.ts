// Unit tests for egress policy validation and its nft rendering.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { validateEgressPolicy, type EgressPolicy } from '../../../src/shared/net/egress-policy.js';
import { cidrOf } from '../../../src/shared/net/ipv4.js';
import { policyChainCommands, policyChainName } from '../../../src/agent/network/nft-ruleset.js';

const errorOf = (input: unknown): string => {
  const r = validateEgressPolicy(input, { poolCidr: cidrOf('10.88.0.0/16') });
  return r.ok ? 'ok' : `${r.error.code}@${r.error.path}`;
};

test('normalises rules: port without protocol means tcp, no port and no protocol means any', () => {
  const r = validateEgressPolicy({ allow: [{ cidr: '203.0.113.0/24', port: 443 }, { cidr: '198.51.100.7' }, { cidr: '0.0.0.0/0', protocol: 'udp', port: '5000-5010' }] });
  assert.ok(r.ok);
  assert.deepEqual(r.policy, {
    dryRun: false,
    allow: [
      { cidr: '203.0.113.0/24', protocol: 'tcp', ports: { from: 443, to: 443 } },
      { cidr: '198.51.100.7/32', protocol: 'any' },
      { cidr: '0.0.0.0/0', protocol: 'udp', ports: { from: 5000, to: 5010 } },
    ],
  });
});

test('rejects bad input with stable codes and paths', () => {
  assert.equal(errorOf(null), 'INVALID_POLICY@');
  assert.equal(errorOf({ allow: 'x' }), 'INVALID_POLICY@allow');
  assert.equal(errorOf({ allow: [], extra: 1 }), 'INVALID_POLICY@extra');
  assert.equal(errorOf({ dryRun: 'yes' }), 'INVALID_POLICY@dryRun');
  assert.equal(errorOf({ allow: [{ cidr: '300.1.1.1/32' }] }), 'INVALID_CIDR@allow[0].cidr');
  assert.equal(errorOf({ allow: [{ cidr: '01.2.3.4' }] }), 'INVALID_CIDR@allow[0].cidr');
  assert.equal(errorOf({ allow: [{ cidr: '203.0.113.1/24' }] }), 'NON_CANONICAL_CIDR@allow[0].cidr');
  assert.equal(errorOf({ allow: [{ cidr: '169.254.169.254/32' }] }), 'FORBIDDEN_DESTINATION@allow[0].cidr');
  assert.equal(errorOf({ allow: [{ cidr: '127.0.0.1' }] }), 'FORBIDDEN_DESTINATION@allow[0].cidr');
  assert.equal(errorOf({ allow: [{ cidr: '10.88.4.0/24' }] }), 'FORBIDDEN_DESTINATION@allow[0].cidr');
  assert.equal(errorOf({ allow: [{ cidr: '1.1.1.1', protocol: 'sctp' }] }), 'INVALID_PROTOCOL@allow[0].protocol');
  assert.equal(errorOf({ allow: [{ cidr: '1.1.1.1', protocol: 'icmp', port: 1 }] }), 'PORT_NOT_ALLOWED@allow[0].port');
  assert.equal(errorOf({ allow: [{ cidr: '1.1.1.1', port: 0 }] }), 'INVALID_PORT@allow[0].port');
  assert.equal(errorOf({ allow: [{ cidr: '1.1.1.1', port: '90-80' }] }), 'INVALID_PORT@allow[0].port');
  assert.equal(errorOf({ allow: [{ cidr: '1.1.1.1', port: 1.5 }] }), 'INVALID_PORT@allow[0].port');
  assert.equal(errorOf({ allow: Array.from({ length: 257 }, () => ({ cidr: '1.1.1.1' })) }), 'TOO_MANY_RULES@allow');
  assert.equal(errorOf({ allow: [{ cidr: '0.0.0.0/0' }], dryRun: true }), 'ok', 'a broad rule is fine: forbidden ranges stay denied');
});

test('renders a policy as one content-addressed chain ending in deny or would_deny', () => {
  const policy: EgressPolicy = { allow: [{ cidr: '203.0.113.0/24', protocol: 'tcp', ports: { from: 80, to: 81 } }, { cidr: '0.0.0.0/0', protocol: 'icmp' }], dryRun: false };
  const name = policyChainName(policy);
  assert.match(name, /^eg_[0-9a-f]{16}$/);
  assert.deepEqual(policyChainCommands('cr000001', policy), [
    `add chain inet cr000001 ${name}`,
    `flush chain inet cr000001 ${name}`,
    `add rule inet cr000001 ${name} ip daddr 203.0.113.0/24 tcp dport 80-81 accept`,
    `add rule inet cr000001 ${name} meta l4proto icmp accept`,
    `add rule inet cr000001 ${name} jump deny`,
  ]);
  assert.notEqual(policyChainName({ ...policy, dryRun: true }), name);
  assert.equal(policyChainCommands('cr000001', { allow: [], dryRun: true }).at(-1)?.endsWith('jump would_deny'), true);
});
