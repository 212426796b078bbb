/**
 * SandboxSession is the agent's side of one running sandbox: its process table with each process's output ring and
 * attached streams, its stdin and file-data windows, and its file operations, multiplexed over the cell's one control
 * FIFO to the in-cell supervisor. It never touches the cell's files from the host: every operation goes through init.
 */
import { constants } from 'node:os';
import {
  FILE_WINDOW_BYTES,
  MAX_FILE_OPS_PER_SANDBOX,
  MAX_LIST_ENTRIES,
  MAX_PROCS_KEPT,
  MAX_PROCS_PER_SANDBOX,
  MAX_SANDBOX_CHUNK_BYTES,
  MAX_STREAMS_PER_SANDBOX,
  PROC_OUTPUT_RING_BYTES,
  PROC_STDIN_WINDOW_BYTES,
  PROC_STREAM_WINDOW_BYTES,
  type AgentToControl,
  type ControlToAgent,
  type FileErrorCode,
  type ProcErrorCode,
  type ProcInfo,
} from '../../shared/wire.js';
import {
  decodeEntries,
  encodeCancelOp,
  encodeCredit,
  encodeFileData,
  encodeFileOp,
  encodeFlow,
  encodeProcStart,
  encodeResize,
  encodeSignal,
  encodeStdin,
  errnoText,
  fileErrorCode,
  INIT_CHUNK_BYTES,
  procErrorCode,
  type FileOpName,
  type SandboxFrame,
} from './init-codec.js';
import { OutputRing } from './output-ring.js';

/** SandboxRequest is a control-plane message for a sandbox (except sandbox.timeout, which is the cell's deadline). */
export type SandboxRequest = Extract<ControlToAgent, { type: `proc.${string}` | `file.${string}` }>;

/** SandboxLink is the session's way to the cell's supervisor and to the control plane. */
export interface SandboxLink {
  /** toInit queues bytes for the supervisor (the cell's control FIFO). */
  toInit(bytes: Buffer): void;
  /** toControl sends a message to the control plane. */
  toControl(msg: AgentToControl): void;
  /** congested says whether the channel to the control plane has too much unsent. */
  congested(): boolean;
}

/**
 * PAUSE_LAG_BYTES: when the slowest attached stream lags this far behind a process's output, init stops reading it.
 * Half the ring: what is already on its way from init when it pauses (its pipe to the agent, and under gVisor the
 * sandbox's own relay, measured up to ~0.5 MiB) must still fit, so that a lagging stream never loses bytes.
 */
const PAUSE_LAG_BYTES = PROC_OUTPUT_RING_BYTES / 2;
/** RESUME_LAG_BYTES: init reads a paused process again once the slowest stream is this close. */
const RESUME_LAG_BYTES = PROC_OUTPUT_RING_BYTES / 4;
/** CONGESTION_POLL_MS is how often streams held back by a congested channel try again. */
const CONGESTION_POLL_MS = 20;
/** ORPHAN_STREAM_MS: after a reconnect, a stream the control plane neither acks nor re-attaches within this is dropped. */
export const ORPHAN_STREAM_MS = 30_000;
/** MAX_LIST_BYTES bounds what a stat or list answer may bring (MAX_LIST_ENTRIES of at most 255-byte names). */
const MAX_LIST_BYTES = (MAX_LIST_ENTRIES + 1) * (23 + 1024);

interface Stream {
  id: string;
  proc: Proc;
  /** The next offset to send. */
  next: number;
  /** The offset the client has consumed to. */
  acked: number;
  /** Since the last reconnect, the control plane has acked or re-attached this stream. */
  alive: boolean;
}

