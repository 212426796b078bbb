/**
 * Sandbox is the SDK's handle on a sandbox: a cell that stays up to run processes and hold files. Its types come from
 * the OpenAPI document the server serves (src/sdk/generated/api.ts, `npm run gen:sdk`).
 */
import { request } from 'node:https';
import type { IncomingMessage } from 'node:http';
import { Readable } from 'node:stream';
import WebSocket from 'ws';
import { CleanroomClient, CleanroomError, readError, type ClientOptions } from './client.js';
import type { operations } from './generated/api.js';
import { readEvents } from './sse.js';

type Json<Op extends keyof operations, S extends number = 200> = operations[Op] extends { responses: Record<S, { content: { 'application/json': infer T } }> } ? T : never;
type Body<Op extends keyof operations> = operations[Op] extends { requestBody: { content: { 'application/json': infer T } } } ? T : never;

/** SandboxInfo is a sandbox as the API returns it. */
export type SandboxInfo = Json<'getSandbox'>;
/** SandboxCreateOptions are the fields of a new sandbox. */
export type SandboxCreateOptions = Body<'createSandbox'>;
/** ProcessInfo is one process of a sandbox. */
export type ProcessInfo = Json<'getProcess'>;
/** ProcessOptions start a process: cmd (argv) or shell (a command line), env, cwd, timeoutSeconds, stdin, pty, keepAlive. */
export type ProcessOptions = Body<'startProcess'>;
/** FileStat is a path's stat inside a sandbox. */
export type FileStat = Json<'statSandboxFile'>;

/** ProcessExit is how a process ended: exit code or signal, and the end offset of its output. */
export interface ProcessExit {
  exitCode: number | null;
  signal: number | null;
  timedOut: boolean;
  outputSeq: number;
}

/** OutputHandlers receive a process's output; `seq` is the byte offset (resume from seq + data.length). */
export interface OutputHandlers {
  onStdout?: (data: Buffer, seq: number) => void;
  onStderr?: (data: Buffer, seq: number) => void;
  /** A PTY's output (stdout and stderr are one stream on a terminal). */
  onPty?: (data: Buffer, seq: number) => void;
}

/** ExecResult is a finished process with its output. */
export interface ExecResult extends ProcessExit {
  procId: string;
  stdout: string;
  stderr: string;
}

/** Sandbox drives one sandbox. */
export class Sandbox {
  /** files reads, writes and manages the sandbox's files (all done inside the cell). */
  readonly files: SandboxFiles;
  /** pty runs terminal processes. */
  readonly pty: SandboxPty;

  private constructor(
    readonly client: CleanroomClient,
    readonly id: string,
    public info: SandboxInfo,
  ) {
    this.files = new SandboxFiles(this);
    this.pty = new SandboxPty(this);
  }

  /** create makes a sandbox and resolves once it is ready; one that could not start throws `sandbox_not_running`. */
  static async create(opts: SandboxCreateOptions = {}, client: CleanroomClient | ClientOptions = defaultOptions()): Promise<Sandbox> {
    const c = client instanceof CleanroomClient ? client : new CleanroomClient(client);
    const info = await c.call<SandboxInfo>('POST', '/v1/sandboxes', opts);
    if (info.state === 'ended') throw new CleanroomError('sandbox_not_running', 409, `sandbox ${info.id} ended before it was ready: ${info.endReason ?? ''} ${info.message ?? ''}`.trim());
    return new Sandbox(c, info.id, info);
  }

  /** connect returns a handle on an existing sandbox (404 not_found for another workspace's). */
  static async connect(id: string, client: CleanroomClient | ClientOptions = defaultOptions()): Promise<Sandbox> {
    const c = client instanceof CleanroomClient ? client : new CleanroomClient(client);
    return new Sandbox(c, id, await c.call<SandboxInfo>('GET', `/v1/sandboxes/${encodeURIComponent(id)}`));
  }

  /** list returns one page of sandboxes (newest first) by metadata and state; pass `next` back for the following page. */
  static list(opts: { metadata?: Record<string, string>; state?: 'live' | 'ended' | 'all'; limit?: number; next?: string } = {}, client: CleanroomClient | ClientOptions = defaultOptions()): Promise<Json<'listSandboxes'>> {
    const c = client instanceof CleanroomClient ? client : new CleanroomClient(client);
    const q = new URLSearchParams();
    if (opts.metadata && Object.keys(opts.metadata).length) q.set('metadata', new URLSearchParams(opts.metadata).toString());
    if (opts.state) q.set('state', opts.state);
    if (opts.limit) q.set('limit', String(opts.limit));
    if (opts.next) q.set('next', opts.next);
    return c.call('GET', `/v1/sandboxes${q.size ? `?${q}` : ''}`);
  }

