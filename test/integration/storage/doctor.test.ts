// Integration test of the storage doctor on a host that supports encrypted volumes.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { checkStorageSupport } from '../../../src/agent/storage/doctor.js';

test('the storage doctor passes on this host and names every check', async () => {
  const report = await checkStorageSupport();
  assert.ok(report.ok, JSON.stringify(report.checks, null, 2));
  assert.deepEqual(report.checks.map((c) => c.name), ['root', 'addon', 'loop-control', 'ext4', 'mkfs.ext4', 'fscrypt-volume']);
  assert.match(report.checks.at(-1)?.detail ?? '', /key ABSENT after wipe/);
});
