/**
 * The cells directory on a tmpfs of its own. Every cell creates a handful of short-lived files there (its directory,
 * bundle config, control FIFO, job marker, the runtime's pid file), and on a host whose root filesystem is ext4 without
 * a journal each file creation scans the inode bitmap past every inode deleted in the last ~30 s (ext4's
 * `recently_deleted` check, done only without a journal): under sustained load that was about a quarter of the agent's
 * CPU. Nothing there needs to outlive the host: a tmpfs keeps it across agent restarts (reconcile still finds it) and a
 * reboot, which ends every cell anyway, empties it. Volumes' backing files and markers stay on disk.
 */
import { existsSync, mkdirSync, readdirSync, readFileSync } from 'node:fs';
import { loadAddon } from '../storage/fscrypt.js';

/** CELLS_TMPFS_BYTES bounds the tmpfs: a few KiB per cell. */
const CELLS_TMPFS_BYTES = 64 * 1024 * 1024;
const SOURCE = 'cleanroom-cells';

function isMountPoint(dir: string): boolean {
  return readFileSync('/proc/self/mountinfo', 'utf8').split('\n').some((line) => line.split(' ')[4] === dir);
}

/**
 * ensureCellsTmpfs mounts a tmpfs on `dir` unless one is there; returns false (and leaves the directory on disk) when
 * the directory already holds entries that are not on a tmpfs (reconcile kept them: they must stay visible).
 */
export function ensureCellsTmpfs(dir: string): boolean {
  mkdirSync(dir, { recursive: true, mode: 0o711 });
  if (isMountPoint(dir)) return true;
  if (readdirSync(dir).length > 0) return false;
  const a = loadAddon();
  a.mount(SOURCE, dir, 'tmpfs', a.constants.MS_NOSUID! | a.constants.MS_NODEV!, `mode=0711,size=${CELLS_TMPFS_BYTES}`);
  return true;
}

/** releaseCellsTmpfs unmounts the cells tmpfs when no cell is left in it (clean shutdown, `cleanroom down`). */
export async function releaseCellsTmpfs(dir: string): Promise<void> {
  if (!existsSync(dir) || !isMountPoint(dir) || readdirSync(dir).length > 0) return;
  await loadAddon().umount(dir, 0);
}