  /** path is this sandbox's API path. */
  path(rest = ''): string {
    return `/v1/sandboxes/${encodeURIComponent(this.id)}${rest}`;
  }

  /** refresh reads the sandbox's record again. */
  async refresh(): Promise<SandboxInfo> {
    this.info = await this.client.call<SandboxInfo>('GET', this.path());
    return this.info;
  }

  /** setTimeout moves the deadline to `seconds` from now (longer or shorter). */
  async setTimeout(seconds: number): Promise<SandboxInfo> {
    this.info = await this.client.call<SandboxInfo>('POST', this.path('/timeout'), { timeoutSeconds: seconds });
    return this.info;
  }

  /** kill ends the sandbox; resolves with its final state (the wipe receipt follows on refresh()). */
  async kill(): Promise<SandboxInfo> {
    this.info = await this.client.call<SandboxInfo>('DELETE', this.path());
    return this.info;
  }

  /**
   * exec runs a process and streams its output until it exits. `cmd` is an argv, or a string run by /bin/sh -c. A
   * dropped connection is resumed from the last byte received (the process runs on meanwhile).
   */
  async exec(cmd: string[] | string, opts: Omit<ProcessOptions, 'cmd' | 'shell'> & OutputHandlers = {}): Promise<ExecResult> {
    const { onStdout, onStderr, onPty, ...rest } = opts;
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    const h: OutputHandlers = {
      onStdout: (d, s) => (out.push(d), onStdout?.(d, s)),
      onStderr: (d, s) => (err.push(d), onStderr?.(d, s)),
      onPty: (d, s) => (out.push(d), onPty?.(d, s)),
    };
    // One round trip: started and streamed in the same response (POST …/processes?wait=true); if that stream breaks
    // off after the start, the output is attached again from the last byte received.
    let procId: string | null = null;
    let seq = 0;
    let exit: ProcessExit;
    try {
      exit = await this.stream('POST', this.path('/processes?wait=true'), { ...(typeof cmd === 'string' ? { shell: cmd } : { cmd }), ...rest }, h, (next) => (seq = next), (id) => (procId = id));
    } catch (e) {
      const retryable = !(e instanceof CleanroomError) || e.code === 'stream_closed' || e.code === 'unavailable';
      if (procId === null || !retryable) throw e;
      exit = await this.attach(procId, h, seq);
    }
    return { procId: procId!, ...exit, stdout: Buffer.concat(out).toString('utf8'), stderr: Buffer.concat(err).toString('utf8') };
  }

  /** start runs a process in the background: resolves with its procId and pid at once. */
  start(cmd: string[] | string, opts: Omit<ProcessOptions, 'cmd' | 'shell'> = {}): Promise<Json<'startProcess', 201>> {
    return this.client.call('POST', this.path('/processes'), { ...(typeof cmd === 'string' ? { shell: cmd } : { cmd }), ...opts });
  }

  /** processes lists the sandbox's processes, running and recently ended. */
  async processes(): Promise<ProcessInfo[]> {
    return (await this.client.call<Json<'listProcesses'>>('GET', this.path('/processes'))).processes;
  }

  /**
   * attach streams a process's output from `fromSeq` (a byte offset) until it exits; a dropped connection is resumed
   * from the last byte received, up to `retries` times in a row.
   */
  async attach(procOrPid: string | number, h: OutputHandlers, fromSeq = 0, retries = 5): Promise<ProcessExit> {
    let seq = fromSeq;
    let failures = 0;
    for (;;) {
      const base = this.client.base;
      try {
        return await this.streamOnce(String(procOrPid), seq, h, (next) => {
          seq = next;
          failures = 0;
        });
      } catch (e) {
        const retryable = !(e instanceof CleanroomError) || e.code === 'stream_closed' || e.code === 'unavailable';
        if (!retryable || ++failures > retries) throw e;
        this.client.failedOver(base); // several replicas: resume on the next one
        await new Promise((r) => setTimeout(r, 200 * failures));
      }
    }
  }

  /** sendStdin writes to a process's stdin (and closes it with close: true). */
  async sendStdin(procOrPid: string | number, data: string | Buffer, close = false): Promise<void> {
    await this.client.call('POST', this.path(`/processes/${encodeURIComponent(String(procOrPid))}/stdin`), { data: Buffer.from(data).toString('base64'), ...(close ? { close } : {}) });
  }

  /** closeStdin closes a process's stdin (EOF). */
  async closeStdin(procOrPid: string | number): Promise<void> {
    await this.client.call('POST', this.path(`/processes/${encodeURIComponent(String(procOrPid))}/stdin`), { close: true });
  }

  /** signal sends a signal (number or name such as 'SIGTERM') to a process's group. */
  async signal(procOrPid: string | number, signal: number | string = 'SIGTERM'): Promise<void> {
    await this.client.call('POST', this.path(`/processes/${encodeURIComponent(String(procOrPid))}/signal`), { signal });
  }

