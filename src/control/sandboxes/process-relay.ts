/**
 * ProcessRelay runs processes in sandboxes through their agents: start, list, stdin, signal, resize, and output
 * streams. The agent keeps each process's recent output (seq = byte offset), so a stream is only an attachment: a
 * client that goes away detaches and the process runs on; a client that comes back attaches again from its last
 * offset. Flow control: each stream acknowledges output to the agent only once its client's socket has taken it, and
 * the agent sends at most PROC_STREAM_WINDOW_BYTES past the last acknowledgement, so a slow client slows the process
 * (its pipe fills) and nothing here grows with it.
 */
import { randomBytes } from 'node:crypto';
import { ApiError } from '../../shared/errors.js';
import { PROC_STDIN_WINDOW_BYTES, type ProcErrorCode, type ProcInfo } from '../../shared/wire.js';
import type { SandboxChannel, SandboxReport, SandboxRequestMessage } from './sandbox-channel.js';
import type { LiveSandbox } from './sandbox-service.js';

/** PROC_REQUEST_TIMEOUT_MS bounds the wait for an agent's answer to a start or a list. */
export const PROC_REQUEST_TIMEOUT_MS = 15_000;
/** STDIN_PIECE_BYTES is the most stdin one proc.stdin carries. */
export const STDIN_PIECE_BYTES = 64 * 1024;
/** STDIN_WAIT_MS bounds how long stdin waits for the process to take earlier input before the request fails. */
export const STDIN_WAIT_MS = 30_000;
/** EXITS_KEPT bounds the exits remembered per sandbox (for keep-alive accounting; the agent has the full list). */
const EXITS_KEPT = 256;

/** ProcessSpec is a process to start, validated by the route. */
export interface ProcessSpec {
  argv: string[];
  env: Record<string, string>;
  cwd: string;
  timeoutMs: number | null;
  pty: { cols: number; rows: number } | null;
  stdin: boolean;
  /** Whether a running process counts as activity for the sandbox's idle limit. */
  keepAlive: boolean;
}

/** ProcessExit is how a process ended and where its output ends. */
export interface ProcessExit {
  exitCode: number | null;
  signal: number | null;
  timedOut: boolean;
  outputSeq: number;
}

/** OutputSink is one client's end of a stream: the SSE response or the WebSocket. */
export interface OutputSink {
  /** output delivers a chunk; false when the client's buffer is over its mark (then onDrain is awaited before the ack). */
  output(seq: number, stream: 'stdout' | 'stderr' | 'pty', data: Buffer): boolean;
  /** onDrain calls back once when the client's buffer has emptied. */
  onDrain(cb: () => void): void;
  /** exit reports the process's end, after every byte of its output. */
  exit(e: ProcessExit): void;
  /** fail ends the stream with an error (the sandbox ended, the agent was lost, the process is unknown). */
  fail(e: ApiError): void;
}

interface Pending<T> {
  agentId: string;
  resolve(v: T): void;
  reject(e: ApiError): void;
  timer: NodeJS.Timeout;
}

/** Stream is one attachment of a client to a process's output. */
interface Stream {
  streamId: string;
  jobId: string;
  procId: string;
  agentId: string;
  sink: OutputSink;
  /** The offset the client has been handed output up to (exclusive). */
  consumed: number;
  /** The offset last acknowledged to the agent. */
  acked: number;
  exit: ProcessExit | null;
  waitingDrain: boolean;
  done: boolean;
}

/** StdinState tracks one process's input in flight, for its window. */
interface StdinState {
  sent: number;
  taken: number;
  closed: boolean;
  waiters: Array<() => void>;
}

/** ProcessRelay relays process requests and output between clients and agents. */
export class ProcessRelay {
  private readonly starts = new Map<string, Pending<number>>();
  private readonly lists = new Map<string, Pending<ProcInfo[]>>();
  private readonly streams = new Map<string, Stream>();
  /** Per sandbox: its running processes started through this control plane, and whether each keeps it alive. */
  private readonly running = new Map<string, Map<string, boolean>>();
  /** Per sandbox: the processes seen exiting (bounded), so stdin and signals to them fail at once. */
  private readonly exited = new Map<string, Map<string, ProcessExit>>();
  private readonly stdin = new Map<string, StdinState>();
  /** The agent each sandbox this relay has sent requests for runs on: reports about a sandbox count only from it. */
  private readonly owners = new Map<string, string>();

