// Per-cell encrypted volume: a sparse backing file on a loop device, ext4 with the encrypt
// feature, and a directory under a kernel fscrypt v2 policy (AES-256-XTS / AES-256-CTS) keyed
// by a fresh random 64-byte key that lives only in the kernel keyring of that filesystem.
//
// Layout under the agent's volumes root (all names derive from the volume id):
//   <root>/<id>.cell   marker: JSON {volumeId, cellId, createdAt[, wipedAt]}; created first, exclusively
//                      (the claim), and kept after wipe as a tombstone, so an id is used once. Rewritten in place
//                      by one padded pwrite (writeMarker); reconcile removes a <id>.cell.tmp an older build left.
//   <root>/<id>.img    sparse backing file (0600), deleted under its name by wipe. A cell's own wipe that detached every
//                      loop device from it empties it (0 blocks) and renames it to a spare (spare-img-<pid>-<n>) whose
//                      inode the next volume's backing file takes (link, so never over an existing name), up to a bound.
//   <root>/<id>.mnt/   mount point of the ext4 filesystem; a cell's wipe renames it to a spare (spare-mnt-<pid>-<n>)
//                      that the next volume's mount point is renamed from (no inode made or freed), up to a bound.
//     data/            encrypted directory (ext4 refuses a policy on the fs root), owner uid:gid, 0711
//       work/          the cell's /work (0700), encrypted
//       tmp/           the cell's /tmp (1777), encrypted
import { randomBytes, randomFillSync } from 'node:crypto';
import { chmodSync, chownSync, closeSync, constants, fstatSync, ftruncate, ftruncateSync, linkSync, lstatSync, mkdirSync, openSync, promises as fsp, readdirSync, readFileSync, realpathSync, renameSync, statSync, unlinkSync, writeFileSync, writeSync } from 'node:fs';
import { basename, join } from 'node:path';
import {
  addEncryptionKey,
  attachLoop,
  detachLoop,
  discardDevice,
  getKeyStatus,
  getPolicy,
  mountExt4,
  POLICY_V2_AES256,
  removeEncryptionKey,
  setPolicy,
  unmount,
  type KeyState,
} from './fscrypt.js';
import { openNewFile, volumeTemplate, writeVolumeImage } from './volume-template.js';

// DEFAULT_VOLUME_SIZE is the size of a volume when none is given: 256 MiB.
export const DEFAULT_VOLUME_SIZE = 256 * 1024 * 1024;

const MIN_VOLUME_SIZE = 16 * 1024 * 1024;
const BLOCK_SIZE = 4096;
const KEY_SIZE = 64;
const BUSY_RETRIES = 5;
const BUSY_RETRY_MS = 20;

// VOLUME_ID_PATTERN matches a volume id: "v-" and 16 lowercase hex digits.
export const VOLUME_ID_PATTERN = /^v-[0-9a-f]{16}$/;

// Step is one timed action of a prepare or a wipe.
export interface Step {
  readonly step: string;
  readonly at: string;
  readonly ms: number;
  readonly detail?: string;
}

// Volume is a prepared volume, bound for life to the cell it was created for.
export interface Volume {
  readonly id: string;
  readonly cellId: string;
  readonly root: string;
  readonly backingFile: string;
  readonly loopDevice: string;
  readonly mountPoint: string;
  readonly dataDir: string;
  readonly workDir: string;
  readonly tmpDir: string;
  readonly keyIdentifier: string;
  readonly sizeBytes: number;
  readonly uid: number;
  readonly gid: number;
  readonly createdAt: string;
  readonly steps: readonly Step[];
}

// VolumeRef names a volume to wipe: a full Volume or just its root and id (crash recovery).
export interface VolumeRef {
  readonly root: string;
  readonly id: string;
}

// PrepareOptions says where to create a volume, for which cell, and who owns its files.
export interface PrepareOptions {
  readonly root: string;
  readonly cellId: string;
  readonly uid: number;
  readonly gid: number;
  readonly sizeBytes?: number;
  readonly volumeId?: string;
}

