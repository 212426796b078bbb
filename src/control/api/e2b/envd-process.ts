/**
 * envd's `process.Process` service over ProcessRelay: Start and Connect stream a process's events (`start` first, then
 * `data`, `keepalive`, one `end`), the unary calls list processes, write stdin, close it, signal and resize. A process is
 * named by its pid inside the sandbox. A client that goes away only detaches its stream: the process runs on.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { ApiError } from '../../../shared/errors.js';
import type { LiveSandbox } from '../../sandboxes/sandbox-service.js';
import type { Quotas } from '../../quotas/quotas.js';
import type { EnvdTarget } from './envd-gateway.js';
import type { OutputSink, ProcessExit, ProcessRelay } from '../../sandboxes/process-relay.js';
import { ConnectError, connectError } from './e2b-errors.js';
import { ConnectStream, keepaliveSeconds } from './connect-protocol.js';
import { homePath } from './envd-paths.js';
import { ProcessRequestSchema, specOf } from '../routes/sandbox-processes.js';

/** SIGNALS maps envd's Signal enum to signal numbers. */
const SIGNALS: Record<string, number> = { SIGNAL_SIGKILL: 9, SIGNAL_SIGTERM: 15, SIGNAL_SIGINT: 2, SIGNAL_SIGHUP: 1, SIGNAL_SIGQUIT: 3, SIGNAL_SIGUSR1: 10, SIGNAL_SIGUSR2: 12 };

type Json = Record<string, unknown>;

/** BASH is the shell the SDK asks for (`/bin/bash -l -c CMD`, `/bin/bash -i -l` for a PTY); SH stands in where an image has none. */
const BASH = '/bin/bash';
const SH = '/bin/sh';

function isCommandNotFound(e: unknown): boolean {
  return e instanceof ApiError && e.code === 'process_start_failed' && (e.details as { reason?: unknown } | undefined)?.reason === 'command_not_found';
}

/** ProcessService answers the process.Process methods for one resolved sandbox. */
export class EnvdProcessService {
  constructor(
    private readonly processes: ProcessRelay,
    private readonly quotas: Quotas,
  ) {}

  /** start runs a process and streams its events. */
  async start(sb: EnvdTarget, body: Json, req: IncomingMessage, res: ServerResponse): Promise<void> {
    const spec = processSpec(body);
    const release = this.quotas.openStream(sb.workspace);
    const stream = new ConnectStream(res, { event: { keepalive: {} } }, keepaliveSeconds(req));
    const sink = new EventSink(stream);
    // The client going away (or the stream's end) detaches; the process runs on.
    let streamId: string | null = null;
    res.once('close', () => {
      release();
      if (!sink.finished && streamId) this.processes.detach(streamId);
      sink.finished = true;
    });
    try {
      const r = await this.processes.start(sb, spec, sink).catch((e: unknown) => {
        // The SDK runs everything through /bin/bash; an image without bash (busybox) gets /bin/sh with the same flags.
        if (spec.argv[0] !== BASH || !isCommandNotFound(e)) throw e;
        return this.processes.start(sb, { ...spec, argv: [SH, ...spec.argv.slice(1)] }, sink);
      });
      streamId = r.streamId;
      sink.started(r.pid);
      if (sink.finished && streamId) this.processes.detach(streamId); // the client left while the process started
    } catch (e) {
      sink.fail(e instanceof ApiError ? e : new ApiError('internal', 'internal error'));
    }
  }

  /** connect streams the events of a running process (its retained output first). */
  async connect(sb: EnvdTarget, body: Json, req: IncomingMessage, res: ServerResponse): Promise<void> {
    const pid = pidOf(body);
    const info = await this.find(sb, pid);
    const release = this.quotas.openStream(sb.workspace);
    const stream = new ConnectStream(res, { event: { keepalive: {} } }, keepaliveSeconds(req));
    const sink = new EventSink(stream);
    let close: (() => void) | null = null;
    res.once('close', () => {
      release();
      if (!sink.finished) close?.();
      sink.finished = true;
    });
    sink.started(pid);
    try {
      const a = await this.processes.attach(sb, info.procId, info.firstSeq, sink);
      close = a.close;
      if (sink.finished) a.close();
    } catch (e) {
      sink.fail(e instanceof ApiError ? e : new ApiError('internal', 'internal error'));
    }
  }

  /** list answers the running processes. */
  async list(sb: LiveSandbox): Promise<Json> {
    const procs = await this.processes.list(sb);
    return { processes: procs.filter((p) => p.running && p.pid !== null).map((p) => ({ pid: p.pid, config: { cmd: p.argv[0] ?? '', args: p.argv.slice(1), envs: {} } })) };
  }

  /** sendInput writes stdin (or PTY input). */
  async sendInput(sb: LiveSandbox, body: Json): Promise<Json> {
    const info = await this.find(sb, pidOf(body));
    const input = obj(body.input);
    const data = typeof input.stdin === 'string' ? input.stdin : typeof input.pty === 'string' ? input.pty : '';
    await this.processes.writeStdin(sb, info.procId, Buffer.from(data, 'base64'));
    return {};
  }

  /** closeStdin closes a process's stdin (EOF). */
  async closeStdin(sb: LiveSandbox, body: Json): Promise<Json> {
    const info = await this.find(sb, pidOf(body));
    await this.processes.writeStdin(sb, info.procId, null);
    return {};
  }

