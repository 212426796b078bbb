/**
 * FileRelay runs file operations inside sandboxes through their agents: stat, list, mkdir -p, remove, rename, and
 * streamed reads and writes. The control plane never touches a sandbox's files itself, and neither does the agent from
 * the host: every operation runs in the cell, as the workload user. Data moves in bounded windows each way
 * (FILE_WINDOW_BYTES past the receiver's last file.ack), so a transfer of any size holds at most a window here.
 */
import { randomBytes } from 'node:crypto';
import type { Readable } from 'node:stream';
import { ApiError } from '../../shared/errors.js';
import { FILE_WINDOW_BYTES, type FileErrorCode, type FileStat } from '../../shared/wire.js';
import type { SandboxChannel, SandboxReport, SandboxRequestMessage } from './sandbox-channel.js';
import type { LiveSandbox } from './sandbox-service.js';

/** FILE_OP_TIMEOUT_MS bounds the wait for the answer to a metadata operation (and for the end of a transfer's window). */
export const FILE_OP_TIMEOUT_MS = 30_000;
/** FILE_PIECE_BYTES is the most data one file.data carries from here. */
export const FILE_PIECE_BYTES = 64 * 1024;

/** FileResult is the agent's answer to a file operation. */
export interface FileResult {
  entries?: FileStat[];
  truncated?: boolean;
  stat?: FileStat;
  bytes?: number;
}

/** ReadSink receives a file's bytes; false from write means wait for onDrain before acknowledging. */
export interface ReadSink {
  write(data: Buffer): boolean;
  onDrain(cb: () => void): void;
}

interface Op {
  jobId: string;
  agentId: string;
  /** Settles with the file.result. */
  resolve(r: FileResult): void;
  reject(e: ApiError): void;
  timer: NodeJS.Timeout | null;
  /** read: where data goes, and the offset consumed so far. */
  sink?: ReadSink;
  consumed: number;
  waitingDrain: boolean;
  /** write: the offset the agent has taken up to, and who waits for window room. */
  taken: number;
  waiters: Array<() => void>;
  failed: ApiError | null;
}

/** FileRelay relays file operations between routes and agents. */
export class FileRelay {
  private readonly ops = new Map<string, Op>();

  constructor(private readonly channel: () => SandboxChannel | null) {}

  /** stat, list, mkdir, remove, rename: one request, one answer. */
  async simple(sb: LiveSandbox, op: 'stat' | 'list' | 'mkdir' | 'remove' | 'rename', path: string, opts: { to?: string; recursive?: boolean } = {}): Promise<FileResult> {
    const { opId, done } = this.begin(sb);
    this.send(sb, opId, { type: 'file.op', jobId: sb.job.id, opId, op, path, ...(opts.to !== undefined ? { to: opts.to } : {}), ...(opts.recursive !== undefined ? { recursive: opts.recursive } : {}) });
    return done;
  }

  /**
   * read streams a file into `sink`; resolves once the file has been read whole (the caller ends its response). The
   * returned `first` settles when the first byte or the end arrives, or rejects with the failure before any data, so
   * that the caller can still answer with an error status.
   */
  read(sb: LiveSandbox, path: string, sink: ReadSink): { first: Promise<void>; done: Promise<FileResult>; cancel: () => void } {
    const { opId, op, done } = this.begin(sb, sink);
    let first!: () => void;
    const started = new Promise<void>((resolve) => (first = resolve));
    const wrapped: ReadSink = {
      write: (d) => {
        first();
        return sink.write(d);
      },
      onDrain: (cb) => sink.onDrain(cb),
    };
    op.sink = wrapped;
    this.send(sb, opId, { type: 'file.op', jobId: sb.job.id, opId, op: 'read', path });
    // No timer while data flows: the window bounds the rest. The first answer is bounded, though.
    return {
      first: Promise.race([started, done.then(() => undefined)]),
      done,
      cancel: () => this.abort(opId, new ApiError('conflict', 'the reader went away')),
    };
  }

