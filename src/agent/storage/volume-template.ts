// Volume templates: one empty ext4 image per volume size, made once per agent process with mkfs.ext4 and kept in memory
// as the few data extents it has (~100 KiB of a 256 MiB image: the rest is holes). Every new volume's backing file is a
// fresh sparse file with those bytes written at their offsets and a fresh filesystem UUID and directory hash seed in its
// superblock: no mkfs process per cell. Nothing secret is in a template (no key, no policy, no file: the encrypted
// directory and its key are made per volume after mount), and each volume still gets its own file, never reused.
//
// Template filesystem: metadata_csum_seed (checksums are seeded from a stored value, so the UUID can change without
// rewriting them), sparse_super2 with no backup superblocks (the only copy of the UUID is the primary superblock), no
// resize inode (a volume never grows), and no journal: a volume is single-use scratch that is crypto-shredded and
// deleted at wipe, and after a crash reconcile wipes it too, so nothing ever replays a journal; without one, every write
// skips jbd2's commit work.
import { randomFillSync } from 'node:crypto';
import { closeSync, fstatSync, ftruncateSync, mkdtempSync, open, openSync, rmSync, writeSync, constants } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadAddon } from './fscrypt.js';
import { run } from '../exec.js';

const BLOCK_SIZE = 4096;
/** TEMPLATE_MKFS_ARGS make a template filesystem (see the header). The image is fresh and sparse: nothing to zero or discard. */
export const TEMPLATE_MKFS_ARGS = [
  '-q', '-F', '-b', String(BLOCK_SIZE), '-m', '0',
  '-O', 'encrypt,metadata_csum_seed,^has_journal,^resize_inode,sparse_super2',
  '-E', 'nodiscard,assume_storage_prezeroed=1,num_backup_sb=0',
];

// ext4 superblock: at byte 1024 of the device; offsets within it (struct ext4_super_block).
const SB_OFFSET = 1024;
const SB_SIZE = 1024;
const SB_MAGIC = 0x38;
const SB_INCOMPAT = 0x60;
const SB_RO_COMPAT = 0x64;
const SB_UUID = 0x68;
const SB_HASH_SEED = 0xec;
const SB_CHECKSUM = 0x3fc;
const EXT4_MAGIC = 0xef53;
const INCOMPAT_CSUM_SEED = 0x2000;
const RO_COMPAT_METADATA_CSUM = 0x400;

/** VolumeTemplate is an empty filesystem image of one size, as the data extents that hold its bytes. */
export interface VolumeTemplate {
  readonly sizeBytes: number;
  readonly extents: ReadonlyArray<{ readonly offset: number; readonly data: Buffer }>;
  /** The template's own superblock; each volume gets a copy with its own UUID, hash seed and checksum. */
  readonly superblock: Buffer;
  /** Bytes written per volume. */
  readonly dataBytes: number;
}

// CRC-32C (Castagnoli, reflected), the raw form ext4 uses: seed in, no final inversion.
const CRC32C_TABLE = (() => {
  const t = new Uint32Array(256);
  for (let i = 0; i < 256; i++) {
    let c = i;
    for (let k = 0; k < 8; k++) c = c & 1 ? (c >>> 1) ^ 0x82f63b78 : c >>> 1;
    t[i] = c >>> 0;
  }
  return t;
})();

function crc32c(seed: number, bytes: Uint8Array): number {
  let c = seed >>> 0;
  for (const b of bytes) c = (CRC32C_TABLE[(c ^ b) & 0xff]! ^ (c >>> 8)) >>> 0;
  return c;
}

/** superblockChecksum is ext4's s_checksum of a 1024-byte superblock: crc32c(~0) over everything before the field. */
export function superblockChecksum(sb: Buffer): number {
  return crc32c(0xffffffff, sb.subarray(0, SB_CHECKSUM));
}

const templates = new Map<number, Promise<VolumeTemplate>>();

/** volumeTemplate returns the template for `sizeBytes`, making it on first use (one mkfs.ext4 per size and process). */
export function volumeTemplate(sizeBytes: number): Promise<VolumeTemplate> {
  let t = templates.get(sizeBytes);
  if (!t) {
    t = makeTemplate(sizeBytes);
    templates.set(sizeBytes, t);
    t.catch(() => templates.delete(sizeBytes)); // the next volume tries again
  }
  return t;
}

