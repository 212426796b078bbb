// Unit tests for the netlink encoders: message framing, attribute alignment, answers, and nft register layout.
// (The kernel's acceptance of these bytes is tested by the network integration tests, which attach cells with them.)
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { endianness } from 'node:os';
import { answerErrors, attr, attrsOf, ipv4Bytes, macBytes, nested, NetlinkRequest, NLM_F, parseMessages, strAttr } from '../../../src/agent/network/netlink/message.js';
import { encodeFields } from '../../../src/agent/network/netlink/nftables.js';
import { agentTableScript, cellSetElements, hubSetElements, hubTableScript } from '../../../src/agent/network/nft-ruleset.js';
import { cidrOf } from '../../../src/shared/net/ipv4.js';

test('attributes carry their unpadded length and are padded to 4 bytes; nested ones set NLA_F_NESTED', () => {
  const a = strAttr(3, 'eth0');
  assert.equal(a.length, 12); // 4 header + "eth0\0" (5) = 9, padded to 12
  assert.equal(a.readUInt16LE(0), 9);
  assert.equal(a.readUInt16LE(2), 3);
  const n = nested(3, [attr(1, Buffer.from([1, 2, 3, 4]))]);
  assert.equal(n.readUInt16LE(2), 0x8003);
  assert.deepEqual([...attrsOf(n.subarray(4)).get(1)!], [1, 2, 3, 4]);
  assert.deepEqual([...attrsOf(n).keys()], [3]);
});

test('a request numbers its messages, pads the fixed header and lists which ones want an ack', () => {
  const r = new NetlinkRequest(41);
  assert.equal(r.add(16, NLM_F.REQUEST, Buffer.alloc(3)), 41);
  assert.equal(r.add(20, NLM_F.REQUEST | NLM_F.ACK, Buffer.alloc(8), [attr(1, Buffer.alloc(4))]), 42);
  assert.deepEqual(r.ackedSeqs, [42]);
  assert.equal(r.nextSeq, 43);
  const msgs = parseMessages(r.bytes);
  assert.deepEqual(msgs.map((m) => [m.type, m.seq, m.payload.length]), [[16, 41, 4], [20, 42, 16]]);
});

test('answers map sequence numbers to errno (0 is an ack); truncated input is an error', () => {
  const answer = (seq: number, err: number): Buffer => {
    const b = Buffer.alloc(36);
    b.writeUInt32LE(36, 0);
    b.writeUInt16LE(2, 4); // NLMSG_ERROR
    b.writeUInt32LE(seq, 8);
    b.writeInt32LE(err, 16);
    return b;
  };
  assert.deepEqual([...answerErrors(parseMessages(Buffer.concat([answer(7, 0), answer(8, -17)])))], [[7, 0], [8, 17]]);
  assert.throws(() => parseMessages(answer(1, 0).subarray(0, 20)), /malformed/);
});

test('addresses are validated before they are encoded', () => {
  assert.deepEqual([...ipv4Bytes('10.88.1.2')], [10, 88, 1, 2]);
  assert.throws(() => ipv4Bytes('10.88.1.256'));
  assert.throws(() => ipv4Bytes('10.88.1'));
  assert.deepEqual([...macBytes('06:aa:bb:cc:dd:ee')], [6, 0xaa, 0xbb, 0xcc, 0xdd, 0xee]);
  assert.throws(() => macBytes('06:aa:bb:cc:dd'));
});

test('nft concatenations put each field on a 4-byte boundary, interface names in 16 bytes, marks in host order', () => {
  const key = encodeFields([{ ifname: 'cr0000017abcdef' }, { ether: '06:01:02:03:04:05' }, { ipv4: '10.88.1.7' }]);
  assert.equal(key.length, 16 + 8 + 4);
  assert.equal(key.subarray(0, 16).toString('latin1'), 'cr0000017abcdef\0');
  assert.deepEqual([...key.subarray(16, 24)], [6, 1, 2, 3, 4, 5, 0, 0]);
  assert.deepEqual([...key.subarray(24)], [10, 88, 1, 7]);
  assert.deepEqual([...encodeFields([{ proto: 'udp' }, { port: 53 }])], [17, 0, 0, 0, 0, 53, 0, 0]);
  const mark = encodeFields([{ mark: 0x01020304 }]);
  assert.deepEqual([...mark], endianness() === 'LE' ? [4, 3, 2, 1] : [1, 2, 3, 4]);
  assert.throws(() => encodeFields([{ ifname: 'a-name-of-16-chr' }]), /interface name/);
  assert.throws(() => encodeFields([{ port: 70000 }]), /port/);
});

test('a cell has one element in each per-cell set of the host table, one gw_allow element per gateway port, and its binding in the hub', () => {
  const cell = { hostIf: 'cr000001abcdefg', cellMac: '06:01:02:03:04:05', address: '10.88.1.7', gateway: '10.88.1.1', ctMark: 5, gatewayPorts: [{ protocol: 'tcp', port: 443 }, { protocol: 'udp', port: 53 }], policyChain: 'eg_x' } as const;
  const elements = cellSetElements(cell);
  assert.deepEqual(elements.map((e) => e.set), ['cell_mark', 'cell_flow', 'cell_egress', 'gw_allow', 'gw_allow']);
  assert.equal(elements.find((e) => e.set === 'cell_egress')?.jump, 'eg_x');
  // The host's table keys a cell by its address only: interface names live in the hub's binding.
  assert.ok(elements.every((e) => e.key.every((f) => !('ifname' in f))));
  assert.deepEqual(hubSetElements(cell), [{ set: 'src_ok', key: [{ ifname: cell.hostIf }, { ether: cell.cellMac }, { ipv4: cell.address }] }]);
});

test('the hub table is stateless: nothing in it makes the kernel track connections there', () => {
  const script = hubTableScript('cr000001');
  assert.match(script, /src_ok/);
  assert.doesNotMatch(script, /\bct\b|\bnat\b|masquerade|snat|dnat|notrack|\blog\b/);
  assert.match(agentTableScript('cr000001', cidrOf('10.88.0.0/16'), true), /iifname != \{ "cr000001up", "lo" \} ip saddr @cell_mark drop/);
});