  /** write streams `body` into a file (created or truncated), within the agent's window; resolves with the bytes written. */
  async write(sb: LiveSandbox, path: string, body: Readable): Promise<FileResult> {
    const { opId, op, done } = this.begin(sb);
    done.catch(() => {}); // observed below; a rejection while the body is still read must not go unhandled
    if (op.timer) clearTimeout(op.timer);
    op.timer = null;
    this.send(sb, opId, { type: 'file.op', jobId: sb.job.id, opId, op: 'write', path });
    let offset = 0;
    try {
      // Not destroyed when the write fails: the route still answers on this request (and the listener discards the rest).
      for await (const chunk of body.iterator({ destroyOnReturn: false }) as AsyncIterable<Buffer>) {
        for (let i = 0; i < chunk.length; i += FILE_PIECE_BYTES) {
          const piece = chunk.subarray(i, i + FILE_PIECE_BYTES);
          await this.room(op, offset + piece.length);
          this.send(sb, opId, { type: 'file.data', jobId: sb.job.id, opId, seq: offset, data: piece.toString('base64') });
          offset += piece.length;
        }
      }
    } catch (e) {
      // The file failed (no_space…) or the upload broke off: the agent drops the partial operation either way.
      if (!op.failed) this.abort(opId, e instanceof ApiError ? e : new ApiError('malformed_request', 'the upload broke off before its end'));
      throw op.failed ?? e;
    }
    if (op.failed) throw op.failed;
    this.send(sb, opId, { type: 'file.data', jobId: sb.job.id, opId, seq: offset, data: null });
    op.timer = setTimeout(() => this.abort(opId, new ApiError('unavailable', 'the agent did not confirm the write in time')), FILE_OP_TIMEOUT_MS);
    return done;
  }

  /** onReport applies a file report of an agent; reports about another agent's operations are ignored. */
  onReport(agentId: string, msg: Extract<SandboxReport, { type: `file.${string}` }>): void {
    const op = this.ops.get(msg.opId);
    if (!op || op.agentId !== agentId || op.jobId !== msg.jobId) return;
    switch (msg.type) {
      case 'file.data': {
        if (!op.sink || msg.data === null) return;
        const data = Buffer.from(msg.data, 'base64');
        const end = msg.seq + data.length;
        if (end <= op.consumed) return;
        op.consumed = end;
        if (op.sink.write(msg.seq < op.consumed - data.length ? data : data)) this.ackRead(op, msg.opId);
        else if (!op.waitingDrain) {
          op.waitingDrain = true;
          op.sink.onDrain(() => {
            op.waitingDrain = false;
            this.ackRead(op, msg.opId);
          });
        }
        return;
      }
      case 'file.ack':
        op.taken = Math.max(op.taken, msg.seq);
        for (const w of op.waiters.splice(0)) w();
        return;
      case 'file.result':
        if (msg.ok) this.finish(msg.opId, { ...(msg.entries ? { entries: msg.entries } : {}), ...(msg.truncated !== undefined ? { truncated: msg.truncated } : {}), ...(msg.stat ? { stat: msg.stat } : {}), ...(msg.bytes !== undefined ? { bytes: msg.bytes } : {}) });
        else this.abort(msg.opId, fileError(msg.code ?? 'io_error', msg.message ?? 'the file operation failed'), false);
        return;
      default:
        return;
    }
  }

  /** sandboxEnded fails the operations of a sandbox that ended. */
  sandboxEnded(jobId: string, why: string): void {
    for (const [opId, op] of [...this.ops]) if (op.jobId === jobId) this.abort(opId, new ApiError('sandbox_not_running', `the sandbox ended: ${why}`), false);
  }

  /** agentLost fails the operations on an agent that disconnected. */
  agentLost(agentId: string): void {
    for (const [opId, op] of [...this.ops]) if (op.agentId === agentId) this.abort(opId, new ApiError('unavailable', "the connection to the sandbox's agent was lost; retry"), false);
  }