// WipeReceipt records what a wipe found and did; it never contains key material.
export interface WipeReceipt {
  readonly volumeId: string;
  readonly cellId: string | null;
  readonly keyIdentifier: string | null;
  readonly keyStateAfterRemoval: KeyState | null;
  readonly loopDevices: readonly string[];
  readonly startedAt: string;
  readonly finishedAt: string;
  readonly totalMs: number;
  readonly steps: readonly Step[];
}

// VolumeAlreadyUsedError is thrown when a volume id has been claimed before (it may never be attached again).
export class VolumeAlreadyUsedError extends Error {
  readonly code = 'VOLUME_ALREADY_USED';
  constructor(readonly volumeId: string) {
    super(`volume ${volumeId} was already used; volume ids are single-use`);
    this.name = 'VolumeAlreadyUsedError';
  }
}

// VolumeBusyError is thrown when a wipe cannot finish because files or mounts of the volume are still in use;
// the volume is left in place (key removed as far as the kernel allowed) for a later retry.
export class VolumeBusyError extends Error {
  readonly code = 'VOLUME_BUSY';
  constructor(readonly volumeId: string, reason: string, readonly steps: readonly Step[]) {
    super(`volume ${volumeId} is busy: ${reason}`);
    this.name = 'VolumeBusyError';
  }
}

// VolumePaths are the host paths of a volume, all derived from root and id.
export interface VolumePaths {
  readonly marker: string;
  readonly backingFile: string;
  readonly mountPoint: string;
  readonly dataDir: string;
}

// volumePaths derives a volume's host paths from the (canonical) root and its id.
export function volumePaths(root: string, id: string): VolumePaths {
  if (!VOLUME_ID_PATTERN.test(id)) throw new TypeError(`invalid volume id ${JSON.stringify(id)}`);
  const mountPoint = join(root, `${id}.mnt`);
  return {
    marker: join(root, `${id}.cell`),
    backingFile: join(root, `${id}.img`),
    mountPoint,
    dataDir: join(mountPoint, 'data'),
  };
}

// newVolumeId returns a fresh random volume id.
export function newVolumeId(): string {
  return `v-${randomBytes(8).toString('hex')}`;
}

// Records timed steps for a prepare or wipe.
class StepLog {
  readonly steps: Step[] = [];

  // Runs fn as a named step and records its start time and duration.
  async run<T>(step: string, fn: () => T | Promise<T>, detail?: (result: T) => string): Promise<T> {
    const at = new Date().toISOString();
    const t0 = performance.now();
    const result = await fn();
    const ms = Math.round((performance.now() - t0) * 1000) / 1000;
    this.steps.push(detail === undefined ? { step, at, ms } : { step, at, ms, detail: detail(result) });
    return result;
  }
}

// Returns true if err is a Node/addon error with the given errno code.
function hasCode(err: unknown, code: string): boolean {
  return typeof err === 'object' && err !== null && (err as { code?: unknown }).code === code;
}

// Validates a uid/gid value.
function assertId(name: string, value: number): void {
  if (!Number.isInteger(value) || value < 0 || value > 0xfffffffe) throw new TypeError(`${name} must be an integer id`);
}