interface Proc {
  procId: string;
  handle: number;
  pid: number | null;
  argv: string[];
  pty: boolean;
  startedAt: string;
  running: boolean;
  started: boolean;
  exitCode: number | null;
  signal: number | null;
  timedOut: boolean;
  ring: OutputRing;
  streams: Set<Stream>;
  paused: boolean;
  timer: NodeJS.Timeout | null;
  stdinOpen: boolean;
  /** Stdin received from the control plane and not yet passed to init. */
  stdinQueue: Buffer[];
  stdinQueued: number;
  /** Stdin passed to init and not yet taken by the process. */
  stdinInFlight: number;
  /** Stdin the process has taken since its start (proc.stdin.ack seq). */
  stdinTaken: number;
  stdinClosing: boolean;
}

interface FileOp {
  opId: string;
  handle: number;
  op: FileOpName;
  /** read: bytes forwarded; write: bytes init has taken. */
  bytes: number;
  /** read: what the reader acked; write: received from the writer. */
  mark: number;
  /** write: data waiting for room in init's window, and what init holds. */
  queue: Buffer[];
  queued: number;
  inFlight: number;
  ending: boolean;
  endSent: boolean;
  done: boolean;
  /** stat, list: the answer's bytes. */
  answer: Buffer[];
  answerBytes: number;
}

/** SandboxSession multiplexes one sandbox's processes, streams and file operations. Precondition: its cell is running. */
export class SandboxSession {
  private readonly procs = new Map<string, Proc>();
  private readonly byHandle = new Map<number, Proc>();
  private readonly streams = new Map<string, Stream>();
  private readonly ops = new Map<string, FileOp>();
  private readonly opsByHandle = new Map<number, FileOp>();
  private nextHandle = 1;
  private congestionTimer: NodeJS.Timeout | null = null;
  private orphanTimer: NodeJS.Timeout | null = null;
  private closed = false;

  constructor(
    readonly jobId: string,
    /** The env every process starts with (the sandbox's and the platform's); proc.start's env is added to it. */
    private readonly baseEnv: () => Readonly<Record<string, string>>,
    private readonly link: SandboxLink,
  ) {}

  /** runningProcesses counts the processes that have not exited (for idle detection and limits). */
  get runningProcesses(): number {
    let n = 0;
    for (const p of this.procs.values()) if (p.running) n++;
    return n;
  }

  /** retainedOutputBytes is the output held in every ring (for memory checks). */
  get retainedOutputBytes(): number {
    let n = 0;
    for (const p of this.procs.values()) n += p.ring.retainedBytes;
    return n;
  }

  /** handle applies one control-plane request. */
  handle(m: SandboxRequest): void {
    if (this.closed) return;
    switch (m.type) {
      case 'proc.start':
        return this.start(m);
      case 'proc.stdin':
        return this.stdin(m.procId, m.data === null ? null : Buffer.from(m.data, 'base64'));
      case 'proc.signal':
        return this.onLiveProc(m.procId, null, (p) => this.link.toInit(encodeSignal(p.handle, m.signal)));
      case 'proc.resize':
        return this.onLiveProc(m.procId, null, (p) => p.pty && this.link.toInit(encodeResize(p.handle, m.cols, m.rows)));
      case 'proc.attach':
        return this.attach(m.procId, m.streamId, m.fromSeq);
      case 'proc.detach': {
        const s = this.streams.get(m.streamId);
        if (!s) return this.procError(null, m.streamId, 'not_found', `no stream ${m.streamId}`);
        this.dropStream(s);
        return this.flow(s.proc);
      }
      case 'proc.ack': {
        const s = this.streams.get(m.streamId);
        if (!s) return; // detached or its process forgotten: late acks are harmless
        s.acked = Math.min(Math.max(s.acked, m.seq), s.next);
        s.alive = true;
        return this.pump(s);
      }
      case 'proc.list':
        return this.link.toControl({ type: 'proc.listed', jobId: this.jobId, requestId: m.requestId, procs: this.list() });
      case 'file.op':
        return this.fileOp(m);
      case 'file.data':
        return this.fileData(m.opId, m.data === null ? null : Buffer.from(m.data, 'base64'));
      case 'file.ack':
        return this.fileAck(m.opId, m.seq);
      default:
        return assertNever(m);
    }
  }

