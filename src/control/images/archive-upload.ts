/**
 * An uploaded image archive: the request body streamed to the import's staging directory (never buffered, refused
 * past a size limit), then recognised by its top-level entries: `manifest.json` is what `docker save` writes,
 * `oci-layout` + `index.json` is an OCI layout as `skopeo copy … oci-archive:` (or tar of a layout directory) writes.
 */
import { createWriteStream } from 'node:fs';
import { open } from 'node:fs/promises';
import type { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { Transform } from 'node:stream';
import { ImageImportError } from './image-error.js';

/** receiveArchive writes `body` to `path` (0600), at most maxBytes; onBytes reports progress. */
export async function receiveArchive(body: Readable, path: string, maxBytes: number, onBytes: (n: number) => void): Promise<number> {
  let n = 0;
  const count = new Transform({
    transform(chunk: Buffer, _enc, done) {
      n += chunk.length;
      if (n > maxBytes) return done(new ImageImportError('image_too_large', `the archive is larger than ${maxBytes} bytes (images.maxArchiveMiB)`));
      onBytes(n);
      done(null, chunk);
    },
  });
  await pipeline(body, count, createWriteStream(path, { mode: 0o600 }));
  return n;
}

/** MAX_TAR_ENTRIES_SCANNED bounds how far the sniffer reads: the entries that say the format come first in both formats' writers, but not always. */
const MAX_TAR_ENTRIES_SCANNED = 100_000;

/** sniffArchive says which kind of image archive a tar file is; image_invalid if neither. */
export async function sniffArchive(path: string): Promise<'docker-archive' | 'oci-archive'> {
  const fh = await open(path, 'r');
  try {
    const names = new Set<string>();
    const header = Buffer.alloc(512);
    let offset = 0;
    for (let i = 0; i < MAX_TAR_ENTRIES_SCANNED; i++) {
      const { bytesRead } = await fh.read(header, 0, 512, offset);
      if (bytesRead < 512 || header.every((b) => b === 0)) break;
      if (i === 0 && header.subarray(257, 262).toString('latin1') !== 'ustar') throw notAnArchive('it is not a tar file (gzip-compressed archives: decompress them first)');
      const name = cString(header.subarray(345, 500)) ? `${cString(header.subarray(345, 500))}/${cString(header.subarray(0, 100))}` : cString(header.subarray(0, 100));
      const size = parseInt(cString(header.subarray(124, 136)).trim() || '0', 8);
      if (!Number.isSafeInteger(size) || size < 0) throw notAnArchive('a tar header is corrupt');
      names.add(name.replace(/^\.\//, ''));
      if (names.has('oci-layout') && names.has('index.json')) return 'oci-archive';
      offset += 512 + Math.ceil(size / 512) * 512;
    }
    if (names.has('manifest.json')) return 'docker-archive';
    throw notAnArchive('it holds neither manifest.json (docker save) nor oci-layout and index.json (an OCI layout)');
  } finally {
    await fh.close();
  }
}

function cString(b: Buffer): string {
  const end = b.indexOf(0);
  return b.subarray(0, end < 0 ? b.length : end).toString('utf8');
}

function notAnArchive(why: string): ImageImportError {
  return new ImageImportError('image_invalid', `the upload is not an image archive: ${why}`);
}