// prepareVolume creates, formats, mounts and encrypts a fresh volume bound to `cellId`; throws
// VolumeAlreadyUsedError if `volumeId` was ever claimed. On failure everything created is wiped
// (the id stays burned) and the error is rethrown.
export async function prepareVolume(options: PrepareOptions): Promise<Volume> {
  const id = options.volumeId ?? newVolumeId();
  const sizeBytes = options.sizeBytes ?? DEFAULT_VOLUME_SIZE;
  if (!VOLUME_ID_PATTERN.test(id)) throw new TypeError(`invalid volume id ${JSON.stringify(id)}`);
  if (options.cellId.length === 0) throw new TypeError('cellId must not be empty');
  if (!Number.isSafeInteger(sizeBytes) || sizeBytes < MIN_VOLUME_SIZE || sizeBytes % BLOCK_SIZE !== 0) {
    throw new TypeError(`sizeBytes must be a multiple of ${BLOCK_SIZE} and at least ${MIN_VOLUME_SIZE}`);
  }
  assertId('uid', options.uid);
  assertId('gid', options.gid);

  // The root exists after the first volume: these are an EEXIST and a realpath(3), cheaper than two thread-pool hops.
  mkdirSync(options.root, { recursive: true, mode: 0o711 });
  const root = realpathSync.native(options.root);
  const paths = volumePaths(root, id);
  const log = new StepLog();
  const createdAt = new Date().toISOString();

  await log.run('claim', async () => {
    try {
      await claimMarker(paths.marker, { volumeId: id, cellId: options.cellId, createdAt });
    } catch (err) {
      if (hasCode(err, 'EEXIST')) throw new VolumeAlreadyUsedError(id);
      throw err;
    }
  });

  try {
    // The filesystem comes from the size's template (volume-template.ts): a fresh sparse file with the template's few
    // metadata blocks and its own UUID, instead of an mkfs.ext4 process per volume.
    const template = await volumeTemplate(sizeBytes);
    await log.run('create-backing-file', async () => {
      const spare = takeSpareBackingFile(root, paths.backingFile);
      return { bytes: await writeVolumeImage(template, paths.backingFile, spare), spare };
    }, (r) => `${r.bytes} bytes of filesystem metadata from the template${r.spare ? ' (into an emptied spare inode)' : ''}`);
    const loopDevice = await log.run('attach-loop', () => attachLoop(paths.backingFile, BLOCK_SIZE, false), (d) => d);
    await log.run('mount', async () => {
      await makeMountPoint(root, paths.mountPoint);
      await mountExt4(loopDevice, paths.mountPoint);
    });
    const keyIdentifier = await log.run('add-key', () => {
      const key = Buffer.alloc(KEY_SIZE);
      try {
        randomFillSync(key);
        return addEncryptionKey(paths.mountPoint, key);
      } finally {
        key.fill(0);
      }
    }, (k) => k);
    const workDir = join(paths.dataDir, 'work');
    const tmpDir = join(paths.dataDir, 'tmp');
    // The directories inside the fresh volume are made synchronously: each call is a few microseconds on its own small
    // filesystem, where a thread-pool round trip per call (seven of them) cost the agent more than the calls.
    await log.run('set-policy', async () => {
      // The fresh filesystem's first change reads its metadata through the loop device: on the thread pool.
      await fsp.mkdir(paths.dataDir, { mode: 0o711 });
      setPolicy(paths.dataDir, keyIdentifier);
      const policy = getPolicy(paths.dataDir);
      if (policy === null || policy.version !== POLICY_V2_AES256.version || policy.contentsMode !== POLICY_V2_AES256.contentsMode ||
          policy.filenamesMode !== POLICY_V2_AES256.filenamesMode || policy.flags !== POLICY_V2_AES256.flags ||
          policy.keyIdentifier !== keyIdentifier) {
        throw new Error(`encryption policy read back from ${paths.dataDir} does not match what was set`);
      }
    });
    await log.run('populate', () => {
      mkdirSync(workDir, { mode: 0o700 });
      mkdirSync(tmpDir);
      chmodSync(paths.dataDir, 0o711);
      chmodSync(tmpDir, 0o1777);
      for (const dir of [paths.dataDir, workDir, tmpDir]) chownSync(dir, options.uid, options.gid);
    });
    return Object.freeze({
      id,
      cellId: options.cellId,
      root,
      backingFile: paths.backingFile,
      loopDevice,
      mountPoint: paths.mountPoint,
      dataDir: paths.dataDir,
      workDir,
      tmpDir,
      keyIdentifier,
      sizeBytes,
      uid: options.uid,
      gid: options.gid,
      createdAt,
      steps: Object.freeze(log.steps),
    });
  } catch (err) {
    await wipeVolume({ root, id }).catch(() => undefined);
    throw err;
  }
}

// What the host shows of a volume: mount points in this mount namespace and loop devices.
interface HostFootprint {
  readonly mounts: readonly string[];
  readonly loopDevices: readonly string[];
}