  /** onFrame applies one frame from the supervisor. */
  onFrame(f: SandboxFrame): void {
    if (this.closed) return;
    switch (f.type) {
      case 'ready':
        return;
      case 'proc.started': {
        const p = this.byHandle.get(f.id);
        if (!p) return;
        p.pid = f.pid;
        p.started = true;
        this.link.toControl({ type: 'proc.started', jobId: this.jobId, procId: p.procId, pid: Math.max(1, f.pid) });
        return this.pumpStdin(p);
      }
      case 'proc.failed': {
        const p = this.byHandle.get(f.id);
        if (!p) return;
        this.forget(p);
        const what = f.stage === 1 ? 'cannot use the working directory' : f.stage === 0 ? `cannot run ${p.argv[0] ?? ''}` : f.stage >= 4 ? 'cannot set up the terminal' : 'cannot start the process';
        this.link.toControl({ type: 'proc.start.failed', jobId: this.jobId, procId: p.procId, code: procErrorCode(f.errno, f.stage), message: `${what}: ${errnoText(f.errno)} (stage ${f.stage})`.slice(0, 1024) });
        return;
      }
      case 'proc.output': {
        const p = this.byHandle.get(f.id);
        if (!p) return;
        p.ring.append(f.stream, f.data);
        for (const s of p.streams) this.pump(s);
        return this.flow(p);
      }
      case 'proc.exited': {
        const p = this.byHandle.get(f.id);
        if (!p) return;
        p.running = false;
        p.exitCode = f.code;
        p.signal = f.signal;
        if (p.timer) clearTimeout(p.timer);
        p.timer = null;
        p.stdinOpen = false;
        p.stdinQueue = [];
        p.stdinQueued = 0;
        this.byHandle.delete(p.handle);
        this.link.toControl({ type: 'proc.exited', jobId: this.jobId, procId: p.procId, exitCode: f.code, signal: f.signal, timedOut: p.timedOut, outputSeq: p.ring.end });
        return this.prune();
      }
      case 'proc.stdin': {
        const p = this.byHandle.get(f.id);
        if (!p) return;
        p.stdinInFlight = Math.max(0, p.stdinInFlight - f.taken);
        p.stdinTaken += f.taken;
        if (f.closed) {
          // The process closed its stdin: what is still queued can never be taken.
          p.stdinOpen = false;
          p.stdinQueue = [];
          p.stdinQueued = 0;
          p.stdinInFlight = 0;
        }
        this.link.toControl({ type: 'proc.stdin.ack', jobId: this.jobId, procId: p.procId, seq: p.stdinTaken });
        if (f.closed) return this.procError(p.procId, null, 'stdin_closed', 'the process closed its stdin');
        return this.pumpStdin(p);
      }
      case 'file.data': {
        const o = this.opsByHandle.get(f.id);
        if (!o || o.done) return;
        if (o.op === 'read') {
          for (let at = 0; at < f.data.length; at += MAX_SANDBOX_CHUNK_BYTES) {
            const chunk = f.data.subarray(at, at + MAX_SANDBOX_CHUNK_BYTES);
            this.link.toControl({ type: 'file.data', jobId: this.jobId, opId: o.opId, seq: o.bytes, data: chunk.toString('base64') });
            o.bytes += chunk.length;
          }
        } else if (o.answerBytes + f.data.length <= MAX_LIST_BYTES) {
          o.answer.push(f.data);
          o.answerBytes += f.data.length;
        }
        return;
      }
      case 'file.taken': {
        const o = this.opsByHandle.get(f.id);
        if (!o || o.done) return;
        o.inFlight = Math.max(0, o.inFlight - f.bytes);
        o.bytes += f.bytes;
        this.link.toControl({ type: 'file.ack', jobId: this.jobId, opId: o.opId, seq: o.bytes });
        return this.pumpWrite(o);
      }
      case 'file.result': {
        const o = this.opsByHandle.get(f.id);
        if (!o) return;
        this.opsByHandle.delete(o.handle);
        this.ops.delete(o.opId);
        if (o.done) return;
        o.done = true;
        return this.fileResult(o, f.errno);
      }
      default:
        return assertNever(f);
    }
  }