  /** socket opens a process's WebSocket (output from fromSeq; stdin, resize and signals the other way). */
  socket(procOrPid: string | number, fromSeq = 0): WebSocket {
    const u = new URL(this.path(`/processes/${encodeURIComponent(String(procOrPid))}/ws?fromSeq=${fromSeq}`), this.client.base);
    u.protocol = 'wss:';
    return new WebSocket(u, { headers: this.client.headers(), ...(this.client.opts.ca ? { ca: this.client.opts.ca } : {}), minVersion: 'TLSv1.2', maxPayload: 4 * 1024 * 1024 });
  }

  // One SSE stream of a process's output from `fromSeq`; resolves at its exit, rejects if it breaks off before.
  private streamOnce(proc: string, fromSeq: number, h: OutputHandlers, advanced: (next: number) => void): Promise<ProcessExit> {
    return this.stream('GET', this.path(`/processes/${encodeURIComponent(proc)}/output?fromSeq=${fromSeq}`), undefined, h, advanced);
  }

  // One SSE request (an output stream, or a start that streams): output to the handlers, resolves at the exit.
  private stream(method: string, path: string, body: unknown, h: OutputHandlers, advanced: (next: number) => void, started?: (procId: string) => void): Promise<ProcessExit> {
    return new Promise((resolve, reject) => {
      const payload = body === undefined ? undefined : JSON.stringify(body);
      const headers = { ...this.client.headers(), accept: 'text/event-stream', ...(payload ? { 'content-type': 'application/json' } : {}) };
      const req = request(new URL(path, this.client.base), { method, agent: this.client.agent, headers }, (res) => {
        if ((res.statusCode ?? 500) >= 400) return void readError(res).then(reject, reject);
        let exit: ProcessExit | null = null;
        readEvents(res, (event, data) => {
          if (event === 'output') {
            const f = JSON.parse(data) as { seq: number; stream: 'stdout' | 'stderr' | 'pty'; data: string };
            const bytes = Buffer.from(f.data, 'base64');
            (f.stream === 'stdout' ? h.onStdout : f.stream === 'stderr' ? h.onStderr : h.onPty)?.(bytes, f.seq);
            advanced(f.seq + bytes.length);
          } else if (event === 'started') started?.((JSON.parse(data) as { procId: string }).procId);
          else if (event === 'exit') exit = JSON.parse(data) as ProcessExit;
          else if (event === 'error') {
            const e = JSON.parse(data) as { code: string; message: string };
            reject(new CleanroomError(e.code, 0, e.message));
          }
        });
        res.on('end', () => (exit ? resolve(exit) : reject(new CleanroomError('stream_closed', 0, 'the output stream closed before the process exited'))));
        res.on('error', reject);
      });
      req.on('error', reject);
      req.end(payload);
    });
  }
}

/** SandboxFiles are a sandbox's file operations; each runs inside the cell as the workload user. */
export class SandboxFiles {
  constructor(private readonly sb: Sandbox) {}

  /** read returns a file's bytes (use readStream for large files). */
  async read(path: string): Promise<Buffer> {
    const chunks: Buffer[] = [];
    for await (const c of await this.readStream(path)) chunks.push(c as Buffer);
    return Buffer.concat(chunks);
  }

  /** readStream opens a file's bytes as a stream. */
  readStream(path: string): Promise<IncomingMessage> {
    const c = this.sb.client;
    return new Promise((resolve, reject) => {
      const req = request(new URL(this.sb.path(`/files?path=${encodeURIComponent(path)}`), c.base), { method: 'GET', agent: c.agent, headers: c.headers() }, (res) => {
        if ((res.statusCode ?? 500) >= 400) return void readError(res).then(reject, reject);
        resolve(res);
      });
      req.on('error', reject);
      req.end();
    });
  }

  /** write creates or replaces a file with `body` (a buffer, a string or a stream of any size the volume allows). */
  write(path: string, body: Buffer | string | Readable): Promise<{ path: string; bytes: number }> {
    const c = this.sb.client;
    return new Promise((resolve, reject) => {
      const headers: Record<string, string> = { ...c.headers(), 'content-type': 'application/octet-stream' };
      if (!(body instanceof Readable)) headers['content-length'] = String(Buffer.byteLength(body));
      const req = request(new URL(this.sb.path(`/files?path=${encodeURIComponent(path)}`), c.base), { method: 'PUT', agent: c.agent, headers }, (res) => {
        if ((res.statusCode ?? 500) >= 400) return void readError(res).then(reject, reject);
        let text = '';
        res.setEncoding('utf8');
        res.on('data', (d: string) => (text += d));
        res.on('end', () => resolve(JSON.parse(text) as { path: string; bytes: number }));
      });
      req.on('error', reject);
      if (body instanceof Readable) {
        body.on('error', (e) => req.destroy(e));
        body.pipe(req);
      } else req.end(body);
    });
  }