// unescapeMountPath decodes the octal escapes (\040 etc.) the kernel uses in /proc/self/mountinfo paths.
export function unescapeMountPath(path: string): string {
  return path.replace(/\\([0-7]{3})/g, (_, oct: string) => String.fromCharCode(parseInt(oct, 8)));
}

// parseMountPoints returns the mount point (5th field) of every line of a mountinfo text, in order.
export function parseMountPoints(mountinfo: string): string[] {
  const points: string[] = [];
  for (const line of mountinfo.split('\n')) {
    const field = line.split(' ')[4];
    if (field !== undefined) points.push(unescapeMountPath(field));
  }
  return points;
}

// mountPointsWithin lists this namespace's mount points at or under `dir`, latest (innermost) first.
// Read synchronously: procfs builds the text in one read, where the thread pool took one round trip per 64 KiB chunk
// plus open, stat and close (every wipe reads it).
export async function mountPointsWithin(dir: string): Promise<string[]> {
  const points = parseMountPoints(readFileSync('/proc/self/mountinfo', 'utf8'));
  return points.filter((p) => p === dir || p.startsWith(`${dir}/`)).reverse();
}

// Reads a loop device's backing file path from sysfs (without the " (deleted)" suffix), or null if unbound.
// Synchronous: a sysfs read is a few microseconds, and a scan reads one per loop device on the host (hundreds on some),
// which through the thread pool cost a wipe ~35 ms of agent CPU.
function loopBackingFile(name: string): string | null {
  try {
    const text = readFileSync(`/sys/block/${name}/loop/backing_file`, 'utf8').replace(/\n$/, '');
    return text.replace(/ \(deleted\)$/, '');
  } catch (err) {
    // ENOENT: not bound; ENODEV/ENXIO: being unbound (or removed) right now by another wipe.
    if (hasCode(err, 'ENOENT') || hasCode(err, 'ENODEV') || hasCode(err, 'ENXIO')) return null;
    throw err;
  }
}

// boundLoopNames lists the loop devices that have a capacity: /proc/partitions shows a loop device only while it is
// bound to a non-empty file (every volume's backing file is at least MIN_VOLUME_SIZE). One read, where probing
// /sys/block/loopN for each of the host's loop devices (hundreds on some hosts) cost ~2 ms of agent CPU per wipe.
function boundLoopNames(): string[] {
  const names: string[] = [];
  for (const line of readFileSync('/proc/partitions', 'utf8').split('\n')) {
    const name = line.trim().split(/\s+/)[3];
    if (name !== undefined && /^loop\d+$/.test(name)) names.push(name);
  }
  return names;
}

// loopDevicesByBackingFile maps every bound loop device's backing file to its /dev paths.
export async function loopDevicesByBackingFile(): Promise<Map<string, string[]>> {
  const byFile = new Map<string, string[]>();
  for (const name of boundLoopNames()) {
    const file = loopBackingFile(name);
    if (file === null) continue;
    byFile.set(file, [...(byFile.get(file) ?? []), `/dev/${name}`]);
  }
  return byFile;
}

// Finds a volume's current host footprint: every loop device sysfs shows bound to its backing file (the hint from
// prepare is not enough — a device bound a second time would outlive the file otherwise).
async function findFootprint(paths: VolumePaths): Promise<HostFootprint> {
  const mounts = await mountPointsWithin(paths.mountPoint);
  const loopDevices = (await loopDevicesByBackingFile()).get(paths.backingFile) ?? [];
  return { mounts, loopDevices };
}

// Claims a volume id: creates its marker (O_EXCL: EEXIST if the id was ever used) on the thread pool, since an inode
// creation on the host's journal-less ext4 scans recently freed inodes (about a millisecond under load), then writes it.
async function claimMarker(path: string, marker: Record<string, unknown>): Promise<void> {
  const fd = await openNewFile(path, constants.O_WRONLY);
  try {
    const line = Buffer.from(`${JSON.stringify(marker)}\n`);
    const written = writeSync(fd, line, 0, line.length, 0);
    if (written !== line.length) throw new Error(`short write of volume marker ${path}: ${written} of ${line.length} bytes`);
  } finally {
    closeSync(fd);
  }
}