  /**
   * onReconnect is called when the channel to the control plane is welcomed again. What was sent on the old connection
   * may be lost: every stream rewinds to its last ack and sends again from there; a stream that the (possibly restarted)
   * control plane neither acks nor re-attaches within ORPHAN_STREAM_MS is dropped, so that it no longer holds its
   * process back. File operations in flight cannot be replayed: they are cancelled and answered io_error.
   */
  onReconnect(): void {
    if (this.closed) return;
    for (const s of this.streams.values()) {
      s.next = s.acked;
      s.alive = false;
    }
    for (const o of [...this.ops.values()]) {
      if (o.done) continue;
      this.link.toInit(encodeCancelOp(o.handle));
      this.abortOp(o, 'io_error', 'the channel to the control plane was re-established while the operation ran; run it again');
    }
    this.orphanTimer ??= setTimeout(() => {
      this.orphanTimer = null;
      for (const s of [...this.streams.values()]) {
        if (s.alive) continue;
        this.dropStream(s);
        this.flow(s.proc);
      }
    }, ORPHAN_STREAM_MS);
    for (const s of this.streams.values()) this.pump(s);
  }

  /** close ends the session with its cell: timers stop, nothing more is sent. */
  close(): void {
    this.closed = true;
    for (const p of this.procs.values()) if (p.timer) clearTimeout(p.timer);
    if (this.congestionTimer) clearInterval(this.congestionTimer);
    this.congestionTimer = null;
    if (this.orphanTimer) clearTimeout(this.orphanTimer);
    this.orphanTimer = null;
  }

  // ---- Processes ----

  private start(m: Extract<SandboxRequest, { type: 'proc.start' }>): void {
    const fail = (code: ProcErrorCode, message: string) => this.link.toControl({ type: 'proc.start.failed', jobId: this.jobId, procId: m.procId, code, message });
    if (this.procs.has(m.procId)) return fail('exists', `process ${m.procId} exists`);
    if (this.runningProcesses >= MAX_PROCS_PER_SANDBOX) return fail('too_many_processes', `a sandbox runs at most ${MAX_PROCS_PER_SANDBOX} processes at once`);
    if (m.streamId && this.streams.has(m.streamId)) return fail('exists', `stream ${m.streamId} exists`);
    if (m.streamId && this.streams.size >= MAX_STREAMS_PER_SANDBOX) return fail('too_many_streams', `a sandbox has at most ${MAX_STREAMS_PER_SANDBOX} streams`);
    const p: Proc = {
      procId: m.procId,
      handle: this.nextHandle++,
      pid: null,
      argv: m.argv.slice(0, 16).map((a) => a.slice(0, 256)),
      pty: m.pty !== null,
      startedAt: new Date().toISOString(),
      running: true,
      started: false,
      exitCode: null,
      signal: null,
      timedOut: false,
      ring: new OutputRing(PROC_OUTPUT_RING_BYTES),
      streams: new Set(),
      paused: false,
      timer: null,
      stdinOpen: m.stdin || m.pty !== null,
      stdinQueue: [],
      stdinQueued: 0,
      stdinInFlight: 0,
      stdinTaken: 0,
      stdinClosing: false,
    };
    let bytes: Buffer;
    try {
      bytes = encodeProcStart({ id: p.handle, argv: m.argv, env: { ...this.baseEnv(), ...m.env }, cwd: m.cwd, pty: m.pty, stdin: m.stdin });
    } catch (e) {
      return fail('start_failed', (e as Error).message);
    }
    this.procs.set(p.procId, p);
    this.byHandle.set(p.handle, p);
    if (m.streamId) this.addStream(p, m.streamId, 0);
    if (m.timeoutMs !== null) {
      p.timer = setTimeout(() => {
        p.timedOut = true;
        this.link.toInit(encodeSignal(p.handle, constants.signals.SIGKILL));
      }, m.timeoutMs);
    }
    this.link.toInit(bytes);
    this.prune();
  }

