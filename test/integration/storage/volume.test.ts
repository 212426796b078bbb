// Integration tests of the per-cell encrypted volume, for real (root, loop devices, ext4, fscrypt).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { closeSync, existsSync, fsyncSync, mkdtempSync, openSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { getKeyStatus, getPolicy, POLICY_V2_AES256 } from '../../../src/agent/storage/fscrypt.js';
import { reconcileVolumes } from '../../../src/agent/storage/reconcile.js';
import { volumeTemplate, writeVolumeImage } from '../../../src/agent/storage/volume-template.js';
import {
  loopDevicesByBackingFile,
  mountPointsWithin,
  prepareVolume,
  VolumeAlreadyUsedError,
  VolumeBusyError,
  wipeVolume,
  type Volume,
} from '../../../src/agent/storage/volume.js';

const MiB = 1024 * 1024;
const UID = 100_123;
const GID = 100_456;

// cleanupScratchRoot wipes every volume left under root, then deletes root only if nothing is mounted or attached there.
async function cleanupScratchRoot(root: string): Promise<void> {
  const { failed } = await reconcileVolumes(root, []);
  const mounts = await mountPointsWithin(root);
  const loops = [...(await loopDevicesByBackingFile()).keys()].filter((f) => f.startsWith(`${root}/`));
  assert.deepEqual({ failed: failed.map((f) => `${f.volumeId}: ${f.error.message}`), mounts, loops },
    { failed: [], mounts: [], loops: [] }, `scratch root ${root} could not be cleaned up; left in place`);
  rmSync(root, { recursive: true, force: true });
}

// Creates a scratch volumes root removed (with anything left in it) after the test.
function scratchRoot(t: { after: (fn: () => Promise<void>) => void }): string {
  const root = mkdtempSync('/var/tmp/cleanroom-volume-test-');
  t.after(() => cleanupScratchRoot(root));
  return root;
}

// Returns the mountinfo line of a mount point, or undefined.
function mountInfoLine(mountPoint: string): string | undefined {
  return readFileSync('/proc/self/mountinfo', 'utf8').split('\n').find((l) => l.split(' ')[4] === mountPoint);
}

// Returns the sysfs backing file of /dev/loopN, or null if unbound.
function loopBacking(device: string): string | null {
  const path = `/sys/block/${device.replace('/dev/', '')}/loop/backing_file`;
  return existsSync(path) ? readFileSync(path, 'utf8').trim() : null;
}