  constructor(private readonly channel: () => SandboxChannel | null) {}

  /**
   * busy says whether a sandbox runs a process that keeps it from idling, asking its agent: every running process counts
   * but those started here with keepAlive false (so a process started before a control-plane restart counts too).
   */
  async busy(sb: LiveSandbox): Promise<boolean> {
    for (const keep of this.running.get(sb.job.id)?.values() ?? []) if (keep) return true;
    const mine = this.running.get(sb.job.id);
    const procs = await this.list(sb);
    return procs.some((p) => p.running && mine?.get(p.procId) !== false);
  }

  /**
   * start runs a process and resolves with its procId and pid once the agent has started it. With a sink, the output
   * streams to it from offset 0 (attached in the same message: nothing waits for a round trip).
   */
  async start(sb: LiveSandbox, spec: ProcessSpec, sink?: OutputSink): Promise<{ procId: string; pid: number; streamId: string | null }> {
    const procId = `proc_${randomBytes(8).toString('hex')}`;
    const jobId = sb.job.id;
    const stream = sink ? this.openStream(sb, procId, 0, sink) : null;
    const pid = new Promise<number>((resolve, reject) => {
      const timer = setTimeout(() => this.settle(this.starts, key(jobId, procId), new ApiError('unavailable', 'the agent did not answer the start in time; retry')), PROC_REQUEST_TIMEOUT_MS);
      this.starts.set(key(jobId, procId), { agentId: sb.agentId, resolve, reject, timer });
    });
    const { argv, env, cwd, timeoutMs, pty, stdin } = spec;
    this.running.set(jobId, (this.running.get(jobId) ?? new Map<string, boolean>()).set(procId, spec.keepAlive));
    try {
      this.sendTo(sb.agentId, { type: 'proc.start', jobId, procId, argv, env, cwd, timeoutMs, pty, stdin, streamId: stream?.streamId ?? null });
      if (stdin || pty) this.stdin.set(key(jobId, procId), { sent: 0, taken: 0, closed: false, waiters: [] });
      return { procId, pid: await pid, streamId: stream?.streamId ?? null };
    } catch (e) {
      this.running.get(jobId)?.delete(procId);
      if (stream) this.closeStream(stream, false);
      throw e;
    }
  }

  /** list asks the agent for the sandbox's processes (running and recently ended). */
  list(sb: LiveSandbox): Promise<ProcInfo[]> {
    const requestId = `list_${randomBytes(8).toString('hex')}`;
    const out = new Promise<ProcInfo[]>((resolve, reject) => {
      const timer = setTimeout(() => this.settle(this.lists, requestId, new ApiError('unavailable', 'the agent did not answer in time; retry')), PROC_REQUEST_TIMEOUT_MS);
      this.lists.set(requestId, { agentId: sb.agentId, resolve, reject, timer });
    });
    try {
      this.sendTo(sb.agentId, { type: 'proc.list', jobId: sb.job.id, requestId });
    } catch (e) {
      this.settle(this.lists, requestId, e as ApiError);
    }
    return out;
  }

  /** find returns one process of the sandbox by procId or pid, or 404. */
  async find(sb: LiveSandbox, ref: string): Promise<ProcInfo> {
    const procs = await this.list(sb);
    const p = procs.find((x) => x.procId === ref || (x.pid !== null && String(x.pid) === ref));
    if (!p) throw new ApiError('not_found', `no process ${ref} in sandbox ${sb.job.id}`);
    return p;
  }

