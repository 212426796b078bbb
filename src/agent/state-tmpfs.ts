/**
 * Short-lived per-cell state on tmpfs mounts of the agent's own: the cells directory (each cell's directory, bundle
 * config, control FIFO, job marker, the runtime's pid file) and each OCI runtime's state root (`--root`: the runtime
 * writes a few files per container, on every create and delete). On a host whose root filesystem is ext4 without a
 * journal, each file creation scans the inode bitmap past every inode deleted in the last ~30 s (ext4's
 * `recently_deleted` check, done only without a journal): under sustained load that is a large share of the agent's
 * and the runtime's CPU. Nothing there needs to outlive the host: a tmpfs keeps it across agent restarts (reconcile
 * still finds it) and a reboot, which ends every cell anyway, empties it. Volumes' backing files and markers stay on disk.
 */
import { existsSync, mkdirSync, readdirSync, readFileSync } from 'node:fs';
import { loadAddon } from './storage/fscrypt.js';

/**
 * STATE_TMPFS_BYTES bounds each tmpfs (a ceiling: a tmpfs holds only what is written): a few KiB per cell in the cells
 * directory; per container in a runtime's state root about 24 KiB for runc (state.json holds the seccomp list), 20 for
 * crun, 8 for runsc — room for a few thousand, past the largest pool and `maxRunningJobs` a config allows (1000).
 */
export const STATE_TMPFS_BYTES = { cells: 64 * 1024 * 1024, runtime: 64 * 1024 * 1024 } as const;

function isMountPoint(dir: string): boolean {
  return readFileSync('/proc/self/mountinfo', 'utf8').split('\n').some((line) => line.split(' ')[4] === dir);
}

/**
 * ensureStateTmpfs mounts a tmpfs (source `cleanroom-<kind>`) on `dir` unless one is there; returns false (and leaves
 * the directory on disk) when the directory already holds entries that are not on a tmpfs (reconcile kept them: they
 * must stay visible).
 */
export function ensureStateTmpfs(dir: string, kind: keyof typeof STATE_TMPFS_BYTES): boolean {
  mkdirSync(dir, { recursive: true, mode: 0o711 });
  if (isMountPoint(dir)) return true;
  if (readdirSync(dir).length > 0) return false;
  const a = loadAddon();
  a.mount(`cleanroom-${kind}`, dir, 'tmpfs', a.constants.MS_NOSUID! | a.constants.MS_NODEV!, `mode=0711,size=${STATE_TMPFS_BYTES[kind]}`);
  return true;
}

/** releaseStateTmpfs unmounts a state tmpfs when nothing is left in it (clean shutdown, `cleanroom down`). */
export async function releaseStateTmpfs(dir: string): Promise<void> {
  if (!existsSync(dir) || !isMountPoint(dir) || readdirSync(dir).length > 0) return;
  await loadAddon().umount(dir, 0);
}