// Writes data to path and fsyncs the file and its directory.
function writeDurably(path: string, data: string): void {
  const fd = openSync(path, 'wx', 0o600);
  try {
    writeSync(fd, data);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  const dirFd = openSync(join(path, '..'), 'r');
  try {
    fsyncSync(dirFd);
  } finally {
    closeSync(dirFd);
  }
}

test('prepare binds a fresh v2 AES-256-XTS/CTS volume to its cell, owned by the workload uid', async (t) => {
  const root = scratchRoot(t);
  const volume = await prepareVolume({ root, cellId: 'cell-a', uid: UID, gid: GID, sizeBytes: 32 * MiB });
  assert.match(volume.id, /^v-[0-9a-f]{16}$/);
  assert.equal(volume.cellId, 'cell-a');

  const policy = getPolicy(volume.dataDir);
  assert.ok(policy !== null);
  assert.equal(policy.version, 2);
  assert.equal(policy.contentsMode, 1, 'contents AES-256-XTS');
  assert.equal(policy.filenamesMode, 4, 'filenames AES-256-CTS');
  assert.equal(policy.flags, POLICY_V2_AES256.flags);
  assert.equal(policy.keyIdentifier, volume.keyIdentifier);
  for (const dir of [volume.workDir, volume.tmpDir]) assert.deepEqual(getPolicy(dir), policy, `${dir} inherits the policy`);
  assert.equal(getPolicy(volume.mountPoint), null, 'the filesystem root is not encrypted');
  assert.equal(getKeyStatus(volume.mountPoint, volume.keyIdentifier).state, 'present');

  for (const [dir, mode] of [[volume.dataDir, 0o711], [volume.workDir, 0o700], [volume.tmpDir, 0o1777]] as const) {
    const st = statSync(dir);
    assert.equal(st.uid, UID, `${dir} uid`);
    assert.equal(st.gid, GID, `${dir} gid`);
    assert.equal(st.mode & 0o7777, mode, `${dir} mode`);
  }
  const line = mountInfoLine(volume.mountPoint);
  assert.ok(line !== undefined, 'mounted');
  const options = line.split(' ')[5]?.split(',') ?? [];
  for (const opt of ['nosuid', 'nodev', 'noatime']) assert.ok(options.includes(opt), `mount option ${opt} in ${line}`);
  assert.equal(loopBacking(volume.loopDevice), volume.backingFile);
  const marker = JSON.parse(readFileSync(join(volume.root, `${volume.id}.cell`), 'utf8')) as Record<string, unknown>;
  assert.equal(marker['cellId'], 'cell-a');
  assert.ok(!JSON.stringify(volume).includes('"key"'), 'the volume object carries no key');
  await wipeVolume(volume);
});

test('a canary written in the cell never reaches the backing file in clear', async (t) => {
  const root = scratchRoot(t);
  const volume = await prepareVolume({ root, cellId: 'cell-canary', uid: UID, gid: GID, sizeBytes: 32 * MiB });
  const contentMarker = `CANARY-CONTENT-${randomBytes(12).toString('hex')}`;
  const nameMarker = `CANARY-NAME-${randomBytes(12).toString('hex')}`;
  const controlMarker = `CONTROL-${randomBytes(12).toString('hex')}`;
  writeDurably(join(volume.workDir, 'canary.txt'), `${contentMarker}\n`.repeat(4096));
  writeDurably(join(volume.tmpDir, nameMarker), 'x');
  // Control: the same kind of write outside the encrypted directory must be found, or the scan proves nothing.
  writeDurably(join(volume.mountPoint, 'control.txt'), `${controlMarker}\n`);
  writeFileSync('/proc/sys/vm/drop_caches', '3');

  const raw = readFileSync(volume.backingFile);
  assert.ok(raw.includes(controlMarker), 'control marker found in the raw backing file (the scan works)');
  assert.ok(!raw.includes(contentMarker), 'file contents are encrypted on disk');
  assert.ok(!raw.includes(nameMarker), 'file names are encrypted on disk');
  assert.equal(readFileSync(join(volume.workDir, 'canary.txt'), 'utf8').slice(0, contentMarker.length), contentMarker,
    'plaintext readable through the mount while the key is present');
  await wipeVolume(volume);
});

test('writing past the volume size fails with ENOSPC', async (t) => {
  const root = scratchRoot(t);
  const volume = await prepareVolume({ root, cellId: 'cell-full', uid: UID, gid: GID, sizeBytes: 24 * MiB });
  const fd = openSync(join(volume.workDir, 'big'), 'w');
  const chunk = Buffer.alloc(MiB, 0x5a);
  try {
    assert.throws(() => {
      for (let i = 0; i < 32; i++) writeSync(fd, chunk);
      fsyncSync(fd);
    }, { code: 'ENOSPC' });
  } finally {
    closeSync(fd);
  }
  await wipeVolume(volume);
});

test('wipe crypto-shreds the key and leaves no backing file, loop device or mount; the id is never reused', async (t) => {
  const root = scratchRoot(t);
  const volume: Volume = await prepareVolume({ root, cellId: 'cell-w', uid: UID, gid: GID, sizeBytes: 32 * MiB });
  writeDurably(join(volume.workDir, 'data'), 'secret');
  await assert.rejects(prepareVolume({ root, cellId: 'cell-other', uid: UID, gid: GID, sizeBytes: 32 * MiB, volumeId: volume.id }),
    VolumeAlreadyUsedError, 'a live volume cannot be prepared for another cell');

  const receipt = await wipeVolume(volume);
  assert.equal(receipt.volumeId, volume.id);
  assert.equal(receipt.cellId, 'cell-w');
  assert.equal(receipt.keyIdentifier, volume.keyIdentifier);
  assert.equal(receipt.keyStateAfterRemoval, 'absent', 'key status ABSENT, read before unmount');
  assert.deepEqual(receipt.loopDevices, [volume.loopDevice]);
  const names = receipt.steps.map((s) => s.step);
  for (const step of ['remove-key', 'key-status', 'unmount', 'discard', 'detach-loop', 'delete-backing-file']) {
    assert.ok(names.includes(step), `receipt has ${step}`);
  }
  assert.ok(names.indexOf('key-status') < names.indexOf('unmount'));
  for (const s of receipt.steps) {
    assert.ok(s.ms >= 0, `step ${s.step} took ${s.ms} ms`);
    assert.match(s.at, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$/, `step ${s.step} at ${s.at}`);
  }
  assert.ok(!JSON.stringify(receipt).match(/[0-9a-f]{128}/), 'no 64-byte key in the receipt');

  assert.equal(existsSync(volume.backingFile), false, 'backing file deleted');
  assert.equal(existsSync(volume.mountPoint), false, 'mount point removed');
  assert.equal(mountInfoLine(volume.mountPoint), undefined, 'not mounted');
  assert.notEqual(loopBacking(volume.loopDevice), volume.backingFile, 'loop device detached');
  await assert.rejects(prepareVolume({ root, cellId: 'cell-w', uid: UID, gid: GID, sizeBytes: 32 * MiB, volumeId: volume.id }),
    (err: unknown) => err instanceof VolumeAlreadyUsedError && err.volumeId === volume.id, 'a wiped id is never attached again');
  assert.equal(existsSync(volume.backingFile), false, 'the refused prepare created nothing');
});

test('wipe refuses while files are open, then completes once they are closed', async (t) => {
  const root = scratchRoot(t);
  const volume = await prepareVolume({ root, cellId: 'cell-busy', uid: UID, gid: GID, sizeBytes: 32 * MiB });
  const fd = openSync(join(volume.workDir, 'open-file'), 'w');
  try {
    await assert.rejects(wipeVolume(volume), VolumeBusyError);
    assert.equal(getKeyStatus(volume.mountPoint, volume.keyIdentifier).state, 'incompletely-removed');
  } finally {
    closeSync(fd);
  }
  const receipt = await wipeVolume(volume);
  assert.equal(receipt.keyStateAfterRemoval, 'absent');
  assert.equal(existsSync(volume.backingFile), false);
});

test('volumes come from the size\'s template: each has its own UUID, hash seed and key, the filesystem checks clean', async (t) => {
  const { execFileSync } = await import('node:child_process');
  const root = scratchRoot(t);
  const a = await prepareVolume({ root, cellId: 'cell-t1', uid: UID, gid: GID, sizeBytes: 64 * MiB });
  const b = await prepareVolume({ root, cellId: 'cell-t2', uid: UID, gid: GID, sizeBytes: 64 * MiB });
  assert.ok(a.steps.every((s) => s.step !== 'mkfs'), 'no mkfs per volume');
  const header = (v: Volume) => execFileSync('dumpe2fs', ['-h', v.loopDevice], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] });
  const field = (text: string, name: string) => new RegExp(`^${name}:\\s+(.+)$`, 'm').exec(text)?.[1];
  const [ha, hb] = [header(a), header(b)];
  assert.notEqual(field(ha, 'Filesystem UUID'), field(hb, 'Filesystem UUID'), 'fresh UUID per volume');
  assert.notEqual(field(ha, 'Directory Hash Seed'), field(hb, 'Directory Hash Seed'), 'fresh hash seed per volume');
  assert.doesNotMatch(field(ha, 'Filesystem features') ?? '', /has_journal/, 'no journal');
  assert.notEqual(a.keyIdentifier, b.keyIdentifier, 'a key of its own');
  assert.equal(a.backingFile === b.backingFile, false);
  // The backing file holds only the template's metadata and what was written since: still sparse.
  assert.ok(statSync(a.backingFile).blocks * 512 < 4 * MiB, 'backing file stays sparse');
  writeFileSync(join(a.workDir, 'f'), 'x'.repeat(10_000));
  await wipeVolume(a);
  await wipeVolume(b);
  // A fresh image from the template checks clean (e2fsck exits 0: its superblock checksum was recomputed right).
  const image = join(root, 'fsck-probe.img');
  await writeVolumeImage(await volumeTemplate(64 * MiB), image);
  execFileSync('e2fsck', ['-fn', image], { stdio: 'ignore' });
  rmSync(image);
});

