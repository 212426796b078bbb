/**
 * removeFlatDir removes a directory of a few files (a cell's bundle, a runtime's state directory) and does nothing when
 * it is gone. Node's recursive rmSync walks it in JavaScript and learns it is not empty from a thrown ENOTEMPTY; here
 * it is one listing, an unlink per file and an rmdir. A directory with a subdirectory in it (an image cell's root mount
 * points) goes to the recursive removal, as before.
 */
import { promises as fsp, readdirSync, rmdirSync, rmSync, unlinkSync } from 'node:fs';
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

/**
 * removeFlatDirAsync is removeFlatDir on the thread pool, for a directory on the host's disk (a runtime's state
 * directory): on ext4 without a journal but with `discard`, freeing a file's or directory's blocks issues the discard
 * to the disk synchronously, and the agent's thread waited for it in every wipe.
 */
export async function removeFlatDirAsync(dir: string): Promise<void> {
  let entries;
  try {
    entries = await fsp.readdir(dir, { withFileTypes: true });
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return;
    throw e;
  }
  if (entries.some((e) => e.isDirectory())) return fsp.rm(dir, { recursive: true, force: true });
  await Promise.all(
    entries.map((e) =>
      fsp.unlink(join(dir, e.name)).catch((err: NodeJS.ErrnoException) => {
        if (err.code !== 'ENOENT') throw err;
      }),
    ),
  );
  await fsp.rmdir(dir);
}
