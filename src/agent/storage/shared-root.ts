/** The volumes directory as a shared mount point, so that unmounting a volume reaches every copy of it. */
import { readFileSync } from 'node:fs';
import { run } from '../exec.js';

/**
 * ensureSharedRoot makes `dir` a mount point with shared propagation. A process that creates its own mount
 * namespace (a runtime mid-create, a gVisor gofer) copies every mount of that moment; with the volumes under
 * a shared (or, in a container, slave) peer group, the agent's unmount at wipe propagates to those copies
 * instead of leaving them holding the volume's loop device.
 */
export async function ensureSharedRoot(dir: string): Promise<void> {
  const entry = mountEntry(dir);
  if (!entry) await run(['mount', '--bind', dir, dir]);
  if (!mountEntry(dir)?.shared) await run(['mount', '--make-shared', dir]);
}

/** releaseSharedRoot unmounts the bind mount made by ensureSharedRoot (when no volume is left under it). */
export async function releaseSharedRoot(dir: string): Promise<void> {
  if (mountEntry(dir)) await run(['umount', dir]);
}

function mountEntry(dir: string): { shared: boolean } | null {
  for (const line of readFileSync('/proc/self/mountinfo', 'utf8').split('\n')) {
    const f = line.split(' ');
    if (f[4] === dir) return { shared: f.slice(6, f.indexOf('-')).some((o) => o.startsWith('shared:')) };
  }
  return null;
}
