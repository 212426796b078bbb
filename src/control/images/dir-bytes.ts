/** dirBytes sums the sizes of the files under a directory (a staging layout while skopeo fills it). */
import { readdir, stat } from 'node:fs/promises';
import { join } from 'node:path';

/** dirBytes returns the bytes of every regular file under `dir` (0 if it is gone). */
export async function dirBytes(dir: string): Promise<number> {
  let total = 0;
  const entries = await readdir(dir, { withFileTypes: true }).catch(() => []);
  for (const e of entries) {
    const p = join(dir, e.name);
    if (e.isDirectory()) total += await dirBytes(p);
    else if (e.isFile()) total += (await stat(p).catch(() => null))?.size ?? 0;
  }
  return total;
}
