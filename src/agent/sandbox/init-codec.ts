/**
 * The byte protocol between the agent and a sandbox's supervisor (cell init in sandbox mode): the requests the agent
 * writes to the cell's control FIFO and the frames init answers with. native/cell-init/supervisor.c is the other end.
 */
import { constants } from 'node:os';
import type { FileErrorCode, ProcErrorCode } from '../../shared/wire.js';

/** INIT_CHUNK_BYTES is the most stdin or write data in flight to init per process or operation (supervisor.c IO_CHUNK). */
export const INIT_CHUNK_BYTES = 64 * 1024;
/** MAX_INIT_PROCS is the size of init's process table (supervisor.c MAX_PROCS). */
export const MAX_INIT_PROCS = 64;
/** MAX_INIT_OPS is the size of init's file-operation table (supervisor.c MAX_OPS). */
export const MAX_INIT_OPS = 16;

/** FILE_OPS numbers the file operations as init knows them (file-ops.c FOP_*). */
export const FILE_OPS = { stat: 1, list: 2, mkdir: 3, remove: 4, read: 5, write: 6, rename: 7 } as const;
/** FileOpName is a file operation. */
export type FileOpName = keyof typeof FILE_OPS;

/** SandboxFrame is one decoded frame of a sandbox's supervisor. */
export type SandboxFrame =
  | { type: 'ready' }
  | { type: 'proc.started'; id: number; pid: number }
  | { type: 'proc.failed'; id: number; errno: number; stage: number }
  | { type: 'proc.output'; id: number; stream: 'stdout' | 'stderr' | 'pty'; data: Buffer }
  | { type: 'proc.exited'; id: number; code: number | null; signal: number | null }
  | { type: 'proc.stdin'; id: number; taken: number; closed: boolean }
  | { type: 'file.data'; id: number; data: Buffer }
  | { type: 'file.taken'; id: number; bytes: number }
  | { type: 'file.result'; id: number; errno: number };

const STREAMS = [null, 'stdout', 'stderr', 'pty'] as const;

/** decodeSandboxFrame decodes one frame of the sandbox types, or returns null for a type it does not know. */
export function decodeSandboxFrame(type: string, data: Buffer): SandboxFrame | null {
  const need = (n: number) => {
    if (data.length < n) throw new Error(`short sandbox frame ${JSON.stringify(type)}`);
  };
  const u32 = (at: number) => data.readUInt32LE(at);
  switch (type) {
    case 'R':
      return { type: 'ready' };
    case 'P':
      need(8);
      return { type: 'proc.started', id: u32(0), pid: u32(4) };
    case 'F':
      need(12);
      return { type: 'proc.failed', id: u32(0), errno: u32(4), stage: u32(8) };
    case 'O': {
      need(5);
      const stream = STREAMS[data[4] ?? 0];
      if (!stream) throw new Error('bad output stream');
      return { type: 'proc.output', id: u32(0), stream, data: data.subarray(5) };
    }
    case 'X': {
      need(12);
      const value = u32(8);
      if (value > 255) throw new Error('malformed process exit');
      return u32(4) === 0 ? { type: 'proc.exited', id: u32(0), code: value, signal: null } : { type: 'proc.exited', id: u32(0), code: null, signal: value };
    }
    case 'W':
      need(12);
      return { type: 'proc.stdin', id: u32(0), taken: u32(4), closed: u32(8) !== 0 };
    case 'D':
      need(4);
      return { type: 'file.data', id: u32(0), data: data.subarray(4) };
    case 'A':
      need(8);
      return { type: 'file.taken', id: u32(0), bytes: u32(4) };
    case 'r':
      need(8);
      return { type: 'file.result', id: u32(0), errno: u32(4) };
    default:
      return null;
  }
}

function message(magic: string, payload: Buffer): Buffer {
  const header = Buffer.alloc(8);
  header.write(magic, 0, 'latin1');
  header.writeUInt32LE(payload.length, 4);
  return Buffer.concat([header, payload]);
}

function ids(...values: number[]): Buffer {
  const b = Buffer.alloc(values.length * 4);
  values.forEach((v, i) => b.writeUInt32LE(v >>> 0, i * 4));
  return b;
}

/** encodeSandboxAssignment tells init that its cell is a sandbox (instead of a job's assignment). */
export function encodeSandboxAssignment(): Buffer {
  return message('CRB1', Buffer.alloc(0));
}

/** ProcStartRequest is what init needs to start one process. */
export interface ProcStartRequest {
  id: number;
  argv: readonly string[];
  env: Readonly<Record<string, string>>;
  cwd: string;
  pty: { cols: number; rows: number } | null;
  stdin: boolean;
}

/** encodeProcStart serialises a process start; throws on a NUL byte. */
export function encodeProcStart(r: ProcStartRequest): Buffer {
  const envList = Object.entries(r.env).map(([k, v]) => `${k}=${v}`);
  const strings = [r.cwd, ...r.argv, ...envList];
  if (strings.some((s) => s.includes('\0'))) throw new Error('NUL byte in argv, env or cwd');
  const head = Buffer.alloc(20);
  head.writeUInt32LE(r.id, 0);
  head.writeUInt32LE((r.pty ? 1 : 0) | (r.stdin || r.pty ? 2 : 0), 4);
  head.writeUInt16LE(r.pty?.cols ?? 0, 8);
  head.writeUInt16LE(r.pty?.rows ?? 0, 10);
  head.writeUInt32LE(r.argv.length, 12);
  head.writeUInt32LE(envList.length, 16);
  return message('CRP1', Buffer.concat([head, Buffer.from(strings.map((s) => `${s}\0`).join(''), 'utf8')]));
}

