// Integration test of start-up reconciliation: leftovers in every crash state are wiped, live volumes are not.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, linkSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { detachLoop, getKeyStatus, unmount } from '../../../src/agent/storage/fscrypt.js';
import { reconcileVolumes } from '../../../src/agent/storage/reconcile.js';
import { loopDevicesByBackingFile, mountPointsWithin, prepareVolume, wipeVolume } from '../../../src/agent/storage/volume.js';

const MiB = 1024 * 1024;

// cleanupScratchRoot wipes every volume left under root, then deletes root only if nothing is mounted or attached there.
async function cleanupScratchRoot(root: string): Promise<void> {
  const { failed } = await reconcileVolumes(root, []);
  const mounts = await mountPointsWithin(root);
  const loops = [...(await loopDevicesByBackingFile()).keys()].filter((f) => f.startsWith(`${root}/`));
  assert.deepEqual({ failed: failed.map((f) => `${f.volumeId}: ${f.error.message}`), mounts, loops },
    { failed: [], mounts: [], loops: [] }, `scratch root ${root} could not be cleaned up; left in place`);
  rmSync(root, { recursive: true, force: true });
}

// Returns the sysfs backing file of /dev/loopN, or null if unbound.
function loopBacking(device: string): string | null {
  const path = `/sys/block/${device.replace('/dev/', '')}/loop/backing_file`;
  return existsSync(path) ? readFileSync(path, 'utf8').trim() : null;
}

/**
 * detachWhenFree detaches a loop device whose file system was just unmounted here. A mount namespace created on this host
 * meanwhile (any container starting, in this suite or beside it) holds a copy of the mount until its runtime drops it,
 * and the device stays claimed (EBUSY) for those few milliseconds: tried again for a while.
 */
async function detachWhenFree(device: string): Promise<void> {
  const deadline = Date.now() + 10_000;
  for (;;) {
    try {
      detachLoop(device);
      return;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EBUSY' || Date.now() > deadline) throw e;
      await new Promise((r) => setTimeout(r, 50));
    }
  }
}

test('reconcile wipes every leftover volume not in the live set and spares the live one', async (t) => {
  const root = mkdtempSync('/var/tmp/cleanroom-reconcile-test-');
  t.after(() => cleanupScratchRoot(root));
  const prepare = (cellId: string) => prepareVolume({ root, cellId, uid: 100_000, gid: 100_000, sizeBytes: 16 * MiB });
  const live = await prepare('live');
  const mounted = await prepare('crashed-running');
  const unmounted = await prepare('crashed-mid-wipe');
  const fileOnly = await prepare('crashed-after-detach');
  const wiped = await prepare('already-wiped');
  await wipeVolume(wiped);
  // Simulate the states a crash can leave behind.
  await unmount(unmounted.mountPoint);
  await unmount(fileOnly.mountPoint);
  await detachWhenFree(fileOnly.loopDevice);

  const result = await reconcileVolumes(root, [live.id]);
  assert.deepEqual(result.failed, []);
  const byId = new Map(result.wiped.map((r) => [r.volumeId, r]));
  assert.deepEqual([...byId.keys()].sort(), [mounted.id, unmounted.id, fileOnly.id].sort(), 'exactly the leftovers, no tombstones');
  assert.equal(byId.get(mounted.id)?.keyStateAfterRemoval, 'absent', 'a mounted leftover has its key removed before unmount');
  assert.equal(byId.get(mounted.id)?.keyIdentifier, mounted.keyIdentifier);
  assert.deepEqual(byId.get(unmounted.id)?.loopDevices, [unmounted.loopDevice]);
  assert.equal(byId.get(fileOnly.id)?.cellId, 'crashed-after-detach');
  for (const v of [mounted, unmounted, fileOnly]) {
    assert.equal(existsSync(v.backingFile), false, `${v.id} backing file gone`);
    assert.notEqual(loopBacking(v.loopDevice), v.backingFile, `${v.id} loop detached`);
  }

  assert.equal(getKeyStatus(live.mountPoint, live.keyIdentifier).state, 'present', 'live volume untouched');
  assert.equal(loopBacking(live.loopDevice), live.backingFile);
  assert.deepEqual((await reconcileVolumes(root, [live.id])).wiped, [], 'a second pass finds nothing');
  assert.deepEqual(readdirSync(root).filter((n) => n.endsWith('.img')), [`${live.id}.img`]);

  await wipeVolume(live);
  assert.deepEqual(await mountPointsWithin(root), []);
});

