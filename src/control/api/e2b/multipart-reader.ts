/**
 * MultipartReader reads a multipart/form-data body part by part, each part's data as a stream, holding at most one
 * incoming chunk and a delimiter's length of it at a time: a 50 MB upload is never in memory whole.
 */
import { Readable } from 'node:stream';
import { ConnectError } from './e2b-errors.js';

/** MAX_PART_HEADER_BYTES bounds one part's headers. */
const MAX_PART_HEADER_BYTES = 16 * 1024;

/** Part is one part's headers that matter here. */
export interface PartHead {
  name: string | null;
  filename: string | null;
}

/** boundaryOf reads the boundary of a multipart/form-data content type, or null. */
export function boundaryOf(contentType: string | undefined): string | null {
  const m = /^multipart\/form-data\s*;.*\bboundary=(?:"([^"]{1,70})"|([^\s;]{1,70}))/i.exec(contentType ?? '');
  return m ? (m[1] ?? m[2] ?? null) : null;
}

/** MultipartReader iterates the parts of one body. */
export class MultipartReader {
  private buf: Buffer = Buffer.from('\r\n');
  private readonly delim: Buffer;
  private readonly source: AsyncIterator<Buffer>;
  private eof = false;

  constructor(body: AsyncIterable<Buffer>, boundary: string) {
    this.delim = Buffer.from(`\r\n--${boundary}`);
    this.source = body[Symbol.asyncIterator]();
  }

  /** next returns the next part's head, or null after the closing delimiter. Read the previous part's data first. */
  async next(): Promise<PartHead | null> {
    for (;;) {
      const i = this.buf.indexOf(this.delim);
      if (i >= 0) {
        this.buf = this.buf.subarray(i + this.delim.length);
        break;
      }
      // Preamble (or a part's unread data): keep only what may start a delimiter.
      this.buf = this.buf.subarray(Math.max(0, this.buf.length - this.delim.length + 1));
      if (!(await this.more())) throw malformed('the body ended before its closing boundary');
    }
    while (this.buf.length < 2) if (!(await this.more())) throw malformed('the body ended after a boundary');
    if (this.buf[0] === 0x2d && this.buf[1] === 0x2d) return null; // "--": the closing delimiter
    let end: number;
    while ((end = this.buf.indexOf('\r\n\r\n')) < 0) {
      if (this.buf.length > MAX_PART_HEADER_BYTES) throw malformed('a part header is too large');
      if (!(await this.more())) throw malformed('the body ended inside a part header');
    }
    const head = this.buf.subarray(0, end).toString('utf8');
    this.buf = this.buf.subarray(end + 4);
    const disposition = /^content-disposition:\s*(.*)$/im.exec(head)?.[1] ?? '';
    return { name: param(disposition, 'name'), filename: param(disposition, 'filename') };
  }

  /** data is the current part's bytes as a stream (pulled as it is read, so the uploader is slowed, not buffered). */
  data(): Readable {
    const self = this;
    return Readable.from(
      (async function* () {
        for (;;) {
          const i = self.buf.indexOf(self.delim);
          if (i >= 0) {
            if (i > 0) yield self.buf.subarray(0, i);
            self.buf = self.buf.subarray(i);
            return;
          }
          const safe = self.buf.length - self.delim.length + 1;
          if (safe > 0) {
            yield self.buf.subarray(0, safe);
            self.buf = self.buf.subarray(safe);
          }
          if (!(await self.more())) throw malformed('the body ended inside a part');
        }
      })(),
      { objectMode: false },
    );
  }

  private async more(): Promise<boolean> {
    if (this.eof) return false;
    const r = await this.source.next();
    if (r.done) {
      this.eof = true;
      return false;
    }
    this.buf = this.buf.length === 0 ? r.value : Buffer.concat([this.buf, r.value]);
    return true;
  }
}

function param(disposition: string, key: string): string | null {
  const m = new RegExp(`(?:^|;)\\s*${key}="((?:[^"\\\\]|\\\\.)*)"`, 'i').exec(disposition) ?? new RegExp(`(?:^|;)\\s*${key}=([^;\\s]+)`, 'i').exec(disposition);
  return m ? m[1]!.replace(/\\(.)/g, '$1') : null;
}

function malformed(message: string): ConnectError {
  return new ConnectError('invalid_argument', `multipart body: ${message}`);
}
