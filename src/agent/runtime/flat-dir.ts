/**
 * removeFlatDir removes a directory of a few files (a cell's bundle, a runtime's state directory) and does nothing when
 * it is gone. Node's recursive rmSync walks it in JavaScript and learns it is not empty from a thrown ENOTEMPTY; here
 * it is one listing, an unlink per file and an rmdir. A directory with a subdirectory in it (an image cell's root mount
 * points) goes to the recursive removal, as before.
 */
import { readdirSync, rmdirSync, rmSync, unlinkSync } from 'node:fs';
import { join } from 'node:path';

export function removeFlatDir(dir: string): void {
  let entries;
  try {
    entries = readdirSync(dir, { withFileTypes: true });
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return;
    throw e;
  }
  if (entries.some((e) => e.isDirectory())) return rmSync(dir, { recursive: true, force: true });
  for (const e of entries) {
    try {
      unlinkSync(join(dir, e.name));
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    }
  }
  rmdirSync(dir);
}