/** encodeStdin passes stdin bytes to a process (at most INIT_CHUNK_BYTES in flight); null closes its stdin. */
export function encodeStdin(id: number, data: Buffer | null): Buffer {
  return data === null ? message('CRC1', ids(id)) : message('CRI1', Buffer.concat([ids(id), data]));
}

/** encodeSignal sends a signal to a process's group. */
export function encodeSignal(id: number, signal: number): Buffer {
  return message('CRK1', ids(id, signal));
}

/** encodeResize resizes a process's PTY. */
export function encodeResize(id: number, cols: number, rows: number): Buffer {
  const b = Buffer.alloc(8);
  b.writeUInt32LE(id, 0);
  b.writeUInt16LE(cols, 4);
  b.writeUInt16LE(rows, 6);
  return message('CRZ1', b);
}

/** encodeFlow pauses (init stops reading the process's output, so the process blocks) or resumes a process. */
export function encodeFlow(id: number, paused: boolean): Buffer {
  return message('CRW1', ids(id, paused ? 1 : 0));
}

/** FileOpRequest is what init needs to start one file operation. */
export interface FileOpRequest {
  id: number;
  op: FileOpName;
  path: string;
  to: string;
  recursive: boolean;
  mode: number;
  /** Bytes of a read init may forward before the agent grants more. */
  credit: number;
}

/** encodeFileOp serialises a file operation; throws on a NUL byte. */
export function encodeFileOp(r: FileOpRequest): Buffer {
  if (r.path.includes('\0') || r.to.includes('\0')) throw new Error('NUL byte in a path');
  return message('CRO1', Buffer.concat([ids(r.id, FILE_OPS[r.op], r.recursive ? 1 : 0, r.mode, r.credit), Buffer.from(`${r.path}\0${r.to}\0`, 'utf8')]));
}

/** encodeFileData passes write data to an operation (at most INIT_CHUNK_BYTES in flight); null ends the data. */
export function encodeFileData(id: number, data: Buffer | null): Buffer {
  return data === null ? message('CRE1', ids(id)) : message('CRD1', Buffer.concat([ids(id), data]));
}

/** encodeCancelOp kills a file operation's child; init still reports its result (which the agent then drops). */
export function encodeCancelOp(id: number): Buffer {
  return message('CRX1', ids(id));
}

/** encodeCredit lets init forward `bytes` more of a read. */
export function encodeCredit(id: number, bytes: number): Buffer {
  return message('CRG1', ids(id, bytes));
}

/** EntryStat is one decoded stat entry of a stat or list answer. */
export interface EntryStat {
  name: string;
  type: 'file' | 'directory' | 'symlink' | 'other';
  size: number;
  mode: number;
  mtimeMs: number;
}

const TYPES = [null, 'file', 'directory', 'symlink', 'other'] as const;

/** decodeEntries decodes the stat entries of a stat or list answer (file-ops.c send_entry); stops at a bad one. */
export function decodeEntries(b: Buffer): { entries: EntryStat[]; truncated: boolean } {
  const entries: EntryStat[] = [];
  let at = 0;
  while (at < b.length) {
    if (b[at] === 0xff) return { entries, truncated: true };
    if (at + 23 > b.length) break;
    const type = TYPES[b[at] ?? 0];
    const nameLen = b.readUInt16LE(at + 21);
    if (!type || at + 23 + nameLen > b.length) break;
    entries.push({
      type,
      mode: b.readUInt32LE(at + 1) & 0o7777,
      size: Math.min(Number(b.readBigUInt64LE(at + 5)), Number.MAX_SAFE_INTEGER),
      mtimeMs: Math.min(Number(b.readBigUInt64LE(at + 13)), 1e15),
      name: b.subarray(at + 23, at + 23 + nameLen).toString('utf8'),
    });
    at += 23 + nameLen;
  }
  return { entries, truncated: false };
}

const E = constants.errno;

/** fileErrorCode maps an errno from inside the cell to a file error code. */
export function fileErrorCode(errno: number): FileErrorCode {
  switch (errno) {
    case E.ENOENT:
      return 'not_found';
    case E.EEXIST:
      return 'exists';
    case E.ENOTDIR:
      return 'not_a_directory';
    case E.EISDIR:
      return 'is_a_directory';
    case E.EACCES:
    case E.EPERM:
    case E.EROFS:
      return 'permission_denied';
    case E.ENOSPC:
    case E.EDQUOT:
      return 'no_space';
    case E.ELOOP:
    case E.ENAMETOOLONG:
    case E.EINVAL:
    case E.EXDEV:
      return 'invalid_path';
    case E.ENOTEMPTY:
      return 'not_empty';
    case E.EAGAIN:
      return 'too_many_operations';
    default:
      return 'io_error';
  }
}

/** procErrorCode maps a failed start (errno, stage: 0 exec, 1 cwd, 2 identity, 3 resources) to a process error code. */
export function procErrorCode(errno: number, stage: number): ProcErrorCode {
  if (stage === 1) return 'invalid_cwd';
  if (stage === 3 && errno === E.EAGAIN) return 'too_many_processes';
  if (stage === 0 && errno === E.ENOENT) return 'command_not_found';
  if (stage === 0 && (errno === E.EACCES || errno === E.EPERM)) return 'permission_denied';
  return 'start_failed';
}

/** errnoText names an errno for a message (e.g. "ENOSPC"). */
export function errnoText(errno: number): string {
  return Object.entries(E).find(([, v]) => v === errno)?.[0] ?? `errno ${errno}`;
}