  /** attach streams a process's output from `fromSeq` to a sink until the process's end (or the sink closes). */
  async attach(sb: LiveSandbox, ref: string, fromSeq: number, sink: OutputSink): Promise<{ procId: string; close: () => void }> {
    const info = await this.find(sb, ref);
    const stream = this.openStream(sb, info.procId, fromSeq, sink);
    if (!info.running) stream.exit = { exitCode: info.exitCode, signal: info.signal, timedOut: info.timedOut, outputSeq: info.nextSeq };
    this.sendTo(sb.agentId, { type: 'proc.attach', jobId: sb.job.id, procId: info.procId, streamId: stream.streamId, fromSeq });
    this.maybeFinish(stream);
    return { procId: info.procId, close: () => this.closeStream(stream, true) };
  }

  /** detach closes a stream (the client went away); the process runs on. */
  detach(streamId: string): void {
    const s = this.streams.get(streamId);
    if (s) this.closeStream(s, true);
  }

  /** signal sends a signal to a process's group; 409 process_ended once it has exited. */
  async signal(sb: LiveSandbox, ref: string, signal: number): Promise<void> {
    const info = await this.find(sb, ref);
    if (!info.running) throw new ApiError('process_ended', `process ${ref} has exited`);
    this.sendTo(sb.agentId, { type: 'proc.signal', jobId: sb.job.id, procId: info.procId, signal });
  }

  /** send delivers a signal without looking the process up first (the socket's path: an error comes back as proc.error). */
  send(sb: LiveSandbox, procId: string, signal: number): void {
    this.sendTo(sb.agentId, { type: 'proc.signal', jobId: sb.job.id, procId, signal });
  }

  /** resize changes a PTY's size. */
  resize(sb: LiveSandbox, procId: string, cols: number, rows: number): void {
    this.sendTo(sb.agentId, { type: 'proc.resize', jobId: sb.job.id, procId, cols, rows });
  }

  /**
   * writeStdin sends input (null: close stdin), in pieces, each once the process's stdin window has room: a process
   * that does not read its input makes the writer wait (and, past STDIN_WAIT_MS, fail), never this process buffer it.
   */
  async writeStdin(sb: LiveSandbox, procId: string, data: Buffer | null): Promise<void> {
    const jobId = sb.job.id;
    const st = this.stdin.get(key(jobId, procId)) ?? this.adoptStdin(jobId, procId);
    if (this.exited.get(jobId)?.has(procId)) throw new ApiError('process_ended', `process ${procId} has exited`);
    if (st.closed) throw new ApiError('process_ended', `the stdin of process ${procId} is closed`);
    if (data === null) {
      st.closed = true;
      this.sendTo(sb.agentId, { type: 'proc.stdin', jobId, procId, data: null });
      return;
    }
    for (let off = 0; off < data.length; off += STDIN_PIECE_BYTES) {
      const piece = data.subarray(off, off + STDIN_PIECE_BYTES);
      const deadline = Date.now() + STDIN_WAIT_MS;
      while (st.sent - st.taken + piece.length > PROC_STDIN_WINDOW_BYTES) {
        if (st.closed || this.exited.get(jobId)?.has(procId)) throw new ApiError('process_ended', `process ${procId} has exited or closed its input`);
        if (Date.now() > deadline) throw new ApiError('conflict', `process ${procId} has not read its input for ${STDIN_WAIT_MS / 1000} s`);
        await new Promise<void>((resolve) => {
          const t = setTimeout(resolve, 1000);
          st.waiters.push(() => (clearTimeout(t), resolve()));
        });
      }
      st.sent += piece.length;
      this.sendTo(sb.agentId, { type: 'proc.stdin', jobId, procId, data: piece.toString('base64') });
    }
  }

