/**
 * A streaming reader of tar archives (POSIX ustar, pax extended headers, GNU long names), written for hostile input:
 * every header's checksum is checked, every length is bounded, and anything it does not understand is refused rather
 * than guessed at. It only parses; what an entry may do to the disk is layer-unpack.ts's business.
 */
import { invalidLayer } from './image-error.js';

/** TarEntryType is what an entry is; 'char', 'block' and 'fifo' are read so that the unpacker can refuse them by name. */
export type TarEntryType = 'file' | 'dir' | 'symlink' | 'hardlink' | 'char' | 'block' | 'fifo';

/** TarEntry is one entry's header, after pax and GNU long-name records are applied. */
export interface TarEntry {
  path: string;
  type: TarEntryType;
  mode: number;
  uid: number;
  gid: number;
  size: number;
  mtimeSeconds: number;
  linkname: string;
}

const BLOCK = 512;
/** MAX_META_BYTES bounds a pax header or a GNU long name: real ones are a few hundred bytes. */
const MAX_META_BYTES = 1 << 20;
/** MAX_PATH_BYTES is PATH_MAX. */
const MAX_PATH_BYTES = 4096;

const TYPES: Record<string, TarEntryType> = { '0': 'file', '\0': 'file', '7': 'file', '1': 'hardlink', '2': 'symlink', '3': 'char', '4': 'block', '5': 'dir', '6': 'fifo' };

/** ByteSource hands out exact byte counts from an async stream of chunks. */
class ByteSource {
  private buf: Buffer = Buffer.alloc(0);
  private done = false;

  constructor(private readonly it: AsyncIterator<Buffer>) {}

  private async fill(n: number): Promise<boolean> {
    while (this.buf.length < n && !this.done) {
      const r = await this.it.next();
      if (r.done) this.done = true;
      else this.buf = this.buf.length === 0 ? r.value : Buffer.concat([this.buf, r.value]);
    }
    return this.buf.length >= n;
  }

  /** read returns exactly n bytes, or null at a clean end (nothing left); a partial block is a truncated archive. */
  async read(n: number): Promise<Buffer | null> {
    if (!(await this.fill(n))) {
      if (this.buf.length === 0) return null;
      throw invalidLayer('the layer archive is truncated');
    }
    const out = this.buf.subarray(0, n);
    this.buf = this.buf.subarray(n);
    return out;
  }

  /** chunks yields the next n bytes as they arrive. */
  async *chunks(n: number): AsyncGenerator<Buffer> {
    let left = n;
    while (left > 0) {
      if (this.buf.length === 0 && !(await this.fill(1))) throw invalidLayer('the layer archive is truncated');
      const take = Math.min(left, this.buf.length);
      const out = this.buf.subarray(0, take);
      this.buf = this.buf.subarray(take);
      left -= take;
      yield out;
    }
  }

  async skip(n: number): Promise<void> {
    for await (const _ of this.chunks(n)); // eslint-disable-line @typescript-eslint/no-unused-vars
  }
}

function field(h: Buffer, off: number, len: number): string {
  const raw = h.subarray(off, off + len);
  const nul = raw.indexOf(0);
  return raw.subarray(0, nul < 0 ? len : nul).toString('utf8');
}

function numeric(h: Buffer, off: number, len: number, what: string): number {
  const raw = h.subarray(off, off + len);
  if ((raw[0]! & 0x80) !== 0) {
    // GNU base-256: big-endian, first byte's top bit set; negative values are refused.
    if ((raw[0]! & 0x40) !== 0) throw invalidLayer(`negative ${what} in a tar header`);
    let v = raw[0]! & 0x3f;
    for (let i = 1; i < len; i++) {
      v = v * 256 + raw[i]!;
      if (v > Number.MAX_SAFE_INTEGER) throw invalidLayer(`${what} too large in a tar header`);
    }
    return v;
  }
  const s = raw.toString('latin1').replace(/\0.*$/s, '').trim();
  if (s === '') return 0;
  if (!/^[0-7]+$/.test(s)) throw invalidLayer(`malformed ${what} in a tar header`);
  return parseInt(s, 8);
}

function checksumOk(h: Buffer): boolean {
  const stored = numeric(h, 148, 8, 'checksum');
  let unsigned = 0;
  let signed = 0;
  for (let i = 0; i < BLOCK; i++) {
    const b = i >= 148 && i < 156 ? 32 : h[i]!;
    unsigned += b;
    signed += b > 127 ? b - 256 : b;
  }
  return stored === unsigned || stored === signed;
}