test('reconcile of a missing root is a no-op', async () => {
  assert.deepEqual(await reconcileVolumes('/var/tmp/cleanroom-does-not-exist-7f3a', []), { wiped: [], failed: [] });
});

test('a marker is never half-written (rewritten in place by one pwrite); a .tmp an older build left is removed by reconcile; the id stays claimed', async (t) => {
  const root = mkdtempSync('/var/tmp/cleanroom-reconcile-test-');
  t.after(() => cleanupScratchRoot(root));
  const v = await prepareVolume({ root, cellId: 'marker', uid: 100_000, gid: 100_000, sizeBytes: 16 * MiB });
  const marker = JSON.parse(readFileSync(`${root}/${v.id}.cell`, 'utf8')) as { cellId: string };
  assert.equal(marker.cellId, 'marker');
  assert.deepEqual(readdirSync(root).filter((n) => n.endsWith('.tmp')), [], 'a claim leaves no .tmp');
  // An older build's crash between writing the .tmp and renaming it over the marker: the old marker is whole, the .tmp is noise.
  writeFileSync(`${root}/${v.id}.cell.tmp`, '{"volumeId":');
  const result = await reconcileVolumes(root, []);
  assert.deepEqual(result.failed, []);
  assert.deepEqual(result.wiped.map((r) => r.cellId), ['marker'], 'the whole marker still names the cell');
  assert.deepEqual(readdirSync(root).sort(), [`${v.id}.cell`], 'only the tombstone is left');
  assert.equal(typeof (JSON.parse(readFileSync(`${root}/${v.id}.cell`, 'utf8')) as { wipedAt?: unknown }).wipedAt, 'string');
});

test('a crash between a spare backing file\'s link to a new volume and its unlink (one inode, two names) leaves neither after reconcile', async (t) => {
  const root = mkdtempSync('/var/tmp/cleanroom-reconcile-test-');
  t.after(() => cleanupScratchRoot(root));
  const source = await prepareVolume({ root, cellId: 'spare-source', uid: 100_000, gid: 100_000, sizeBytes: 16 * MiB });
  const receipt = await wipeVolume(source);
  const spare = readdirSync(root).find((n) => n.startsWith('spare-img-'));
  assert.ok(spare !== undefined, `a cell's wipe kept a spare backing file (detach: ${receipt.steps.find((s) => s.step === 'detach-loop')?.detail ?? '?'})`);
  // What takeSpareBackingFile leaves if the agent dies between link(2) and unlink(2): the claimed marker, both names.
  const id = `v-${randomBytes(8).toString('hex')}`;
  linkSync(`${root}/${spare}`, `${root}/${id}.img`);
  writeFileSync(`${root}/${id}.cell`, JSON.stringify({ volumeId: id, cellId: 'crashed-mid-take', createdAt: new Date().toISOString() }));
  const result = await reconcileVolumes(root, []);
  assert.deepEqual(result.failed, []);
  assert.deepEqual(result.wiped.map((w) => w.volumeId), [id]);
  assert.deepEqual(readdirSync(root).filter((n) => n.endsWith('.img') || n.startsWith('spare-')), [], 'no backing file and no spare left');
  assert.equal(typeof (JSON.parse(readFileSync(`${root}/${id}.cell`, 'utf8')) as { wipedAt?: unknown }).wipedAt, 'string', 'tombstoned');
});
