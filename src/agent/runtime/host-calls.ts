// Typed wrapper over build/runtime.node: the host calls the cell runtime makes in-process (see native/runtime).
import { accessSync, constants } from 'node:fs';
import { join } from 'node:path';
import { loadNativeAddon } from '../native-addon.js';

interface Addon {
  mkfifo(path: string, mode: number): void;
  sealedCopy(path: string): number;
}

/** makeFifo creates a FIFO with exactly `mode` (the cell's control channel), without spawning `mkfifo`. */
export function makeFifo(path: string, mode: number): void {
  loadNativeAddon<Addon>('runtime').mkfifo(path, mode);
}

/**
 * sealedExecutable copies an executable into a sealed memfd that this process keeps open for its lifetime, and returns
 * the path to run it by (/proc/<pid>/fd/<fd>). Children run the copy: a later change to the file on disk does not
 * reach them, and runc, seeing itself sealed, skips cloning itself for every container.
 */
export function sealedExecutable(path: string): string {
  const fd = loadNativeAddon<Addon>('runtime').sealedCopy(path);
  return `/proc/${process.pid}/fd/${fd}`;
}

/** findExecutable returns the first executable `name` on PATH (then the sbin directories); throws if there is none. */
export function findExecutable(name: string): string {
  const dirs = [...(process.env.PATH ?? '').split(':'), '/usr/local/sbin', '/usr/sbin', '/sbin'].filter((d) => d.startsWith('/'));
  for (const dir of dirs) {
    const candidate = join(dir, name);
    try {
      accessSync(candidate, constants.X_OK);
      return candidate;
    } catch {
      // not here
    }
  }
  throw new Error(`${name} not found on PATH or in /usr/sbin`);
}