  /** onReport applies a process report of an agent; a report about a request or stream of another agent is ignored. */
  onReport(agentId: string, msg: Extract<SandboxReport, { type: `proc.${string}` }>): void {
    switch (msg.type) {
      case 'proc.started': {
        const p = this.starts.get(key(msg.jobId, msg.procId));
        if (p?.agentId === agentId) this.settle(this.starts, key(msg.jobId, msg.procId), msg.pid);
        return;
      }
      case 'proc.start.failed': {
        const p = this.starts.get(key(msg.jobId, msg.procId));
        if (p?.agentId !== agentId) return;
        this.running.get(msg.jobId)?.delete(msg.procId);
        this.settle(this.starts, key(msg.jobId, msg.procId), startError(msg.code, msg.message));
        return;
      }
      case 'proc.output': {
        const s = this.streams.get(msg.streamId);
        if (!s || s.agentId !== agentId || s.jobId !== msg.jobId) {
          // A stream this control plane no longer knows (closed, or from before a restart): the agent may stop it.
          if (!s) this.channel()?.send(agentId, { type: 'proc.detach', jobId: msg.jobId, streamId: msg.streamId });
          return;
        }
        this.deliver(s, msg.seq, msg.stream, Buffer.from(msg.data, 'base64'));
        return;
      }
      case 'proc.exited': {
        if (this.owners.get(msg.jobId) !== agentId) return; // not a sandbox this agent runs for us
        const e: ProcessExit = { exitCode: msg.exitCode, signal: msg.signal, timedOut: msg.timedOut, outputSeq: msg.outputSeq };
        const ownRunning = this.running.get(msg.jobId);
        ownRunning?.delete(msg.procId);
        const exits = this.exited.get(msg.jobId) ?? new Map<string, ProcessExit>();
        exits.set(msg.procId, e);
        if (exits.size > EXITS_KEPT) exits.delete(exits.keys().next().value!);
        this.exited.set(msg.jobId, exits);
        const st = this.stdin.get(key(msg.jobId, msg.procId));
        if (st) {
          st.closed = true;
          for (const w of st.waiters.splice(0)) w();
          this.stdin.delete(key(msg.jobId, msg.procId));
        }
        for (const s of this.streams.values()) {
          if (s.jobId === msg.jobId && s.procId === msg.procId && s.agentId === agentId) {
            s.exit = e;
            this.maybeFinish(s);
          }
        }
        return;
      }
      case 'proc.stdin.ack': {
        if (this.owners.get(msg.jobId) !== agentId) return;
        const st = this.stdin.get(key(msg.jobId, msg.procId));
        if (!st) return;
        st.taken = Math.max(st.taken, msg.seq);
        for (const w of st.waiters.splice(0)) w();
        return;
      }
      case 'proc.error': {
        if (msg.streamId) {
          const s = this.streams.get(msg.streamId);
          if (s && s.agentId === agentId) {
            s.sink.fail(procError(msg.code, msg.message));
            this.closeStream(s, false);
          }
        }
        if (msg.procId && msg.code === 'stdin_closed' && this.owners.get(msg.jobId) === agentId) {
          const st = this.stdin.get(key(msg.jobId, msg.procId));
          if (st) st.closed = true;
        }
        return;
      }
      case 'proc.listed': {
        const p = this.lists.get(msg.requestId);
        if (p?.agentId === agentId) this.settle(this.lists, msg.requestId, msg.procs);
        return;
      }
      default:
        return;
    }
  }

  /** sandboxEnded fails every stream and request of a sandbox that ended, and forgets it. */
  sandboxEnded(jobId: string, why: string): void {
    for (const s of [...this.streams.values()]) {
      if (s.jobId !== jobId) continue;
      s.sink.fail(new ApiError('sandbox_not_running', `the sandbox ended: ${why}`));
      this.closeStream(s, false);
    }
    for (const k of [...this.starts.keys()]) if (k.startsWith(`${jobId}/`)) this.settle(this.starts, k, new ApiError('sandbox_not_running', `the sandbox ended: ${why}`));
    this.running.delete(jobId);
    this.exited.delete(jobId);
    this.owners.delete(jobId);
    for (const k of [...this.stdin.keys()]) if (k.startsWith(`${jobId}/`)) this.stdin.delete(k);
    void this.lists; // list requests time out on their own (they carry no sandbox key)
  }

  /** agentLost fails the streams and requests on an agent that disconnected (they resume when the client reconnects). */
  agentLost(agentId: string): void {
    for (const s of [...this.streams.values()]) {
      if (s.agentId !== agentId) continue;
      s.sink.fail(new ApiError('unavailable', 'the connection to the sandbox\'s agent was lost; reattach from your last seq'));
      this.closeStream(s, false);
    }
  }

