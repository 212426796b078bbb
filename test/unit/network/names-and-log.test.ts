// Unit tests for the naming scheme and the kernel-log denial parser.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { parseKmsgRecord } from '../../../src/agent/network/denied-log.js';
import { cellIdFromNetns, cellNames, hubNetnsName, isCellHostIf, uplinkIfName, uplinkNames } from '../../../src/agent/network/names.js';

test('cell names fit IFNAMSIZ, carry the prefix and are deterministic', () => {
  const n = cellNames('cr0a1b2c', 'deadbeef');
  assert.equal(n.netns, 'cr0a1b2c-deadbeef');
  assert.equal(n.hostIf.length, 15);
  assert.ok(isCellHostIf('cr0a1b2c', n.hostIf));
  assert.ok(!isCellHostIf('cr0a1b2c', 'cr0a1b2cgw'));
  assert.ok(!isCellHostIf('cr0a1b2c', uplinkIfName('cr0a1b2c')));
  assert.equal(cellIdFromNetns('cr0a1b2c', hubNetnsName('cr0a1b2c')), undefined, 'the hub never reads as a cell netns');
  const up = uplinkNames('cr0a1b2c');
  assert.notEqual(up.hostMac, up.hubMac);
  assert.deepEqual(cellNames('cr0a1b2c', 'deadbeef'), n);
  assert.notEqual(cellNames('cr0a1b2c', 'deadbeee').hostIf, n.hostIf);
  assert.match(n.hostMac, /^02(:[0-9a-f]{2}){5}$/);
  assert.match(n.cellMac, /^06(:[0-9a-f]{2}){5}$/);
  assert.ok(Number.isInteger(n.ctMark), `ctMark ${n.ctMark}`);
  assert.ok(n.ctMark > 0, `ctMark ${n.ctMark} is 0: untagged`);
  assert.ok(n.ctMark <= 0xffffffff, `ctMark ${n.ctMark} does not fit 32 bits`);
  assert.equal(cellIdFromNetns('cr0a1b2c', n.netns), 'deadbeef');
  assert.equal(cellIdFromNetns('cr0a1b2c', 'cr999999-deadbeef'), undefined);
  assert.throws(() => cellNames('cr0A1b2c', 'x'));
  assert.throws(() => cellNames('cr0a1b2c', 'a b'));
  assert.throws(() => cellNames('cr0a1b2c', 'x;rm'));
});

test('parses this agent’s denial records and ignores everything else', () => {
  const cellOf = (mark: number, address: string): string | undefined => (mark === 0x1a2b && address === '10.88.0.2' ? 'cell1' : undefined);
  const line = '7,1234,5000000,-;cr0a1b2c D IN=cr0a1b2cup OUT=eth0 MAC=02:00 SRC=10.88.0.2 DST=203.0.113.20 LEN=60 TOS=0x00 PREC=0x00 TTL=63 ID=1 DF PROTO=TCP SPT=40000 DPT=8080 WINDOW=64240 RES=0x00 SYN URGP=0 MARK=0x1a2b \n';
  const r = parseKmsgRecord(line, 'cr0a1b2c', cellOf);
  assert.ok(r);
  assert.deepEqual({ ...r, time: undefined }, { action: 'denied', cellId: 'cell1', source: '10.88.0.2', destination: '203.0.113.20', protocol: 'tcp', port: 8080, time: undefined });
  const icmp = parseKmsgRecord('7,1,1,-;cr0a1b2c W IN=cr0a1b2cup OUT=eth0 SRC=10.88.0.3 DST=203.0.113.10 LEN=84 PROTO=ICMP TYPE=8 CODE=0 ID=1 SEQ=1 MARK=0x1a2b ', 'cr0a1b2c', cellOf);
  assert.equal(icmp?.action, 'dry-run');
  assert.equal(icmp?.cellId, undefined, 'a mark with another address maps to no cell');
  assert.equal(icmp?.protocol, 'icmp');
  assert.equal(icmp?.port, undefined);
  const unmarked = parseKmsgRecord(line.replace('MARK=0x1a2b ', ''), 'cr0a1b2c', cellOf);
  assert.equal(unmarked?.cellId, undefined, 'a record without a mark names no cell');
  const foreign = parseKmsgRecord(line.replace(' D ', ' w '), 'cr0a1b2c', cellOf);
  assert.equal(foreign?.action, 'dry-run');
  assert.equal(foreign?.cellId, undefined, "a record logged with another ruleset's mark names no cell");
  assert.equal(parseKmsgRecord('7,1,1,-;cr999999 D IN=x SRC=1.1.1.1 DST=2.2.2.2', 'cr0a1b2c', cellOf), undefined);
  assert.equal(parseKmsgRecord('7,1,1,-;cr0a1b2c X IN=x SRC=1.1.1.1 DST=2.2.2.2', 'cr0a1b2c', cellOf), undefined);
  assert.equal(parseKmsgRecord('6,1,1,-;eth0: link up', 'cr0a1b2c', cellOf), undefined);
});
