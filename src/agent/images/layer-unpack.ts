/**
 * Unpacks one image layer blob into the image store in overlayfs' format, refusing anything that could reach outside
 * the layer or give a cell more than files: the blob is checked against its digest and its tar stream against its
 * diffId while it is read, into a private temporary directory that becomes `unpacked/<diffid-hex>` by one rename only
 * when everything held. A refused or failed unpack leaves nothing behind.
 */
import { createReadStream } from 'node:fs';
import { readFile, lchown, link, lstat, lutimes, mkdir, open, rename, rm, stat, symlink, chmod, chown, writeFile } from 'node:fs/promises';
import { createHash, randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { PassThrough, Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { createGunzip } from 'node:zlib';
import { digestHex, IMAGE_UID_BASE, IMAGE_UID_RANGE, type ImageLayer } from '../../shared/images/format.js';
import { ImageError, invalidLayer } from './image-error.js';
import { readTar, type TarEntry } from './tar-reader.js';
import { overlayFiles } from './overlay-files.js';

/** MAX_LAYER_ENTRIES bounds the entries of one layer (inodes are a resource too). */
const MAX_LAYER_ENTRIES = 1_000_000;
/** SPECIAL_BITS are setuid, setgid: stripped from every entry. Cells' roots are mounted nosuid (which also ignores file capabilities), so they would grant nothing; stripping them means no host path under the store holds a setuid file either. */
const SPECIAL_BITS = 0o6000;
const WHITEOUT_PREFIX = '.wh.';
const OPAQUE_MARKER = '.wh..wh..opq';

/** UnpackLayerOptions says which layer to unpack, from where to where, within which bound. */
export interface UnpackLayerOptions {
  /** `images/blobs/sha256`. */
  blobsDir: string;
  /** `images/unpacked`. */
  unpackedDir: string;
  layer: ImageLayer;
  /** Uncompressed bytes this layer may have (what is left of the image's limit). */
  maxBytes: number;
}

/** UnpackedLayer is what one layer costs on disk. */
export interface UnpackedLayer {
  /** Uncompressed tar bytes (an upper bound of its files' sizes). */
  bytes: number;
  entries: number;
  /** false when the layer was already unpacked (by this image or another one). */
  fresh: boolean;
}

/** layerMetaPath is the small record kept beside an unpacked layer (its size). */
export function layerMetaPath(unpackedDir: string, diffHex: string): string {
  return join(unpackedDir, `${diffHex}.json`);
}

/** unpackLayer unpacks `layer` unless it already is; refusals are ImageErrors. */
export async function unpackLayer(o: UnpackLayerOptions): Promise<UnpackedLayer> {
  const diffHex = digestHex(o.layer.diffId);
  const final = join(o.unpackedDir, diffHex);
  const known = await readMeta(o.unpackedDir, diffHex);
  if (known && (await exists(final))) return { ...known, fresh: false };
  if (o.layer.mediaType.includes('zstd')) throw invalidLayer(`layer ${o.layer.digest}: zstd-compressed layers are not supported yet (${o.layer.mediaType}); re-push the image with gzip layers`);
  const blob = join(o.blobsDir, digestHex(o.layer.digest));
  let size: number;
  try {
    size = (await stat(blob)).size;
  } catch {
    throw new ImageError('image_blob_missing', `layer blob ${o.layer.digest} is not in the image store; import the image again`);
  }
  if (size !== o.layer.size) throw new ImageError('image_digest_mismatch', `layer blob ${o.layer.digest} is ${size} bytes, its manifest says ${o.layer.size} (truncated or replaced)`);
  const gzip = await isGzip(blob);
  if (o.layer.mediaType.endsWith('gzip') && !gzip) throw invalidLayer(`layer ${o.layer.digest} is declared gzip but is not a gzip stream`);

  const tmp = join(o.unpackedDir, `.tmp-${diffHex.slice(0, 16)}-${randomBytes(4).toString('hex')}`);
  await mkdir(tmp, { mode: 0o700 });
  try {
    const blobHash = createHash('sha256');
    const tarHash = createHash('sha256');
    let bytes = 0;
    const tapBlob = new Transform({
      transform(chunk: Buffer, _enc, cb) {
        blobHash.update(chunk);
        cb(null, chunk);
      },
    });
    const countTar = new Transform({
      transform(chunk: Buffer, _enc, cb) {
        bytes += chunk.length;
        tarHash.update(chunk);
        if (bytes > o.maxBytes) cb(new ImageError('image_too_large', `layer ${o.layer.digest} unpacks to more than ${o.maxBytes} bytes (the image's limit)`));
        else cb(null, chunk);
      },
    });
    const writer = new LayerWriter(tmp);
    const decompress = gzip ? createGunzip() : new PassThrough();
    await pipeline(createReadStream(blob, { highWaterMark: 1 << 20 }), tapBlob, decompress, countTar, async function (source: AsyncIterable<Buffer>) {
      for await (const { entry, body } of readTar(source)) await writer.write(entry, body);
      // After the end-of-archive marker the stream must still be read whole: the diffId covers every byte.
      for await (const _ of source); // eslint-disable-line @typescript-eslint/no-unused-vars
    }).catch((e: unknown) => {
      if (e instanceof ImageError) throw e;
      const err = e as NodeJS.ErrnoException;
      if (err.code?.startsWith('Z_') || err.code === 'ERR_STREAM_PREMATURE_CLOSE') throw invalidLayer(`layer ${o.layer.digest} is not a valid gzip stream (${err.message})`);
      throw e;
    });
    const blobDigest = `sha256:${blobHash.digest('hex')}`;
    if (blobDigest !== o.layer.digest) throw new ImageError('image_digest_mismatch', `layer blob ${o.layer.digest} has digest ${blobDigest}`);
    const diffId = `sha256:${tarHash.digest('hex')}`;
    if (diffId !== o.layer.diffId) throw new ImageError('image_digest_mismatch', `layer ${o.layer.digest} uncompresses to ${diffId}, its config says ${o.layer.diffId}`);
    await chown(tmp, IMAGE_UID_BASE, IMAGE_UID_BASE);
    await chmod(tmp, 0o755);
    const meta = { bytes, entries: writer.entries };
    await writeFile(layerMetaPath(o.unpackedDir, diffHex), JSON.stringify(meta));
    try {
      await rename(tmp, final);
    } catch (e) {
      // Another prepare made it first (the store serialises unpacks, so only after a crash mid-rename): keep that one.
      if ((e as NodeJS.ErrnoException).code !== 'ENOTEMPTY' && (e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
      await rm(tmp, { recursive: true, force: true });
    }
    return { ...meta, fresh: true };
  } catch (e) {
    await rm(tmp, { recursive: true, force: true });
    throw e;
  }
}

async function readMeta(unpackedDir: string, diffHex: string): Promise<{ bytes: number; entries: number } | null> {
  try {
    const m = JSON.parse(await readFile(layerMetaPath(unpackedDir, diffHex), 'utf8')) as { bytes: number; entries: number };
    return typeof m.bytes === 'number' && typeof m.entries === 'number' ? m : null;
  } catch {
    return null;
  }
}

async function exists(path: string): Promise<boolean> {
  try {
    await lstat(path);
    return true;
  } catch {
    return false;
  }
}

async function isGzip(path: string): Promise<boolean> {
  const fh = await open(path, 'r');
  try {
    const b = Buffer.alloc(2);
    const { bytesRead } = await fh.read(b, 0, 2, 0);
    return bytesRead === 2 && b[0] === 0x1f && b[1] === 0x8b;
  } finally {
    await fh.close();
  }
}

/** normalizeEntryPath turns an archive name into a path relative to the layer root ('' = the root); refuses '..' and absolute names. */
export function normalizeEntryPath(name: string, what = 'entry'): string {
  if (name.startsWith('/')) throw invalidLayer(`a layer ${what} with an absolute path: ${JSON.stringify(name.slice(0, 200))}`);
  const parts = name.split('/').filter((s) => s !== '' && s !== '.');
  if (parts.includes('..')) throw invalidLayer(`a layer ${what} with a '..' component: ${JSON.stringify(name.slice(0, 200))}`);
  return parts.join('/');
}

/**
 * LayerWriter creates entries under its root without ever following a symlink: every parent of an entry is checked with
 * lstat to be a real directory of this layer (or made as one). Only the agent writes under the private temporary root,
 * so nothing can swap a checked directory for a link between the check and the write.
 */
class LayerWriter {
  entries = 0;
  /** Relative paths known to be real directories of this layer. */
  private readonly dirs = new Set<string>(['']);

  constructor(private readonly root: string) {}

  async write(e: TarEntry, body: AsyncIterable<Buffer>): Promise<void> {
    if (++this.entries > MAX_LAYER_ENTRIES) throw invalidLayer(`a layer with more than ${MAX_LAYER_ENTRIES} entries`);
    const rel = normalizeEntryPath(e.path);
    if (e.uid >= IMAGE_UID_RANGE || e.gid >= IMAGE_UID_RANGE) throw invalidLayer(`${JSON.stringify(rel)} is owned by ${e.uid}:${e.gid}; image files must have uids and gids below ${IMAGE_UID_RANGE}`);
    if (e.type === 'char' || e.type === 'block' || e.type === 'fifo') throw invalidLayer(`${JSON.stringify(rel)} is a ${e.type === 'fifo' ? 'FIFO' : `${e.type} device`}; images may not carry device nodes or FIFOs`);
    if (rel === '') return; // the root itself ('./'): its owner and mode are the store's
    const slash = rel.lastIndexOf('/');
    const parent = slash < 0 ? '' : rel.slice(0, slash);
    const base = rel.slice(slash + 1);
    await this.ensureDir(parent);
    if (base.startsWith(WHITEOUT_PREFIX)) return this.whiteout(parent, base);
    const abs = join(this.root, rel);
    const uid = IMAGE_UID_BASE + e.uid;
    const gid = IMAGE_UID_BASE + e.gid;
    const mode = e.mode & ~SPECIAL_BITS;
    const existing = await lstatOrNull(abs);
    if (existing && !(existing.isDirectory() && e.type === 'dir')) await this.remove(rel);
    switch (e.type) {
      case 'dir':
        if (!existing?.isDirectory()) await mkdir(abs, { mode: 0o700 });
        this.dirs.add(rel);
        await chown(abs, uid, gid);
        await chmod(abs, mode);
        return;
      case 'file': {
        const fh = await open(abs, overlayFiles.createFlags, 0o600);
        try {
          for await (const chunk of body) await fh.write(chunk);
          await fh.chown(uid, gid);
          await fh.chmod(mode);
          await fh.utimes(e.mtimeSeconds, e.mtimeSeconds);
        } finally {
          await fh.close();
        }
        return;
      }
      case 'symlink':
        // Stored as written: it resolves inside the cell's root at run time, never on the host.
        await symlink(e.linkname, abs);
        await lchown(abs, uid, gid);
        await lutimes(abs, e.mtimeSeconds, e.mtimeSeconds);
        return;
      case 'hardlink': {
        const target = normalizeEntryPath(e.linkname, 'hard link target');
        if (target === '') throw invalidLayer(`${JSON.stringify(rel)} is a hard link to the layer's root`);
        const tSlash = target.lastIndexOf('/');
        await this.checkDir(tSlash < 0 ? '' : target.slice(0, tSlash), `hard link ${JSON.stringify(rel)}`);
        const st = await lstatOrNull(join(this.root, target));
        if (!st) throw invalidLayer(`${JSON.stringify(rel)} is a hard link to ${JSON.stringify(target.slice(0, 200))}, which is not in this layer`);
        if (st.isDirectory()) throw invalidLayer(`${JSON.stringify(rel)} is a hard link to a directory`);
        // link(2) does not follow a symlink at the target: a link to a symlink is a second name of that symlink.
        await link(join(this.root, target), abs);
        return;
      }
      default:
        throw invalidLayer(`unsupported entry type ${e.type as string}`);
    }
  }

  /** whiteout records a deletion of a lower layer's `NAME` (overlay: char 0:0), or an opaque directory. */
  private async whiteout(parent: string, base: string): Promise<void> {
    const parentAbs = join(this.root, parent);
    if (base === OPAQUE_MARKER) return overlayFiles.setOpaque(parentAbs);
    const name = base.slice(WHITEOUT_PREFIX.length);
    if (name === '' || name === '.' || name === '..') throw invalidLayer(`a malformed whiteout ${JSON.stringify(base)}`);
    if (name.startsWith(WHITEOUT_PREFIX)) return; // other AUFS metadata (.wh..wh.plnk…) means nothing to overlayfs
    const rel = parent ? `${parent}/${name}` : name;
    if (await lstatOrNull(join(this.root, rel))) await this.remove(rel);
    overlayFiles.whiteout(join(this.root, rel));
    await lchown(join(this.root, rel), IMAGE_UID_BASE, IMAGE_UID_BASE);
  }

  /** ensureDir makes `rel` and its parents real directories of this layer; a symlink or file on the way is refused. */
  private async ensureDir(rel: string): Promise<void> {
    if (this.dirs.has(rel)) return;
    const parts = rel.split('/');
    let cur = '';
    for (const p of parts) {
      cur = cur ? `${cur}/${p}` : p;
      if (this.dirs.has(cur)) continue;
      const st = await lstatOrNull(join(this.root, cur));
      if (!st) {
        await mkdir(join(this.root, cur), { mode: 0o755 });
        await chown(join(this.root, cur), IMAGE_UID_BASE, IMAGE_UID_BASE);
      } else if (st.isSymbolicLink()) {
        throw invalidLayer(`an entry under ${JSON.stringify(cur.slice(0, 200))}, a symlink: writing through a symlink is refused`);
      } else if (!st.isDirectory()) {
        throw invalidLayer(`an entry under ${JSON.stringify(cur.slice(0, 200))}, which is not a directory`);
      }
      this.dirs.add(cur);
    }
  }

  /** checkDir is ensureDir without creating: the path must already be real directories. */
  private async checkDir(rel: string, what: string): Promise<void> {
    let cur = '';
    for (const p of rel === '' ? [] : rel.split('/')) {
      cur = cur ? `${cur}/${p}` : p;
      if (this.dirs.has(cur)) continue;
      const st = await lstatOrNull(join(this.root, cur));
      if (!st || st.isSymbolicLink() || !st.isDirectory()) throw invalidLayer(`${what} goes through ${JSON.stringify(cur.slice(0, 200))}, which is not a directory of this layer`);
      this.dirs.add(cur);
    }
  }

  private async remove(rel: string): Promise<void> {
    await rm(join(this.root, rel), { recursive: true, force: true });
    for (const d of this.dirs) if (d === rel || d.startsWith(`${rel}/`)) this.dirs.delete(d);
  }
}

async function lstatOrNull(path: string): Promise<import('node:fs').Stats | null> {
  try {
    return await lstat(path);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw e;
  }
}