/** parsePax reads "LEN key=value\n" records. */
function parsePax(data: Buffer): Map<string, string> {
  const out = new Map<string, string>();
  let i = 0;
  while (i < data.length) {
    const sp = data.indexOf(0x20, i);
    if (sp < 0) throw invalidLayer('malformed pax header');
    const len = Number(data.subarray(i, sp).toString('latin1'));
    if (!Number.isInteger(len) || len <= sp - i + 1 || i + len > data.length || data[i + len - 1] !== 0x0a) throw invalidLayer('malformed pax header');
    const rec = data.subarray(sp + 1, i + len - 1).toString('utf8');
    const eq = rec.indexOf('=');
    if (eq < 0) throw invalidLayer('malformed pax record');
    out.set(rec.slice(0, eq), rec.slice(eq + 1));
    i += len;
  }
  return out;
}

function paxNumber(v: string, what: string): number {
  if (!/^\d{1,16}(\.\d+)?$/.test(v)) throw invalidLayer(`malformed pax ${what}`);
  return Math.floor(Number(v));
}

/**
 * readTar yields the entries of the archive in `source`; consume each entry's body (`body`) fully, or not at all, before
 * asking for the next (an unread body is skipped). Ends at the end-of-archive marker or the end of the stream.
 */
export async function* readTar(source: AsyncIterable<Buffer>): AsyncGenerator<{ entry: TarEntry; body: AsyncGenerator<Buffer> }> {
  const src = new ByteSource(source[Symbol.asyncIterator]());
  let pax = new Map<string, string>();
  let longName: string | null = null;
  let longLink: string | null = null;
  for (;;) {
    const h = await src.read(BLOCK);
    if (h === null || h.every((b) => b === 0)) return; // end of archive (one zero block is enough)
    if (!checksumOk(h)) throw invalidLayer('a tar header fails its checksum (not a tar archive, or a damaged one)');
    const flag = String.fromCharCode(h[156]!);
    const size = numeric(h, 124, 12, 'size');
    const padded = Math.ceil(size / BLOCK) * BLOCK;
    if (flag === 'x' || flag === 'g' || flag === 'L' || flag === 'K') {
      if (size > MAX_META_BYTES) throw invalidLayer(`a tar metadata record of ${size} bytes (at most ${MAX_META_BYTES})`);
      const data = (await src.read(padded)) ?? Buffer.alloc(0);
      if (data.length < padded) throw invalidLayer('the layer archive is truncated');
      const body = data.subarray(0, size);
      if (flag === 'x') pax = parsePax(body);
      else if (flag === 'L') longName = body.toString('utf8').replace(/\0+$/, '');
      else if (flag === 'K') longLink = body.toString('utf8').replace(/\0+$/, '');
      // 'g' (global pax) holds defaults for the whole archive; none of the keys we honour are taken from it.
      continue;
    }
    const type = TYPES[flag];
    if (!type) throw invalidLayer(`a tar entry of unsupported type ${JSON.stringify(flag)} (sparse, multi-volume and vendor types are refused)`);
    const ustar = field(h, 257, 6) === 'ustar';
    const prefix = ustar ? field(h, 345, 155) : '';
    let path = longName ?? (prefix ? `${prefix}/${field(h, 0, 100)}` : field(h, 0, 100));
    let linkname = longLink ?? field(h, 157, 100);
    let entrySize = size;
    let uid = numeric(h, 108, 8, 'uid');
    let gid = numeric(h, 116, 8, 'gid');
    let mtimeSeconds = numeric(h, 136, 12, 'mtime');
    if (pax.has('path')) path = pax.get('path')!;
    if (pax.has('linkpath')) linkname = pax.get('linkpath')!;
    if (pax.has('size')) entrySize = paxNumber(pax.get('size')!, 'size');
    if (pax.has('uid')) uid = paxNumber(pax.get('uid')!, 'uid');
    if (pax.has('gid')) gid = paxNumber(pax.get('gid')!, 'gid');
    if (pax.has('mtime')) mtimeSeconds = paxNumber(pax.get('mtime')!, 'mtime');
    pax = new Map();
    longName = longLink = null;
    if (Buffer.byteLength(path) > MAX_PATH_BYTES || Buffer.byteLength(linkname) > MAX_PATH_BYTES) throw invalidLayer('a tar entry name longer than PATH_MAX');
    if (path.includes('\0') || linkname.includes('\0')) throw invalidLayer('a tar entry name with a NUL byte');
    // Only regular files carry data; a size on anything else (a hard link's is 0 in pax and GNU tar) is skipped.
    const dataSize = type === 'file' ? entrySize : size;
    const entry: TarEntry = { path, type, mode: numeric(h, 100, 8, 'mode') & 0o7777, uid, gid, size: type === 'file' ? entrySize : 0, mtimeSeconds, linkname };
    // The body counts what the consumer read; the rest (if it stopped early) and the padding are skipped after it.
    let unread = entry.size;
    const body = (async function* () {
      for await (const chunk of src.chunks(entry.size)) {
        unread -= chunk.length;
        yield chunk;
      }
    })();
    yield { entry, body };
    await src.skip(unread + Math.ceil(dataSize / BLOCK) * BLOCK - entry.size);
  }
}
