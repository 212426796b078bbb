/**
 * Writes tar archives (ustar, with a pax record for long names) byte for byte, for the default image build and for
 * tests that need hostile layers no well-behaved tool would write (a '../' name, a device node, a link out of the root).
 */

/** TarWriteEntry is one entry to write; `type` is a ustar type flag ('0' file, '1' hard link, '2' symlink, '3' char, '4' block, '5' dir, '6' fifo). */
export interface TarWriteEntry {
  path: string;
  type: '0' | '1' | '2' | '3' | '4' | '5' | '6';
  mode?: number;
  uid?: number;
  gid?: number;
  mtimeSeconds?: number;
  linkname?: string;
  data?: Buffer | string;
  devmajor?: number;
  devminor?: number;
}

const BLOCK = 512;

function octal(h: Buffer, off: number, len: number, v: number): void {
  h.write(v.toString(8).padStart(len - 1, '0') + '\0', off, len, 'latin1');
}

function header(name: string, prefix: string, e: Partial<TarWriteEntry>, size: number, type: string): Buffer {
  const h = Buffer.alloc(BLOCK);
  h.write(name, 0, 100, 'utf8');
  octal(h, 100, 8, e.mode ?? (type === '5' ? 0o755 : 0o644));
  octal(h, 108, 8, e.uid ?? 0);
  octal(h, 116, 8, e.gid ?? 0);
  octal(h, 124, 12, size);
  octal(h, 136, 12, e.mtimeSeconds ?? 0);
  h.write(type, 156, 1, 'latin1');
  h.write(e.linkname ?? '', 157, 100, 'utf8');
  h.write('ustar\0', 257, 6, 'latin1');
  h.write('00', 263, 2, 'latin1');
  octal(h, 329, 8, e.devmajor ?? 0);
  octal(h, 337, 8, e.devminor ?? 0);
  h.write(prefix, 345, 155, 'utf8');
  h.fill(0x20, 148, 156);
  let sum = 0;
  for (const b of h) sum += b;
  h.write(sum.toString(8).padStart(6, '0') + '\0 ', 148, 8, 'latin1');
  return h;
}

function pad(b: Buffer): Buffer {
  const rest = (BLOCK - (b.length % BLOCK)) % BLOCK;
  return rest ? Buffer.concat([b, Buffer.alloc(rest)]) : b;
}

function paxRecord(key: string, value: string): string {
  const body = ` ${key}=${value}\n`;
  let len = Buffer.byteLength(body) + 1;
  while (String(len).length + Buffer.byteLength(body) !== len) len = String(len).length + Buffer.byteLength(body);
  return `${len}${body}`;
}

/** tarEntry encodes one entry (its header, a pax record first when a name does not fit ustar, and its data). */
export function tarEntry(e: TarWriteEntry): Buffer {
  const data = e.data === undefined ? Buffer.alloc(0) : Buffer.from(e.data);
  const parts: Buffer[] = [];
  let name = e.path;
  let prefix = '';
  if (Buffer.byteLength(name) > 100) {
    const cut = name.lastIndexOf('/', 155);
    if (cut > 0 && Buffer.byteLength(name.slice(cut + 1)) <= 100 && Buffer.byteLength(name.slice(0, cut)) <= 155) {
      prefix = name.slice(0, cut);
      name = name.slice(cut + 1);
    } else {
      const pax = Buffer.from(paxRecord('path', e.path));
      parts.push(header('PaxHeader', '', {}, pax.length, 'x'), pad(pax));
      name = name.slice(0, 100);
    }
  }
  if (Buffer.byteLength(e.linkname ?? '') > 100) {
    const pax = Buffer.from(paxRecord('linkpath', e.linkname!));
    parts.push(header('PaxHeader', '', {}, pax.length, 'x'), pad(pax));
  }
  parts.push(header(name, prefix, e, data.length, e.type));
  if (data.length) parts.push(pad(data));
  return Buffer.concat(parts);
}

/** tarArchive encodes entries followed by the end-of-archive marker (two zero blocks). */
export function tarArchive(entries: readonly TarWriteEntry[]): Buffer {
  return Buffer.concat([...entries.map(tarEntry), Buffer.alloc(2 * BLOCK)]);
}