// Writes a marker without creating or freeing an inode beyond the marker's own. On this kind of host the volumes root is
// on ext4 without a journal, where every file creation scans past each inode freed in the last minutes
// (`recently_deleted`): a temporary file per write (three per volume) made that scan, and so the agent's CPU per job,
// grow with the job rate. A claim creates the marker itself (O_EXCL: the claim stays exclusive); a crash before its one
// write leaves an empty marker, which reads as unreadable (null) and is wiped and tombstoned by reconcile like any
// other. A rewrite is one pwrite(2) at offset 0 of the new line padded with spaces to at least the old length (JSON
// allows trailing whitespace): it replaces every old byte in a single call, so a reader or a crash sees the old marker
// or the new one, never a mix.
// Synchronous: one short line of a small file (no thread-pool round trips). (A claim is claimMarker.)
function writeMarker(path: string, marker: Record<string, unknown>): void {
  const line = JSON.stringify(marker);
  let fd: number;
  try {
    fd = openSync(path, constants.O_WRONLY | constants.O_NOFOLLOW);
  } catch (err) {
    // No marker (a volume found only by its backing file or mount): the rewrite creates it.
    if (hasCode(err, 'ENOENT')) return writeFileSync(path, `${line}\n`, { flag: 'wx', mode: 0o600 });
    throw err;
  }
  try {
    const oldBytes = fstatSync(fd).size;
    const text = Buffer.from(`${line}\n`);
    const whole = text.length >= oldBytes ? text : Buffer.from(`${line}${' '.repeat(oldBytes - text.length)}\n`);
    const written = writeSync(fd, whole, 0, whole.length, 0);
    if (written !== whole.length) throw new Error(`short write of volume marker ${path}: ${written} of ${whole.length} bytes`);
  } finally {
    closeSync(fd);
  }
}

// SPARE_MOUNT_POINT matches an emptied mount point kept under a volumes root for the next volume (spareMountPoints).
export const SPARE_MOUNT_POINT = /^spare-mnt-\d+-\d+$/;
/** MAX_SPARE_MOUNT_POINTS bounds the spares kept per root (about the most volumes prepared at once). */
const MAX_SPARE_MOUNT_POINTS = 64;
/**
 * Emptied mount points of this process's wiped volumes, per root. A new volume's mount point is a spare renamed to its
 * name, and a wiped one is renamed to a spare: on the host's no-journal ext4 a directory's creation scans past every
 * recently freed inode (`recently_deleted`, the largest single cost of a job's agent CPU under load), and a rename
 * within the root creates and frees none. A spare was only ever covered by its volume's mount, never written through,
 * and is used only after its volume was unmounted; reconcile removes those a previous run left (SPARE_MOUNT_POINT).
 */
const spareMountPoints = new Map<string, string[]>();
let spareSeq = 0;

// Makes `mountPoint` (0700) from a spare of `root` if there is one, else anew.
async function makeMountPoint(root: string, mountPoint: string): Promise<void> {
  const spares = spareMountPoints.get(root);
  for (let spare = spares?.pop(); spare !== undefined; spare = spares?.pop()) {
    try {
      return renameSync(spare, mountPoint);
    } catch (err) {
      if (!hasCode(err, 'ENOENT')) throw err; // removed meanwhile (a reconcile): try the next one
    }
  }
  await fsp.mkdir(mountPoint, { mode: 0o700 });
}

// Keeps an unmounted, empty mount point as a spare of `root` (renamed out of the volume's name), or removes it.
async function retireMountPoint(root: string, mountPoint: string): Promise<void> {
  const spares = spareMountPoints.get(root) ?? [];
  let empty: boolean;
  try {
    empty = readdirSync(mountPoint).length === 0;
  } catch (err) {
    if (hasCode(err, 'ENOENT')) return;
    throw err;
  }
  if (!empty || spares.length >= MAX_SPARE_MOUNT_POINTS) return removeIfPresent(() => fsp.rmdir(mountPoint));
  const spare = join(root, `spare-mnt-${process.pid}-${spareSeq++}`);
  try {
    renameSync(mountPoint, spare);
  } catch (err) {
    if (hasCode(err, 'ENOENT')) return;
    throw err;
  }
  spares.push(spare);
  spareMountPoints.set(root, spares);
}