  private stdin(procId: string, data: Buffer | null): void {
    const p = this.procs.get(procId);
    if (!p) return this.procError(procId, null, 'not_found', `no process ${procId}`);
    if (!p.running) return this.procError(procId, null, 'not_running', `process ${procId} has exited`);
    if (!p.stdinOpen || p.stdinClosing) return this.procError(procId, null, 'stdin_closed', `the stdin of process ${procId} is closed`);
    if (data === null) {
      p.stdinClosing = true;
      return this.pumpStdin(p);
    }
    if (p.stdinQueued + p.stdinInFlight + data.length > PROC_STDIN_WINDOW_BYTES) {
      return this.procError(procId, null, 'window_exceeded', `more than ${PROC_STDIN_WINDOW_BYTES} bytes of stdin in flight; wait for proc.stdin.ack`);
    }
    p.stdinQueue.push(data);
    p.stdinQueued += data.length;
    this.pumpStdin(p);
  }

  /** pumpStdin passes queued stdin to init while its window has room; then the close, once everything is taken. */
  private pumpStdin(p: Proc): void {
    if (!p.started || !p.running) return;
    while (p.stdinQueue.length > 0 && p.stdinInFlight < INIT_CHUNK_BYTES) {
      const head = p.stdinQueue[0]!;
      const n = Math.min(head.length, INIT_CHUNK_BYTES - p.stdinInFlight);
      this.link.toInit(encodeStdin(p.handle, head.subarray(0, n)));
      p.stdinInFlight += n;
      p.stdinQueued -= n;
      if (n === head.length) p.stdinQueue.shift();
      else p.stdinQueue[0] = head.subarray(n);
    }
    if (p.stdinClosing && p.stdinOpen && p.stdinQueue.length === 0) {
      p.stdinOpen = false;
      this.link.toInit(encodeStdin(p.handle, null));
    }
  }

  private onLiveProc(procId: string, streamId: string | null, act: (p: Proc) => unknown): void {
    const p = this.procs.get(procId);
    if (!p) return this.procError(procId, streamId, 'not_found', `no process ${procId}`);
    if (!p.running || !p.started) return this.procError(procId, streamId, 'not_running', `process ${procId} is not running`);
    act(p);
  }

  private attach(procId: string, streamId: string, fromSeq: number): void {
    const p = this.procs.get(procId);
    if (!p) return this.procError(procId, streamId, 'not_found', `no process ${procId}`);
    const old = this.streams.get(streamId);
    if (old) this.dropStream(old); // a re-attach under the same id replaces the stream (a reconnecting client)
    if (this.streams.size >= MAX_STREAMS_PER_SANDBOX) return this.procError(procId, streamId, 'too_many_streams', `a sandbox has at most ${MAX_STREAMS_PER_SANDBOX} streams`);
    this.addStream(p, streamId, Math.min(fromSeq, p.ring.end));
  }

  private addStream(p: Proc, id: string, from: number): void {
    const s: Stream = { id, proc: p, next: Math.max(from, p.ring.start), acked: Math.max(from, p.ring.start), alive: true };
    this.streams.set(id, s);
    p.streams.add(s);
    this.pump(s);
  }

  private dropStream(s: Stream): void {
    this.streams.delete(s.id);
    s.proc.streams.delete(s);
  }

