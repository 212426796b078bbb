// Unit tests of the volume module's pure logic: ids, paths and mountinfo parsing.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { newVolumeId, parseMountPoints, unescapeMountPath, VOLUME_ID_PATTERN, volumePaths } from '../../../src/agent/storage/volume.js';

test('volume ids are random v-<16 hex>', () => {
  const ids = new Set(Array.from({ length: 1000 }, newVolumeId));
  assert.equal(ids.size, 1000);
  for (const id of ids) assert.match(id, VOLUME_ID_PATTERN);
});

test('volume paths derive from root and id, and reject ids that could escape the root', () => {
  assert.deepEqual(volumePaths('/srv/vol', 'v-0123456789abcdef'), {
    marker: '/srv/vol/v-0123456789abcdef.cell',
    backingFile: '/srv/vol/v-0123456789abcdef.img',
    mountPoint: '/srv/vol/v-0123456789abcdef.mnt',
    dataDir: '/srv/vol/v-0123456789abcdef.mnt/data',
  });
  for (const bad of ['../etc', 'v-0123', 'v-0123456789ABCDEF', 'v-0123456789abcdef/..', '']) {
    assert.throws(() => volumePaths('/srv/vol', bad), TypeError, bad);
  }
});

test('mountinfo mount points are unescaped', () => {
  const text = [
    '36 30 0:33 / /sys/fs/cgroup/freezer rw,relatime - cgroup cgroup rw,freezer',
    '90 25 7:0 / /var/tmp/a\\040b/v-0123456789abcdef.mnt rw,nosuid - ext4 /dev/loop0 rw',
    '',
  ].join('\n');
  assert.deepEqual(parseMountPoints(text), ['/sys/fs/cgroup/freezer', '/var/tmp/a b/v-0123456789abcdef.mnt']);
  assert.equal(unescapeMountPath('a\\011b\\012c\\134d'), 'a\tb\nc\\d');
});