  private begin(sb: LiveSandbox, sink?: ReadSink): { opId: string; op: Op; done: Promise<FileResult> } {
    const opId = `op_${randomBytes(8).toString('hex')}`;
    let op!: Op;
    const done = new Promise<FileResult>((resolve, reject) => {
      op = { jobId: sb.job.id, agentId: sb.agentId, resolve, reject, timer: null, consumed: 0, waitingDrain: false, taken: 0, waiters: [], failed: null, ...(sink ? { sink } : {}) };
    });
    if (!sink) op.timer = setTimeout(() => this.abort(opId, new ApiError('unavailable', 'the agent did not answer the file operation in time; retry')), FILE_OP_TIMEOUT_MS);
    this.ops.set(opId, op);
    return { opId, op, done };
  }

  /** room waits until the agent's window admits data up to `upTo`. */
  private async room(op: Op, upTo: number): Promise<void> {
    const deadline = Date.now() + FILE_OP_TIMEOUT_MS;
    while (upTo - op.taken > FILE_WINDOW_BYTES) {
      if (op.failed) throw op.failed;
      if (Date.now() > deadline) throw new ApiError('unavailable', 'the sandbox did not take the upload in time');
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, 1000);
        op.waiters.push(() => (clearTimeout(t), resolve()));
      });
    }
    if (op.failed) throw op.failed;
  }

  private ackRead(op: Op, opId: string): void {
    if (this.ops.get(opId) !== op) return;
    this.channel()?.send(op.agentId, { type: 'file.ack', jobId: op.jobId, opId, seq: op.consumed });
  }

  private finish(opId: string, r: FileResult): void {
    const op = this.ops.get(opId);
    if (!op) return;
    this.ops.delete(opId);
    if (op.timer) clearTimeout(op.timer);
    op.resolve(r);
  }

  /** abort fails an operation here (and tells the agent to drop it, unless the agent is the one that failed it). */
  private abort(opId: string, e: ApiError, tellAgent = true): void {
    const op = this.ops.get(opId);
    if (!op) return;
    op.failed = e;
    for (const w of op.waiters.splice(0)) w();
    this.ops.delete(opId);
    if (op.timer) clearTimeout(op.timer);
    // An aborted transfer ends on the agent with an empty end marker; its result is ignored (the op is gone here).
    if (tellAgent) this.channel()?.send(op.agentId, { type: 'file.data', jobId: op.jobId, opId, seq: op.consumed || op.taken, data: null });
    op.reject(e);
  }

  private send(sb: LiveSandbox, opId: string, msg: SandboxRequestMessage): void {
    if (!this.channel()?.send(sb.agentId, msg)) {
      const e = new ApiError('unavailable', "the sandbox's agent is not connected right now; retry shortly");
      this.abort(opId, e, false);
      throw e;
    }
  }
}

/** fileError maps an agent's file error to the API's error. */
export function fileError(code: FileErrorCode, message: string): ApiError {
  switch (code) {
    case 'not_found':
      return new ApiError('not_found', message);
    case 'exists':
      return new ApiError('file_exists', message);
    case 'not_a_directory':
    case 'is_a_directory':
    case 'permission_denied':
    case 'invalid_path':
    case 'sandbox_not_running':
      return new ApiError(code, message);
    case 'no_space':
      return new ApiError('no_space', `the sandbox's volume is full: ${message}; delete files or create the sandbox with a larger diskMiB`);
    case 'not_empty':
      return new ApiError('conflict', `${message}: the directory is not empty (pass recursive=true to remove it with its contents)`);
    case 'too_many_operations':
      return new ApiError('quota_exceeded', message, { quota: 'fileOperationsPerSandbox', retryAfterSeconds: 1 });
    default:
      return new ApiError('io_error', message);
  }
}
