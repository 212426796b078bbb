/** The byte protocol between the agent and cell init (see native/cell-init/cell-init.c). */
import { decodeSandboxFrame, type SandboxFrame } from '../sandbox/init-codec.js';

/** MAX_FRAME_BYTES bounds one frame from a cell: anything larger is a protocol violation. */
export const MAX_FRAME_BYTES = 1 << 20;

/** CellFrame is one decoded message from cell init. */
export type CellFrame =
  | { type: 'started'; pid: number }
  | { type: 'stdout' | 'stderr'; data: Buffer }
  | { type: 'exit'; code: number | null; signal: number | null }
  | { type: 'error'; message: string }
  | SandboxFrame;

/** encodeAssignment serialises the workload's argv, env and cwd for cell init. */
export function encodeAssignment(argv: string[], env: Record<string, string>, cwd: string): Buffer {
  const envList = Object.entries(env).map(([k, v]) => `${k}=${v}`);
  for (const s of [cwd, ...argv, ...envList]) {
    if (s.includes('\0')) throw new Error('NUL byte in command, env or cwd');
  }
  const strings = Buffer.from([cwd, ...argv, ...envList].map((s) => s + '\0').join(''), 'utf8');
  const header = Buffer.alloc(16);
  header.write('CRA1', 0, 'latin1');
  header.writeUInt32LE(8 + strings.length, 4);
  header.writeUInt32LE(argv.length, 8);
  header.writeUInt32LE(envList.length, 12);
  return Buffer.concat([header, strings]);
}

/** encodeStart tells cell init that the network and limits are in place: it may run the workload now. */
export function encodeStart(): Buffer {
  const header = Buffer.alloc(8);
  header.write('CRS1', 0, 'latin1');
  return header;
}

/** encodeFile serialises a file for the cell's private tmpfs (/run/cleanroom/<name>), written atomically by cell init. */
export function encodeFile(name: string, mode: number, content: string | Buffer): Buffer {
  if (!/^[A-Za-z0-9_-][A-Za-z0-9._-]{0,63}$/.test(name)) throw new Error(`bad cell file name ${JSON.stringify(name)}`);
  const body = Buffer.concat([Buffer.alloc(4), Buffer.from(`${name}\0`, 'latin1'), Buffer.from(content)]);
  body.writeUInt32LE(mode, 0);
  const header = Buffer.alloc(8);
  header.write('CRF1', 0, 'latin1');
  header.writeUInt32LE(body.length, 4);
  return Buffer.concat([header, body]);
}

/**
 * FrameDecoder turns the untrusted byte stream from a cell into frames, refusing malformed input. It holds at most one
 * partial frame (MAX_FRAME_BYTES + 5 bytes) between pushes; after a protocol violation it holds nothing and refuses
 * every later push.
 */
export class FrameDecoder {
  private buffered: Buffer = Buffer.alloc(0);
  private failure: Error | null = null;

  /** push adds bytes and returns every complete frame; throws (its own Error) on a protocol violation. */
  push(chunk: Buffer): CellFrame[] {
    if (this.failure) throw new Error(`cell stream already refused: ${this.failure.message}`);
    try {
      return this.decode(chunk);
    } catch (e) {
      this.failure = e as Error;
      this.buffered = Buffer.alloc(0);
      throw e;
    }
  }

  private decode(chunk: Buffer): CellFrame[] {
    this.buffered = this.buffered.length ? Buffer.concat([this.buffered, chunk]) : chunk;
    const frames: CellFrame[] = [];
    while (this.buffered.length >= 5) {
      const len = this.buffered.readUInt32LE(1);
      if (len > MAX_FRAME_BYTES) throw new Error(`cell frame too large: ${len} bytes`);
      if (this.buffered.length < 5 + len) break;
      const type = String.fromCharCode(this.buffered[0] ?? 0);
      const data = Buffer.from(this.buffered.subarray(5, 5 + len));
      this.buffered = this.buffered.subarray(5 + len);
      frames.push(decodeFrame(type, data));
    }
    return frames;
  }

  /** pending reports whether a partial frame is buffered. */
  get pending(): boolean {
    return this.buffered.length > 0;
  }

  /** bufferedBytes is the size of the partial frame held. */
  get bufferedBytes(): number {
    return this.buffered.length;
  }
}

function decodeFrame(type: string, data: Buffer): CellFrame {
  switch (type) {
    case 'o':
      return { type: 'stdout', data };
    case 'e':
      return { type: 'stderr', data };
    case 's':
      return { type: 'started', pid: parseIntStrict(data.toString('latin1')) };
    case 'x': {
      const m = /^(code|signal) (\d{1,3})$/.exec(data.toString('latin1'));
      if (!m) throw new Error('malformed exit frame');
      const n = Number(m[2]);
      if (n > 255) throw new Error('malformed exit frame');
      return m[1] === 'code' ? { type: 'exit', code: n, signal: null } : { type: 'exit', code: null, signal: n };
    }
    case 'E':
      return { type: 'error', message: data.toString('utf8').slice(0, 500) };
    default: {
      const f = decodeSandboxFrame(type, data);
      if (!f) throw new Error(`unknown cell frame type ${JSON.stringify(type)}`);
      return f;
    }
  }
}

function parseIntStrict(s: string): number {
  if (!/^\d{1,10}$/.test(s)) throw new Error('malformed started frame');
  return Number(s);
}