  /** pump sends a stream what its window allows; a congested channel holds it back until it drains. */
  private pump(s: Stream): void {
    while (s.next < s.proc.ring.end && s.next - s.acked < PROC_STREAM_WINDOW_BYTES) {
      if (this.link.congested()) return this.waitForChannel();
      const seg = s.proc.ring.read(s.next, Math.min(MAX_SANDBOX_CHUNK_BYTES, PROC_STREAM_WINDOW_BYTES - (s.next - s.acked)));
      if (!seg) break;
      if (seg.seq > s.next) s.acked = Math.max(s.acked, seg.seq); // dropped from the ring: the gap needs no ack
      this.link.toControl({ type: 'proc.output', jobId: this.jobId, procId: s.proc.procId, streamId: s.id, seq: seg.seq, stream: seg.stream, data: seg.data.toString('base64') });
      s.next = seg.seq + seg.data.length;
    }
    this.flow(s.proc);
  }

  /** flow pauses init's reading of a process whose slowest attached stream lags almost a ring behind, and resumes it. */
  private flow(p: Proc): void {
    if (!p.running) return;
    let slowest = p.ring.end;
    for (const s of p.streams) slowest = Math.min(slowest, s.next);
    const lag = p.ring.end - slowest;
    const pause = p.paused ? lag >= RESUME_LAG_BYTES : lag >= PAUSE_LAG_BYTES;
    if (pause === p.paused) return;
    p.paused = pause;
    this.link.toInit(encodeFlow(p.handle, pause));
  }

  private waitForChannel(): void {
    this.congestionTimer ??= setInterval(() => {
      if (this.link.congested()) return;
      clearInterval(this.congestionTimer!);
      this.congestionTimer = null;
      for (const s of this.streams.values()) this.pump(s);
    }, CONGESTION_POLL_MS);
  }

  private list(): ProcInfo[] {
    return [...this.procs.values()].map((p) => ({
      procId: p.procId,
      pid: p.pid,
      argv: p.argv,
      pty: p.pty,
      running: p.running,
      exitCode: p.exitCode,
      signal: p.signal,
      timedOut: p.timedOut,
      startedAt: p.startedAt,
      firstSeq: p.ring.start,
      nextSeq: p.ring.end,
    }));
  }

  /** prune forgets the oldest exited processes beyond MAX_PROCS_KEPT. */
  private prune(): void {
    if (this.procs.size <= MAX_PROCS_KEPT) return;
    for (const p of this.procs.values()) {
      if (this.procs.size <= MAX_PROCS_KEPT) return;
      if (!p.running) this.forget(p);
    }
  }

  private forget(p: Proc): void {
    if (p.timer) clearTimeout(p.timer);
    for (const s of p.streams) this.streams.delete(s.id);
    this.procs.delete(p.procId);
    this.byHandle.delete(p.handle);
  }

  private procError(procId: string | null, streamId: string | null, code: ProcErrorCode, message: string): void {
    this.link.toControl({ type: 'proc.error', jobId: this.jobId, procId, streamId, code, message });
  }

  // ---- Files ----

  private fileOp(m: Extract<SandboxRequest, { type: 'file.op' }>): void {
    if (this.ops.has(m.opId)) return this.fileError(m.opId, 'exists_op', `operation ${m.opId} exists`);
    if (this.ops.size >= MAX_FILE_OPS_PER_SANDBOX) return this.fileError(m.opId, 'too_many_operations', `a sandbox runs at most ${MAX_FILE_OPS_PER_SANDBOX} file operations at once`);
    const o: FileOp = { opId: m.opId, handle: this.nextHandle++, op: m.op, bytes: 0, mark: 0, queue: [], queued: 0, inFlight: 0, ending: false, endSent: false, done: false, answer: [], answerBytes: 0 };
    this.ops.set(o.opId, o);
    this.opsByHandle.set(o.handle, o);
    this.link.toInit(encodeFileOp({ id: o.handle, op: m.op, path: m.path, to: m.to ?? '', recursive: m.recursive ?? false, mode: m.mode ?? 0, credit: m.op === 'read' ? FILE_WINDOW_BYTES : 0 }));
  }