  /** sendSignal signals a process; an exited one is not_found (the SDK's kill answers false). */
  async sendSignal(sb: LiveSandbox, body: Json): Promise<Json> {
    const signal = SIGNALS[String(body.signal)];
    if (signal === undefined) throw new ConnectError('invalid_argument', `signal: one of ${Object.keys(SIGNALS).join(', ')}`);
    const info = await this.find(sb, pidOf(body));
    await this.processes.signal(sb, info.procId, signal);
    return {};
  }

  /** update resizes a PTY. */
  async update(sb: LiveSandbox, body: Json): Promise<Json> {
    const info = await this.find(sb, pidOf(body));
    const size = obj(obj(body.pty).size);
    this.processes.resize(sb, info.procId, int(size.cols, 80), int(size.rows, 24));
    return {};
  }

  /** find returns a running process by pid, or not_found. */
  private async find(sb: LiveSandbox, pid: number) {
    const info = await this.processes.find(sb, String(pid)).catch((e: unknown) => {
      throw connectError(e);
    });
    if (!info.running) throw new ConnectError('not_found', `process ${pid} has exited`);
    return info;
  }
}

/**
 * EventSink turns ProcessRelay output into envd events. Output that arrives before the pid is known is held back (the
 * sink reports "full", so it is not acknowledged and the agent's stream window bounds it) and goes out right after `start`.
 */
class EventSink implements OutputSink {
  finished = false;
  private isStarted = false;
  private readonly pending: Array<() => void> = [];
  private readonly drains: Array<() => void> = [];

  constructor(private readonly stream: ConnectStream) {}

  started(pid: number): void {
    if (this.isStarted) return;
    this.isStarted = true;
    this.stream.send({ event: { start: { pid } } });
    for (const p of this.pending.splice(0)) p();
    for (const d of this.drains.splice(0)) this.stream.onDrain(d);
  }

  output(_seq: number, stream: 'stdout' | 'stderr' | 'pty', data: Buffer): boolean {
    const send = () => this.stream.send({ event: { data: { [stream]: data.toString('base64') } } });
    if (this.isStarted) return send();
    // Held until `start` is out, and not acknowledged: the agent's stream window bounds what can pile up here.
    this.pending.push(send);
    return false;
  }

  onDrain(cb: () => void): void {
    if (this.isStarted) this.stream.onDrain(cb);
    else this.drains.push(cb);
  }

  exit(e: ProcessExit): void {
    const run = () => {
      this.finished = true;
      this.stream.send({ event: { end: endEvent(e) } });
      this.stream.end();
    };
    if (this.isStarted) run();
    else this.pending.push(run);
  }

  fail(e: ApiError): void {
    this.finished = true;
    this.stream.end(connectError(e));
  }
}

/**
 * processSpec translates a Start request into Cleanroom's process request and validates it with the same schema as
 * `POST /v1/sandboxes/:id/processes` (env names, NUL bytes, sizes), so that both doors accept the same processes.
 */
function processSpec(body: Json) {
  const p = obj(body.process);
  const cmd = str(p.cmd, 'process.cmd');
  const args = Array.isArray(p.args) ? p.args.map((a, i) => (typeof a === 'string' ? a : str(a, `process.args[${i}]`))) : [];
  const size = body.pty ? obj(obj(body.pty).size) : null;
  const parsed = ProcessRequestSchema.safeParse({
    cmd: [cmd, ...args],
    env: p.envs && typeof p.envs === 'object' ? p.envs : {},
    cwd: homePath(typeof p.cwd === 'string' ? p.cwd : ''),
    // envd before 0.3.0 always opened stdin; the SDK now says so explicitly.
    stdin: body.stdin !== false,
    ...(size ? { pty: { cols: int(size.cols, 80), rows: int(size.rows, 24) } } : {}),
  });
  if (!parsed.success) {
    const i = parsed.error.issues[0]!;
    throw new ConnectError('invalid_argument', `process.${i.path.map(String).join('.').replace(/^cmd/, 'cmd/args').replace(/^env/, 'envs')}: ${i.message}`);
  }
  try {
    return specOf(parsed.data);
  } catch (e) {
    throw connectError(e);
  }
}

/** endEvent is envd's end event: a signalled process has exitCode -1 and status "signal: <name>". */
function endEvent(e: ProcessExit): Json {
  if (e.exitCode !== null && e.signal === null) {
    const status = `exit status ${e.exitCode}`;
    return { exitCode: e.exitCode, exited: true, status, ...(e.exitCode !== 0 ? { error: status } : {}) };
  }
  const name = e.timedOut ? 'killed (timeout)' : signalName(e.signal ?? 9);
  return { exitCode: -1, exited: false, status: `signal: ${name}`, error: `signal: ${name}` };
}

function signalName(n: number): string {
  return ({ 1: 'hangup', 2: 'interrupt', 3: 'quit', 9: 'killed', 15: 'terminated' } as Record<number, string>)[n] ?? `signal ${n}`;
}

function obj(v: unknown): Json {
  return v && typeof v === 'object' && !Array.isArray(v) ? (v as Json) : {};
}

function str(v: unknown, what: string): string {
  if (typeof v !== 'string' || v === '') throw new ConnectError('invalid_argument', `${what}: a non-empty string`);
  return v;
}

function int(v: unknown, dflt: number): number {
  const n = Number(v);
  return Number.isInteger(n) && n >= 1 && n <= 1000 ? n : dflt;
}

function pidOf(body: Json): number {
  const sel = obj(body.process);
  const pid = Number(sel.pid);
  if (!Number.isInteger(pid) || pid <= 0) throw new ConnectError(sel.tag !== undefined ? 'unimplemented' : 'invalid_argument', sel.tag !== undefined ? 'selecting a process by tag is not supported by Cleanroom; use its pid' : 'process.pid: a process id');
  return pid;
}
