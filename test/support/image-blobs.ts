/** Builds image layer blobs in a throwaway blob store, for tests of the agent's image store. */
import { mkdirSync, writeFileSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import type { ImageLayer } from '../../src/shared/images/format.js';
import { tarArchive, type TarWriteEntry } from '../../src/shared/images/tar-writer.js';

/** sha256 is the digest of bytes, as `sha256:<hex>`. */
export function sha256(b: Buffer): string {
  return `sha256:${createHash('sha256').update(b).digest('hex')}`;
}

/** putBlob stores bytes under their digest (or under `as`, to fake a mismatch) in `<root>/blobs/sha256`. */
export function putBlob(root: string, bytes: Buffer, as?: string): string {
  const digest = as ?? sha256(bytes);
  mkdirSync(join(root, 'blobs/sha256'), { recursive: true });
  writeFileSync(join(root, 'blobs/sha256', digest.slice(7)), bytes);
  return digest;
}

/** putLayer stores a gzip layer of `entries` (or of a raw tar) and returns its record. */
export function putLayer(root: string, entries: readonly TarWriteEntry[] | Buffer, opts: { gzip?: boolean } = {}): ImageLayer {
  const tar = Buffer.isBuffer(entries) ? entries : tarArchive(entries);
  const gz = opts.gzip === false ? tar : gzipSync(tar);
  const digest = putBlob(root, gz);
  return { digest, diffId: sha256(tar), mediaType: opts.gzip === false ? 'application/vnd.oci.image.layer.v1.tar' : 'application/vnd.oci.image.layer.v1.tar+gzip', size: gz.length };
}