  private fileData(opId: string, data: Buffer | null): void {
    const o = this.ops.get(opId);
    if (!o || o.done) return; // failed (and answered) already, or unknown: late data is dropped
    if (o.op !== 'write' || o.ending) return this.abortOp(o, 'invalid_path', 'file.data is only for a write, before its end');
    if (data === null) {
      o.ending = true;
      return this.pumpWrite(o);
    }
    o.mark += data.length;
    if (o.mark - o.bytes > FILE_WINDOW_BYTES) return this.abortOp(o, 'window_exceeded', `more than ${FILE_WINDOW_BYTES} bytes in flight; wait for file.ack`);
    o.queue.push(data);
    o.queued += data.length;
    this.pumpWrite(o);
  }

  private pumpWrite(o: FileOp): void {
    while (o.queue.length > 0 && o.inFlight < INIT_CHUNK_BYTES) {
      const head = o.queue[0]!;
      const n = Math.min(head.length, INIT_CHUNK_BYTES - o.inFlight);
      this.link.toInit(encodeFileData(o.handle, head.subarray(0, n)));
      o.inFlight += n;
      o.queued -= n;
      if (n === head.length) o.queue.shift();
      else o.queue[0] = head.subarray(n);
    }
    if (o.ending && !o.endSent && o.queue.length === 0) {
      o.endSent = true;
      this.link.toInit(encodeFileData(o.handle, null));
    }
  }

  private fileAck(opId: string, seq: number): void {
    const o = this.ops.get(opId);
    if (!o || o.done || o.op !== 'read' || seq <= o.mark) return;
    const grant = Math.min(seq, o.bytes) - o.mark;
    if (grant <= 0) return;
    o.mark += grant;
    this.link.toInit(encodeCredit(o.handle, grant));
  }

  /** abortOp answers an operation as failed now; init's own result for it is then dropped. */
  private abortOp(o: FileOp, code: FileErrorCode, message: string): void {
    o.done = true;
    o.queue = [];
    // An unfinished write is ended so that its child exits; its file is left as far as it got.
    if (o.op === 'write' && !o.endSent) {
      o.endSent = true;
      this.link.toInit(encodeFileData(o.handle, null));
    }
    this.fileError(o.opId, code, message);
  }

  private fileResult(o: FileOp, errno: number): void {
    const base = { type: 'file.result' as const, jobId: this.jobId, opId: o.opId };
    if (errno !== 0) return this.link.toControl({ ...base, ok: false, code: fileErrorCode(errno), message: errnoText(errno) });
    switch (o.op) {
      case 'read':
        this.link.toControl({ type: 'file.data', jobId: this.jobId, opId: o.opId, seq: o.bytes, data: null });
        return this.link.toControl({ ...base, ok: true, bytes: o.bytes });
      case 'write':
        return this.link.toControl({ ...base, ok: true, bytes: o.bytes });
      case 'stat': {
        const { entries } = decodeEntries(Buffer.concat(o.answer));
        const stat = entries[0];
        if (!stat) return this.link.toControl({ ...base, ok: false, code: 'io_error', message: 'no stat answer' });
        return this.link.toControl({ ...base, ok: true, stat });
      }
      case 'list': {
        const { entries, truncated } = decodeEntries(Buffer.concat(o.answer));
        return this.link.toControl({ ...base, ok: true, entries: entries.slice(0, MAX_LIST_ENTRIES), truncated });
      }
      default:
        return this.link.toControl({ ...base, ok: true });
    }
  }

  private fileError(opId: string, code: FileErrorCode, message: string): void {
    this.link.toControl({ type: 'file.result', jobId: this.jobId, opId, ok: false, code, message });
  }
}

function assertNever(x: never): never {
  throw new Error(`unhandled ${JSON.stringify(x)}`);
}