async function makeTemplate(sizeBytes: number): Promise<VolumeTemplate> {
  const dir = mkdtempSync(join(tmpdir(), 'cleanroom-volume-template-'));
  try {
    const image = join(dir, 'ext4.img');
    const fd = openSync(image, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL, 0o600);
    try {
      ftruncateSync(fd, sizeBytes);
    } finally {
      closeSync(fd);
    }
    await run(['mkfs.ext4', ...TEMPLATE_MKFS_ARGS, image]);
    const extents = loadAddon().readExtents(image);
    const superblock = Buffer.alloc(SB_SIZE);
    for (const e of extents) {
      const from = Math.max(e.offset, SB_OFFSET);
      const to = Math.min(e.offset + e.data.length, SB_OFFSET + SB_SIZE);
      if (from < to) e.data.copy(superblock, from - SB_OFFSET, from - e.offset, to - e.offset);
    }
    if (superblock.readUInt16LE(SB_MAGIC) !== EXT4_MAGIC) throw new Error('volume template: mkfs.ext4 wrote no ext4 superblock');
    if ((superblock.readUInt32LE(SB_RO_COMPAT) & RO_COMPAT_METADATA_CSUM) !== 0) {
      if ((superblock.readUInt32LE(SB_INCOMPAT) & INCOMPAT_CSUM_SEED) === 0) throw new Error('volume template: metadata_csum without metadata_csum_seed; a UUID change would break its checksums');
      // Self-check of the checksum code against what mkfs wrote, before any volume relies on it.
      if (superblockChecksum(superblock) !== superblock.readUInt32LE(SB_CHECKSUM)) throw new Error('volume template: superblock checksum mismatch');
    }
    return { sizeBytes, extents, superblock, dataBytes: extents.reduce((n, e) => n + e.data.length, 0) };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/**
 * writeVolumeImage creates `path` (O_EXCL, 0600) as a sparse file of the template's size holding the template's
 * filesystem with a fresh random UUID and directory hash seed; resolves to the bytes written. The file's creation runs on
 * the thread pool (on the host's journal-less ext4 an inode creation scans recently freed inodes: about a millisecond
 * under load); the writes that follow go to the page cache from the agent's thread. With `existing`, `path` is already
 * there (an emptied spare inode linked to its name, volume.ts): it must be a regular file of one link, and is truncated to
 * nothing before the template is written, so no byte of what it held before remains.
 */
export async function writeVolumeImage(template: VolumeTemplate, path: string, existing = false): Promise<number> {
  const sb = Buffer.from(template.superblock);
  randomFillSync(sb, SB_UUID, 16);
  sb[SB_UUID + 6] = (sb[SB_UUID + 6]! & 0x0f) | 0x40; // RFC 4122 version 4
  sb[SB_UUID + 8] = (sb[SB_UUID + 8]! & 0x3f) | 0x80;
  randomFillSync(sb, SB_HASH_SEED, 16);
  if ((sb.readUInt32LE(SB_RO_COMPAT) & RO_COMPAT_METADATA_CSUM) !== 0) sb.writeUInt32LE(superblockChecksum(sb), SB_CHECKSUM);
  // O_NONBLOCK: a FIFO at the name must not block the agent's thread; for a regular file it changes nothing.
  const fd = existing ? openSync(path, constants.O_WRONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK) : await openNewFile(path, constants.O_WRONLY);
  try {
    if (existing) {
      const st = fstatSync(fd);
      // What an O_EXCL creation would have made: root's, 0600, and no other name for it.
      if (!st.isFile() || st.nlink !== 1 || st.uid !== 0 || (st.mode & 0o777) !== 0o600) {
        throw new Error(`volume backing file ${path} is not a single-link regular file of root's, mode 0600`);
      }
      ftruncateSync(fd, 0);
    }
    ftruncateSync(fd, template.sizeBytes);
    for (const e of template.extents) writeAll(fd, e.data, e.offset);
    writeAll(fd, sb, SB_OFFSET);
  } finally {
    closeSync(fd);
  }
  return template.dataBytes;
}

/** openNewFile creates `path` (O_CREAT | O_EXCL | O_NOFOLLOW, mode 0600) on the thread pool and resolves to its descriptor. */
export function openNewFile(path: string, flags: number): Promise<number> {
  return new Promise((resolve, reject) =>
    open(path, flags | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW, 0o600, (err, fd) => (err ? reject(err) : resolve(fd))),
  );
}

function writeAll(fd: number, data: Buffer, position: number): void {
  for (let done = 0; done < data.length; ) done += writeSync(fd, data, done, data.length - done, position + done);
}
