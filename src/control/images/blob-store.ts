/**
 * BlobStore is the content-addressed store of image blobs (Contract A): `<images.dir>/blobs/sha256/<hex>`, one file
 * per digest whoever uses it, each verified against its digest as it enters (sha256 while it is read, then an atomic
 * rename from the staging layout on the same filesystem). Admissions and removals are serialised, so a removal never
 * deletes a blob an admission has just counted on.
 */
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { chmod, mkdir, readdir, rename, rm, stat, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import { digestHex, imagePaths } from '../../shared/images/format.js';
import { ImageImportError } from './image-error.js';
import type { StagedBlob } from './staged-image.js';

/** BlobStore keeps verified blobs under the image store's root. */
export class BlobStore {
  readonly blobsDir: string;
  /** tmpDir holds each import's staging directory (same filesystem as the blobs, so moving one in is a rename). */
  readonly tmpDir: string;
  private lock: Promise<unknown> = Promise.resolve();

  constructor(readonly root: string) {
    this.blobsDir = imagePaths(root).blobs;
    this.tmpDir = join(root, 'tmp');
  }

  /** init creates the directories and removes what imports interrupted by a crash left in staging. */
  async init(): Promise<void> {
    await mkdir(this.blobsDir, { recursive: true, mode: 0o755 });
    await chmod(this.root, 0o755);
    await rm(this.tmpDir, { recursive: true, force: true });
    await mkdir(this.tmpDir, { mode: 0o700 });
  }

  /** pathOf is where a blob lives. */
  pathOf(digest: string): string {
    return join(this.blobsDir, digestHex(digest));
  }

  /**
   * admit verifies every blob of a staged layout (sha256 and size) and only then moves them in; blobs already stored
   * stay as they are (a layer shared by two images is one file). A mismatch admits nothing (image_digest_mismatch).
   */
  admit(layoutDir: string, blobs: readonly StagedBlob[]): Promise<void> {
    return this.serial(async () => {
      const fresh: StagedBlob[] = [];
      for (const b of blobs) {
        if (await exists(this.pathOf(b.digest))) continue;
        await verify(join(layoutDir, 'blobs', 'sha256', digestHex(b.digest)), b);
        fresh.push(b);
      }
      for (const b of fresh) {
        const from = join(layoutDir, 'blobs', 'sha256', digestHex(b.digest));
        await chmod(from, 0o644);
        await rename(from, this.pathOf(b.digest));
      }
    });
  }

  /** removeUnreferenced deletes the given blobs unless `referenced` (asked inside the lock) still names them; returns bytes freed. */
  removeUnreferenced(candidates: readonly string[], referenced: () => Promise<Set<string>>): Promise<number> {
    return this.serial(async () => {
      const keep = await referenced();
      let freed = 0;
      for (const d of new Set(candidates)) {
        if (keep.has(d)) continue;
        const st = await stat(this.pathOf(d)).catch(() => null);
        if (!st) continue;
        await unlink(this.pathOf(d)).catch(() => {});
        freed += st.size;
      }
      return freed;
    });
  }

  /** sweep deletes every stored blob `referenced` does not name (at start: blobs of imports a crash interrupted). */
  async sweep(referenced: () => Promise<Set<string>>): Promise<number> {
    const names = await readdir(this.blobsDir).catch(() => [] as string[]);
    return this.removeUnreferenced(names.filter((n) => /^[0-9a-f]{64}$/.test(n)).map((n) => `sha256:${n}`), referenced);
  }

  /** usage counts the stored blobs and their bytes (each digest once). */
  async usage(): Promise<{ blobs: number; bytes: number }> {
    let blobs = 0;
    let bytes = 0;
    for (const n of await readdir(this.blobsDir).catch(() => [] as string[])) {
      const st = await stat(join(this.blobsDir, n)).catch(() => null);
      if (!st?.isFile()) continue;
      blobs++;
      bytes += st.size;
    }
    return { blobs, bytes };
  }

  private serial<T>(fn: () => Promise<T>): Promise<T> {
    const next = this.lock.then(fn, fn);
    this.lock = next.catch(() => {});
    return next;
  }
}

/** verify streams a staged blob through sha256 and compares digest and size. */
async function verify(path: string, b: StagedBlob): Promise<void> {
  const hash = createHash('sha256');
  let size = 0;
  try {
    for await (const chunk of createReadStream(path)) {
      hash.update(chunk as Buffer);
      size += (chunk as Buffer).length;
    }
  } catch {
    throw new ImageImportError('image_invalid', `blob ${b.digest} is missing from the source`);
  }
  const got = `sha256:${hash.digest('hex')}`;
  if (size !== b.size) throw new ImageImportError('image_digest_mismatch', `blob ${b.digest} is ${size} bytes; its descriptor says ${b.size} (truncated or corrupt)`);
  if (got !== b.digest) throw new ImageImportError('image_digest_mismatch', `blob ${b.digest} hashes to ${got}: corrupt`);
}

async function exists(path: string): Promise<boolean> {
  return (await stat(path).catch(() => null))?.isFile() === true;
}