test('a wipe leaves the tombstone (rewritten in place, no .tmp), an emptied mount point and an emptied backing file that the next volume reuses; reconcile removes spares', async (t) => {
  const root = scratchRoot(t);
  const spares = () => readdirSync(root).filter((n) => n.startsWith('spare-mnt-'));
  const spareImages = () => readdirSync(root).filter((n) => n.startsWith('spare-img-'));
  const first = await prepareVolume({ root, cellId: 'spare-1', uid: UID, gid: GID, sizeBytes: 16 * MiB });
  // What the first tenant's data put into the backing file: the 4 KiB blocks that changed since the template was written.
  const blocks = (file: string) => {
    const raw = readFileSync(file);
    const out: string[] = [];
    for (let o = 0; o + 4096 <= raw.length; o += 4096) {
      const b = raw.subarray(o, o + 4096);
      if (b.some((x) => x !== 0)) out.push(b.toString('base64'));
    }
    return out;
  };
  const asPrepared = new Set(blocks(first.backingFile));
  writeFileSync(join(first.workDir, 'f'), 'tenant data');
  const big = openSync(join(first.workDir, 'big'), 'w');
  writeSync(big, randomBytes(256 * 1024));
  fsyncSync(big);
  closeSync(big);
  const tenantBlocks = blocks(first.backingFile).filter((b) => !asPrepared.has(b));
  assert.ok(tenantBlocks.length >= 64, `the tenant's writes reached the backing file (${tenantBlocks.length} new blocks)`);
  const receipt = await wipeVolume(first);
  assert.equal(receipt.keyStateAfterRemoval, 'absent');
  assert.equal(existsSync(first.mountPoint), false, 'the volume\'s mount point is gone under its name');
  assert.deepEqual(readdirSync(root).filter((n) => n.endsWith('.tmp')), [], 'no temporary marker');
  const tombstone = JSON.parse(readFileSync(join(root, `${first.id}.cell`), 'utf8')) as Record<string, unknown>;
  assert.equal(tombstone.cellId, 'spare-1');
  assert.equal(typeof tombstone.wipedAt, 'string');
  assert.equal(typeof tombstone.keyAbsentAt, 'string');
  const [spare] = spares();
  assert.ok(spare !== undefined, 'the emptied mount point is kept as a spare');
  assert.deepEqual(readdirSync(join(root, spare)), [], 'a spare is empty');
  assert.equal(existsSync(first.backingFile), false, 'the backing file is gone under its name');
  const [spareImage] = spareImages();
  // No spare when a loop device was still held open at the wipe (e.g. a udev probe on hosts that run udevd): say so.
  assert.ok(spareImage !== undefined, `the emptied backing file is kept as a spare (detach: ${receipt.steps.find((s) => s.step === 'detach-loop')?.detail ?? '?'})`);
  const spareStat = statSync(join(root, spareImage));
  assert.equal(spareStat.size, 0, 'a spare backing file is truncated');
  assert.equal(spareStat.blocks, 0, 'a spare backing file holds no block');
  assert.match(receipt.steps.find((s) => s.step === 'delete-backing-file')?.detail ?? '', /spare/);

  const second = await prepareVolume({ root, cellId: 'spare-2', uid: UID, gid: GID, sizeBytes: 16 * MiB });
  assert.deepEqual(spares(), [], 'the next volume\'s mount point is the spare');
  assert.deepEqual(spareImages(), [], 'the next volume\'s backing file is the spare');
  assert.equal(statSync(second.backingFile).ino, spareStat.ino, 'the same inode');
  assert.equal(statSync(second.backingFile).nlink, 1);
  assert.deepEqual(readdirSync(second.workDir), [], 'the new volume holds nothing of the old one');
  assert.equal(readFileSync(second.backingFile).includes(Buffer.from('tenant data')), false);
  const secondBlocks = new Set(blocks(second.backingFile));
  assert.equal(tenantBlocks.filter((b) => secondBlocks.has(b)).length, 0, 'no block the first tenant wrote is in the reused inode');
  assert.deepEqual(await mountPointsWithin(second.mountPoint), [second.mountPoint]);
  await wipeVolume(second);
  assert.equal(spares().length, 1);
  assert.equal(spareImages().length, 1);
  // A recovery's wipe (a bare ref, as reconcile makes) keeps nothing: it deletes the backing file.
  const third = await prepareVolume({ root, cellId: 'spare-3', uid: UID, gid: GID, sizeBytes: 16 * MiB });
  assert.deepEqual(spareImages(), []);
  await wipeVolume({ root, id: third.id });
  assert.deepEqual(spareImages(), [], 'a recovery keeps no spare backing file');
  assert.equal(existsSync(third.backingFile), false);
  const fourth = await prepareVolume({ root, cellId: 'spare-4', uid: UID, gid: GID, sizeBytes: 16 * MiB });
  await wipeVolume(fourth);
  assert.equal(spareImages().length, 1);
  // A later run's reconcile removes what this one kept.
  await reconcileVolumes(root, []);
  assert.deepEqual(spares(), []);
  assert.deepEqual(spareImages(), []);
  // A loop device someone else still holds open detaches only at its last close (autoclear): its backing file, which
  // that holder could still reach, never becomes a spare.
  const fifth = await prepareVolume({ root, cellId: 'spare-5', uid: UID, gid: GID, sizeBytes: 16 * MiB });
  const holder = openSync(fifth.loopDevice, 'r');
  try {
    const held = await wipeVolume(fifth);
    assert.match(held.steps.find((s) => s.step === 'detach-loop')?.detail ?? '', /autoclear armed/, JSON.stringify(held.steps));
    assert.equal(held.steps.find((s) => s.step === 'delete-backing-file')?.detail, 'deleted');
    assert.deepEqual(spareImages(), [], 'a backing file a loop device still holds is not kept');
    assert.equal(existsSync(fifth.backingFile), false);
  } finally {
    closeSync(holder);
  }
});