  private openStream(sb: LiveSandbox, procId: string, fromSeq: number, sink: OutputSink): Stream {
    const s: Stream = { streamId: `st_${randomBytes(8).toString('hex')}`, jobId: sb.job.id, procId, agentId: sb.agentId, sink, consumed: fromSeq, acked: fromSeq, exit: null, waitingDrain: false, done: false };
    this.streams.set(s.streamId, s);
    return s;
  }

  private deliver(s: Stream, seq: number, stream: 'stdout' | 'stderr' | 'pty', data: Buffer): void {
    if (s.done) return;
    const end = seq + data.length;
    if (end <= s.consumed) return; // already delivered (a resend)
    const fresh = seq < s.consumed ? data.subarray(s.consumed - seq) : data;
    const from = Math.max(seq, s.consumed);
    s.consumed = end;
    const room = s.sink.output(from, stream, fresh);
    if (room) this.ack(s);
    else if (!s.waitingDrain) {
      s.waitingDrain = true;
      s.sink.onDrain(() => {
        s.waitingDrain = false;
        this.ack(s);
      });
    }
    this.maybeFinish(s);
  }

  private ack(s: Stream): void {
    if (s.done || s.consumed <= s.acked) return;
    s.acked = s.consumed;
    this.channel()?.send(s.agentId, { type: 'proc.ack', jobId: s.jobId, streamId: s.streamId, seq: s.consumed });
  }

  private maybeFinish(s: Stream): void {
    if (s.done || !s.exit || s.consumed < s.exit.outputSeq) return;
    s.sink.exit(s.exit);
    this.closeStream(s, true);
  }

  private closeStream(s: Stream, tellAgent: boolean): void {
    if (s.done) return;
    s.done = true;
    this.streams.delete(s.streamId);
    if (tellAgent) this.channel()?.send(s.agentId, { type: 'proc.detach', jobId: s.jobId, streamId: s.streamId });
  }

  /** adoptStdin tracks the input of a process started before this control plane did (after a restart). */
  private adoptStdin(jobId: string, procId: string): StdinState {
    const st: StdinState = { sent: 0, taken: 0, closed: false, waiters: [] };
    this.stdin.set(key(jobId, procId), st);
    return st;
  }

  private sendTo(agentId: string, msg: SandboxRequestMessage): void {
    this.owners.set(msg.jobId, agentId);
    if (!this.channel()?.send(agentId, msg)) throw new ApiError('unavailable', "the sandbox's agent is not connected right now; retry shortly");
  }

  private settle<T>(map: Map<string, Pending<T>>, k: string, v: T | ApiError): void {
    const p = map.get(k);
    if (!p) return;
    map.delete(k);
    clearTimeout(p.timer);
    if (v instanceof ApiError) p.reject(v);
    else p.resolve(v);
  }
}

function key(jobId: string, procId: string): string {
  return `${jobId}/${procId}`;
}

/** startError maps an agent's start failure to the API's error. */
function startError(code: ProcErrorCode, message: string): ApiError {
  if (code === 'sandbox_not_running') return new ApiError('sandbox_not_running', message);
  if (code === 'too_many_processes') return new ApiError('quota_exceeded', message, { quota: 'processesPerSandbox' });
  return new ApiError('process_start_failed', message, { reason: code });
}

/** procError maps an agent's error about a process or stream to the API's error. */
function procError(code: ProcErrorCode, message: string): ApiError {
  switch (code) {
    case 'not_found':
      return new ApiError('not_found', message);
    case 'not_running':
    case 'stdin_closed':
      return new ApiError('process_ended', message);
    case 'sandbox_not_running':
      return new ApiError('sandbox_not_running', message);
    case 'too_many_streams':
      return new ApiError('quota_exceeded', message, { quota: 'streamsPerSandbox' });
    default:
      return new ApiError('conflict', message);
  }
}