// SPARE_BACKING_FILE matches an emptied backing file kept under a volumes root for the next volume (spareBackingFiles).
export const SPARE_BACKING_FILE = /^spare-img-\d+-\d+$/;
/** MAX_SPARE_BACKING_FILES bounds the spare backing files kept per root (about the most volumes prepared at once). */
const MAX_SPARE_BACKING_FILES = 64;
/**
 * Emptied backing files of this process's wiped volumes, per root. As with mount points, a new volume's backing file
 * takes a spare's inode and a wiped one becomes a spare, so a job neither creates nor frees an inode for it on the host's
 * journal-less ext4 (each creation scans past every inode freed in the last minute: a backing file made and deleted per
 * job was both the largest such scan and a large share of what every other creation skipped). A spare never holds a
 * block: its volume's key was removed (ABSENT), every loop device was detached from it (none merely autoclear-armed, whose
 * holder could still reach the next volume through it), and it is truncated to nothing before it becomes a spare and
 * again before it is written. Reconcile deletes those a previous run left (SPARE_BACKING_FILE).
 */
const spareBackingFiles = new Map<string, string[]>();

// Links a spare backing file of `root` to `path` (link(2): EEXIST rather than replacing a file of that name) and drops
// the spare's name; returns whether it did.
function takeSpareBackingFile(root: string, path: string): boolean {
  const spares = spareBackingFiles.get(root);
  for (let spare = spares?.pop(); spare !== undefined; spare = spares?.pop()) {
    try {
      linkSync(spare, path);
    } catch (err) {
      if (hasCode(err, 'ENOENT')) continue; // removed meanwhile (a reconcile): try the next one
      spares!.push(spare); // still a spare; the prepare fails on this error
      throw err;
    }
    try {
      unlinkSync(spare);
    } catch (err) {
      if (!hasCode(err, 'ENOENT')) throw err; // a reconcile removed the spare's name meanwhile: `path` holds the inode
    }
    return true;
  }
  return false;
}

