/**
 * Reads a file of an image as the cell will see it, from the unpacked layers on the host, without a mount: the topmost
 * layer that has the path wins, a whiteout or an opaque directory above hides what lies below. Layer contents are
 * tenant data: nothing is followed (a symlink anywhere on the way counts as "not a regular file here"), reads are
 * bounded, and only regular files are read.
 */
import { constants } from 'node:fs';
import { lstat, open } from 'node:fs/promises';
import { join } from 'node:path';

/** MAX_IMAGE_FILE_BYTES bounds what the agent reads of an image file (passwd, group, a CA bundle). */
export const MAX_IMAGE_FILE_BYTES = 4 << 20;

const OPAQUE_XATTR = 'trusted.overlay.opaque';

/** ImageLookup is what the image holds at a path: a regular file (with its layer), something else, or nothing. */
export type ImageLookup = { kind: 'file'; layerDir: string } | { kind: 'other' } | { kind: 'absent' };

/**
 * lookupImagePath finds `rel` (no leading slash) in `layerDirs` (top first). `isOpaque(dir)` tells whether a layer's
 * directory is marked opaque.
 */
export async function lookupImagePath(layerDirs: readonly string[], rel: string, isOpaque: (dir: string) => boolean): Promise<ImageLookup> {
  const parts = rel.split('/');
  for (const layer of layerDirs) {
    let blocked = false;
    let cur = layer;
    for (let i = 0; i < parts.length; i++) {
      cur = join(cur, parts[i]!);
      const st = await lstat(cur).catch(() => null);
      if (!st) break; // not in this layer: look below
      if (st.isCharacterDevice() && st.rdev === 0) return { kind: 'absent' }; // a whiteout hides it and all below
      if (i === parts.length - 1) return st.isFile() ? { kind: 'file', layerDir: layer } : { kind: 'other' };
      if (!st.isDirectory()) return { kind: 'other' }; // a symlink or file where a directory is expected: not followed
      if (isOpaque(cur)) blocked = true; // nothing below this layer shows through this directory
    }
    if (blocked) return { kind: 'absent' };
  }
  return { kind: 'absent' };
}

/** readImageFile reads a regular file of one layer (never through a symlink), at most MAX_IMAGE_FILE_BYTES. */
export async function readImageFile(layerDir: string, rel: string): Promise<Buffer | null> {
  const fh = await open(join(layerDir, rel), constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK).catch(() => null);
  if (!fh) return null;
  try {
    const st = await fh.stat();
    if (!st.isFile() || st.size > MAX_IMAGE_FILE_BYTES) return null;
    const buf = Buffer.alloc(st.size);
    const { bytesRead } = await fh.read(buf, 0, st.size, 0);
    return buf.subarray(0, bytesRead);
  } finally {
    await fh.close();
  }
}

/** opaqueXattrName is the overlay xattr that marks a directory opaque. */
export const opaqueXattrName = OPAQUE_XATTR;
