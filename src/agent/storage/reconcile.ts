// Start-up reconciliation of volumes: wipe everything under the volumes root that is not a live volume.
import { promises as fsp } from 'node:fs';
import { basename, dirname } from 'node:path';
import {
  loopDevicesByBackingFile,
  mountPointsWithin,
  SPARE_BACKING_FILE,
  SPARE_MOUNT_POINT,
  volumePaths,
  wipeVolume,
  type WipeReceipt,
} from './volume.js';

// ReconcileFailure is a leftover volume whose wipe failed (e.g. VolumeBusyError); retry later.
export interface ReconcileFailure {
  readonly volumeId: string;
  readonly error: Error;
}

// ReconcileResult lists the leftover volumes wiped and those that could not be.
export interface ReconcileResult {
  readonly wiped: readonly WipeReceipt[];
  readonly failed: readonly ReconcileFailure[];
}

const ENTRY = /^(v-[0-9a-f]{16})\.(cell|img|mnt)$/;
const TMP_MARKER = /^(v-[0-9a-f]{16})\.cell\.tmp$/;

// Returns the volume id a path directly under root names (<id>.cell|img|mnt), or null.
function idOf(root: string, path: string): string | null {
  if (dirname(path) !== root) return null;
  const match = ENTRY.exec(basename(path));
  return match?.[1] ?? null;
}

// Returns true if a wiped volume's tombstone is all that is left of it.
async function onlyTombstone(root: string, id: string, entries: ReadonlySet<string>): Promise<boolean> {
  if (entries.has(`${id}.img`) || entries.has(`${id}.mnt`)) return false;
  try {
    const marker: unknown = JSON.parse(await fsp.readFile(volumePaths(root, id).marker, 'utf8'));
    return typeof marker === 'object' && marker !== null && typeof (marker as { wipedAt?: unknown }).wipedAt === 'string';
  } catch {
    return false;
  }
}

// reconcileVolumes wipes every volume under `root` whose id is not in `liveIds`: found from the root's entries,
// loop devices whose backing file is there (sysfs) and mounts under it (/proc/self/mountinfo).
export async function reconcileVolumes(root: string, liveIds: Iterable<string>): Promise<ReconcileResult> {
  let canonical: string;
  try {
    canonical = await fsp.realpath(root);
  } catch (err) {
    if ((err as { code?: unknown }).code === 'ENOENT') return { wiped: [], failed: [] };
    throw err;
  }
  const live = new Set(liveIds);
  const entries = new Set(await fsp.readdir(canonical));
  // A marker's .tmp is what a crash inside an older build's writeMarker left (markers are now written in place): noise.
  for (const name of entries) {
    const id = TMP_MARKER.exec(name)?.[1];
    if (id !== undefined && !live.has(id)) await fsp.rm(`${canonical}/${name}`, { force: true });
  }
  // Spare mount points a previous run kept (volume.ts): empty directories; one still mounted somewhere stays (EBUSY).
  for (const name of entries) if (SPARE_MOUNT_POINT.test(name)) await fsp.rmdir(`${canonical}/${name}`).catch(() => undefined);
  // Spare backing files (volume.ts): empty files no loop device was bound to when they became spares.
  for (const name of entries) if (SPARE_BACKING_FILE.test(name)) await fsp.unlink(`${canonical}/${name}`).catch(() => undefined);
  const candidates = new Set<string>();
  for (const name of entries) {
    const match = ENTRY.exec(name);
    if (match?.[1] !== undefined) candidates.add(match[1]);
  }
  const inUse = new Set<string>();
  for (const path of [...(await mountPointsWithin(canonical)), ...(await loopDevicesByBackingFile()).keys()]) {
    const id = idOf(canonical, path);
    if (id !== null) inUse.add(id);
  }

  const wiped: WipeReceipt[] = [];
  const failed: ReconcileFailure[] = [];
  for (const id of [...new Set([...candidates, ...inUse])].sort()) {
    if (live.has(id)) continue;
    if (!inUse.has(id) && (await onlyTombstone(canonical, id, entries))) continue;
    try {
      wiped.push(await wipeVolume({ root: canonical, id }));
    } catch (err) {
      failed.push({ volumeId: id, error: err instanceof Error ? err : new Error(String(err)) });
    }
  }
  return { wiped, failed };
}