  /** list returns a directory's entries with their stat. */
  async list(path: string): Promise<FileStat[]> {
    return (await this.sb.client.call<Json<'listSandboxFiles'>>('GET', this.sb.path(`/files/list?path=${encodeURIComponent(path)}`))).entries;
  }

  /** stat returns a path's stat (not_found if it does not exist). */
  stat(path: string): Promise<FileStat> {
    return this.sb.client.call('GET', this.sb.path(`/files/stat?path=${encodeURIComponent(path)}`));
  }

  /** exists says whether a path exists. */
  async exists(path: string): Promise<boolean> {
    try {
      await this.stat(path);
      return true;
    } catch (e) {
      if (e instanceof CleanroomError && e.code === 'not_found') return false;
      throw e;
    }
  }

  /** mkdir makes a directory with its parents (an existing one is fine). */
  async mkdir(path: string): Promise<void> {
    await this.sb.client.call('POST', this.sb.path('/files/mkdir'), { path });
  }

  /** remove deletes a file or an empty directory (recursive: anything). */
  async remove(path: string, recursive = false): Promise<void> {
    await this.sb.client.call('DELETE', this.sb.path(`/files?path=${encodeURIComponent(path)}${recursive ? '&recursive=true' : ''}`));
  }

  /** rename moves a file or directory. */
  async rename(from: string, to: string): Promise<void> {
    await this.sb.client.call('POST', this.sb.path('/files/rename'), { from, to });
  }
}

/** PtyHandle is a terminal process: its output arrives on onData; input, resize and kill go over its WebSocket. */
export interface PtyHandle {
  procId: string;
  pid: number;
  input(data: string | Buffer): void;
  resize(cols: number, rows: number): void;
  kill(signal?: number): void;
  /** exited resolves with the process's end. */
  exited: Promise<ProcessExit>;
  close(): void;
}

/** SandboxPty runs terminal processes. */
export class SandboxPty {
  constructor(private readonly sb: Sandbox) {}

  /** create starts `cmd` (default a login shell) on a terminal of cols × rows and connects to it. */
  async create(opts: { cols: number; rows: number; cmd?: string[]; env?: Record<string, string>; cwd?: string; onData: (data: Buffer) => void }): Promise<PtyHandle> {
    const started = await this.sb.start(opts.cmd ?? ['/bin/sh', '-l'], { pty: { cols: opts.cols, rows: opts.rows }, stdin: true, ...(opts.env ? { env: opts.env } : {}), ...(opts.cwd ? { cwd: opts.cwd } : {}) });
    const ws = this.sb.socket(started.procId);
    const frame = (v: unknown) => ws.readyState === ws.OPEN && ws.send(JSON.stringify(v));
    const exited = new Promise<ProcessExit>((resolve, reject) => {
      let exit: ProcessExit | null = null;
      ws.on('message', (raw) => {
        const f = JSON.parse(raw.toString()) as { type: string; data?: string; code?: string; message?: string } & ProcessExit;
        if (f.type === 'output' && f.data) opts.onData(Buffer.from(f.data, 'base64'));
        else if (f.type === 'exit') exit = { exitCode: f.exitCode, signal: f.signal, timedOut: f.timedOut, outputSeq: f.outputSeq };
        else if (f.type === 'error') reject(new CleanroomError(f.code ?? 'error', 0, f.message ?? ''));
      });
      ws.on('close', () => (exit ? resolve(exit) : reject(new CleanroomError('stream_closed', 0, 'the terminal connection closed before the process exited'))));
      ws.on('error', reject);
    });
    await new Promise<void>((resolve, reject) => {
      ws.once('open', () => resolve());
      ws.once('error', reject);
      ws.once('unexpected-response', (_req, res) => void readError(res).then(reject, reject));
    });
    return {
      procId: started.procId,
      pid: started.pid,
      input: (d) => frame({ type: 'stdin', data: Buffer.from(d).toString('base64') }),
      resize: (cols, rows) => frame({ type: 'resize', cols, rows }),
      kill: (signal = 9) => frame({ type: 'signal', signal }),
      exited,
      close: () => ws.close(),
    };
  }
}

function defaultOptions(): ClientOptions {
  const url = process.env.CLEANROOM_URL;
  if (!url) throw new CleanroomError('invalid_request', 0, 'pass a CleanroomClient or {url, apiKey, ca}, or set CLEANROOM_URL and CLEANROOM_API_KEY');
  return { url, ...(process.env.CLEANROOM_API_KEY ? { apiKey: process.env.CLEANROOM_API_KEY } : {}) };
}