// Keeps a wiped volume's backing file, emptied, as a spare of `root` (renamed out of the volume's name), or deletes it;
// resolves to what it did, for the receipt (either way the volume's name is gone).
async function retireBackingFile(root: string, backingFile: string): Promise<string> {
  if ((spareBackingFiles.get(root)?.length ?? 0) >= MAX_SPARE_BACKING_FILES) {
    await removeIfPresent(() => fsp.unlink(backingFile));
    return 'deleted';
  }
  let fd: number;
  try {
    // O_NONBLOCK: whatever is at the name, the open does not wait (a FIFO would block the agent's thread for good).
    fd = openSync(backingFile, constants.O_WRONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
  } catch (err) {
    if (hasCode(err, 'ENOENT')) return 'not present';
    // Not a file this agent made (a symlink: ELOOP; a FIFO without a reader: ENXIO): remove the name, keep nothing.
    if (!hasCode(err, 'ELOOP') && !hasCode(err, 'ENXIO')) throw err;
    await removeIfPresent(() => fsp.unlink(backingFile));
    return 'deleted';
  }
  let st: ReturnType<typeof fstatSync>;
  try {
    st = fstatSync(fd);
    if (!st.isFile() || st.nlink !== 1) {
      await removeIfPresent(() => fsp.unlink(backingFile));
      return 'deleted';
    }
    // Discard left it without blocks; freeing any that remain may wait for the disk (ext4 `discard`): thread pool then.
    if (st.blocks > 0) await new Promise<void>((resolve, reject) => ftruncate(fd, 0, (e) => (e ? reject(e) : resolve())));
    else ftruncateSync(fd, 0);
  } finally {
    closeSync(fd);
  }
  const spare = join(root, `spare-img-${process.pid}-${spareSeq++}`);
  renameSync(backingFile, spare);
  // The rename went by name after an await: keep the spare only if it is still the inode emptied above.
  const renamed = lstatSync(spare);
  // The list is read again after the awaits: a concurrent wipe may have added the root's first spares meanwhile.
  const spares = spareBackingFiles.get(root) ?? [];
  if (renamed.ino !== st.ino || renamed.dev !== st.dev || spares.length >= MAX_SPARE_BACKING_FILES) {
    await removeIfPresent(() => fsp.unlink(spare));
    return 'deleted';
  }
  spares.push(spare);
  spareBackingFiles.set(root, spares);
  return 'deleted under its name; its inode, emptied (0 blocks), kept as a spare for the next volume';
}

// Reads a volume's marker, or null if it is missing or unreadable.
// A marker is one short line in the page cache: read synchronously, not in four thread-pool round trips.
async function readMarker(path: string): Promise<Record<string, unknown> | null> {
  try {
    const parsed: unknown = JSON.parse(readFileSync(path, 'utf8'));
    return typeof parsed === 'object' && parsed !== null ? (parsed as Record<string, unknown>) : null;
  } catch {
    return null;
  }
}

// Removes the volume's key from its filesystem keyring, retrying briefly while files are busy; returns the final state.
async function removeKey(id: string, mountPoint: string, keyIdentifier: string, log: StepLog): Promise<KeyState> {
  for (let attempt = 1; ; attempt++) {
    await log.run('remove-key', async () => {
      try {
        return await removeEncryptionKey(mountPoint, keyIdentifier);
      } catch (err) {
        if (hasCode(err, 'ENOKEY')) return null;
        throw err;
      }
    }, (r) => (r === null ? 'not present' : `filesBusy=${r.filesBusy} otherUsers=${r.otherUsers}`));
    const status = await log.run('key-status', () => getKeyStatus(mountPoint, keyIdentifier), (s) => s.state);
    if (status.state === 'absent') return status.state;
    if (attempt >= BUSY_RETRIES) {
      throw new VolumeBusyError(id, `key ${keyIdentifier} is ${status.state} after ${attempt} removals (files still open)`, log.steps);
    }
    await new Promise((resolve) => setTimeout(resolve, BUSY_RETRY_MS));
  }
}

// Runs fn, converting EBUSY into a VolumeBusyError.
async function busyAs<T>(id: string, what: string, log: StepLog, fn: () => T | Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (err) {
    if (hasCode(err, 'EBUSY')) throw new VolumeBusyError(id, what, log.steps);
    throw err;
  }
}

// Removes a path if present.
async function removeIfPresent(fn: () => Promise<void>): Promise<void> {
  try {
    await fn();
  } catch (err) {
    if (!hasCode(err, 'ENOENT')) throw err;
  }
}

// wipeVolume crypto-shreds and deletes a volume: removes its key (must end ABSENT), unmounts, discards and
// detaches the loop device, deletes the backing file and mount point, and turns the marker into a tombstone.
// It works from whatever the host shows, so it also finishes half-prepared or half-wiped volumes.
export async function wipeVolume(ref: VolumeRef): Promise<WipeReceipt> {
  const startedAt = new Date().toISOString();
  const t0 = performance.now();
  const root = realpathSync.native(ref.root);
  const paths = volumePaths(root, ref.id);
  const log = new StepLog();
  const marker = await log.run('read-marker', () => readMarker(paths.marker));
  const footprint = await log.run('find-footprint', () => findFootprint(paths),
    (f) => `mounts=${f.mounts.length} loops=${f.loopDevices.join(',') || 'none'}`);

  let keyIdentifier: string | null = null;
  let keyState: KeyState | null = null;
  if (footprint.mounts.includes(paths.mountPoint)) {
    const policy = await log.run('read-policy', () => {
      try {
        return getPolicy(paths.dataDir);
      } catch (err) {
        if (hasCode(err, 'ENOENT')) return null;
        throw err;
      }
    }, (p) => (p === null ? 'none' : `v${p.version}`));
    // Key removal syncs the filesystem first (the kernel cannot evict dirty inodes), so its cost grows with the
    // dirty data; it runs off the event loop. (EXT4_IOC_SHUTDOWN would skip that writeback but makes the removal
    // fail with EIO, losing the proof that the key is ABSENT.)
    if (policy !== null) {
      keyIdentifier = policy.keyIdentifier;
      keyState = await removeKey(ref.id, paths.mountPoint, policy.keyIdentifier, log);
      // Remembered on disk: a retry (after a busy unmount or detach) no longer sees the mount to prove it again.
      // Synchronous, as the tombstone below: a rewrite of one short line of an existing file (no inode to allocate).
      writeMarker(paths.marker, { ...marker, keyAbsentAt: new Date().toISOString(), keyIdentifier });
    }
  } else if (typeof marker?.['keyAbsentAt'] === 'string') {
    keyState = 'absent';
    keyIdentifier = typeof marker['keyIdentifier'] === 'string' ? marker['keyIdentifier'] : null;
  }
  for (const mount of footprint.mounts) {
    // The receipt reaches the job's owner: it names the mount point, not where on the host it is.
    await log.run('unmount', () => busyAs(ref.id, `${mount} is still in use`, log, () => unmount(mount)), () => basename(mount));
  }
  // Whether every loop device let go of the backing file at once (none left autoclear-armed): only then may its inode serve again.
  let detached = true;
  for (const device of footprint.loopDevices) {
    // A process in another mount namespace (a gVisor gofer, a runtime mid-create) may still hold a copy of the
    // mount. The key is already gone (ABSENT, checked above), so what remains is ciphertext nobody can read:
    // discard is then skipped and LOOP_CLR_FD only arms autoclear — the kernel detaches the device and frees
    // the (already unlinked) backing file when the last reference goes. The receipt says so.
    await log.run('discard', async () => {
      try {
        const bytes = await discardDevice(device);
        const { blocks } = statSync(paths.backingFile);
        return `${device} ${bytes} bytes; backing file now holds ${blocks * 512} bytes`;
      } catch (err) {
        if (!hasCode(err, 'EBUSY') || keyState !== 'absent') throw err;
        detached = false;
        return `${device} deferred: still mounted in another mount namespace; its blocks are freed when it is released`;
      }
    }, (d) => d);
    await log.run('detach-loop', async () => {
      await busyAs(ref.id, `${device} is still open`, log, () => detachLoop(device, keyState === 'absent'));
      if (loopBackingFile(device.replace(/^\/dev\//, '')) !== paths.backingFile) return device;
      if (keyState !== 'absent') throw new VolumeBusyError(ref.id, `${device} still bound to ${paths.backingFile} after LOOP_CLR_FD`, log.steps);
      detached = false;
      return `${device} autoclear armed: detaches when its last holder releases it`;
    }, (d) => d);
  }
  // A cell's own wipe whose key is ABSENT and whose loop devices all let go keeps the emptied inode for the next volume.
  await log.run('delete-backing-file', async () => {
    if ('mountPoint' in ref && keyState === 'absent' && detached) return retireBackingFile(root, paths.backingFile);
    await removeIfPresent(() => fsp.unlink(paths.backingFile));
    return 'deleted';
  }, (d) => d);
  // A cell's own wipe keeps the emptied mount point for the next volume; a recovery (a bare ref) removes it.
  await log.run('remove-mount-point', () => ('mountPoint' in ref ? retireMountPoint(root, paths.mountPoint) : removeIfPresent(() => fsp.rmdir(paths.mountPoint))));
  const finishedAt = new Date().toISOString();
  const cellId = typeof marker?.['cellId'] === 'string' ? marker['cellId'] : null;
  const keyAbsent = keyState === 'absent' ? { keyAbsentAt: marker?.['keyAbsentAt'] ?? finishedAt, keyIdentifier } : {};
  await log.run('tombstone', () =>
    writeMarker(paths.marker, { ...marker, ...keyAbsent, volumeId: ref.id, cellId, wipedAt: finishedAt }));
  return {
    volumeId: ref.id,
    cellId,
    keyIdentifier,
    keyStateAfterRemoval: keyState,
    loopDevices: footprint.loopDevices,
    startedAt,
    finishedAt,
    totalMs: Math.round((performance.now() - t0) * 1000) / 1000,
    steps: log.steps,
  };
}
