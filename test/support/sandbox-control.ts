/**
 * SandboxControl stands in for the control plane at the far edge of a real cluster: it stops the cluster's control
 * plane, listens on its agent port with the cluster's own server certificate (mutual TLS, the agent's real
 * certificate), welcomes the real agent and then speaks Contract C to it. The agent, its cells, runc/runsc and cell
 * init are all real; only the other end of the channel is the test.
 */
import { createServer, type Server } from 'node:https';
import { randomBytes, randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { WebSocketServer, type WebSocket } from 'ws';
import { parseAgentMessage, PROTOCOL_VERSION, unpackJobReport, type AgentToControl, type ControlToAgent, type Runtime } from '../../src/shared/wire.js';
import type { TestCluster } from './cluster.js';

const MiB = 1024 * 1024;

/** ExecResult is what one process produced, in order, and how it ended. */
export interface ExecResult {
  procId: string;
  stdout: string;
  stderr: string;
  pty: string;
  exitCode: number | null;
  signal: number | null;
  timedOut: boolean;
  /** Every chunk's seq, in order of arrival. */
  seqs: number[];
  outputSeq: number;
}

type Msg = AgentToControl;

/** SandboxControl is a test's control plane for one real agent. */
export class SandboxControl {
  readonly received: Msg[] = [];
  private ws: WebSocket | null = null;
  private listeners = new Set<() => void>();

  private constructor(
    private readonly server: Server,
    private readonly wss: WebSocketServer,
  ) {}

  /** takeOver stops the cluster's control plane and takes its agent port; resolves once the agent is welcomed. */
  static async takeOver(cluster: TestCluster): Promise<SandboxControl> {
    const config = JSON.parse(readFileSync(join(cluster.dataDir, 'config.json'), 'utf8')) as { control: { agentPort: number } };
    const controlPid = Number(readFileSync(join(cluster.dataDir, 'run', 'control.pid'), 'utf8'));
    process.kill(controlPid, 'SIGTERM');
    for (let i = 0; i < 200 && alive(controlPid); i++) await sleep(50);
    if (alive(controlPid)) process.kill(controlPid, 'SIGKILL');
    const pki = (f: string) => readFileSync(join(cluster.dataDir, 'pki', f), 'utf8');
    const server = createServer({ ca: pki('ca.pem'), cert: pki('server.pem'), key: pki('server-key.pem'), requestCert: true, rejectUnauthorized: true });
    const wss = new WebSocketServer({ server, path: '/v1/agent', maxPayload: 4 * MiB });
    const sc = new SandboxControl(server, wss);
    wss.on('connection', (ws) => sc.onConnection(ws));
    for (let i = 0; ; i++) {
      try {
        await new Promise<void>((resolve, reject) => {
          server.once('error', reject);
          server.listen(config.control.agentPort, '127.0.0.1', () => resolve());
        });
        break;
      } catch (e) {
        if (i > 50) throw e;
        await sleep(100);
      }
    }
    await sc.waitFor((m) => m.type === 'hello', 30_000);
    return sc;
  }

  private onConnection(ws: WebSocket): void {
    this.ws?.terminate();
    this.ws = ws;
    ws.on('message', (raw) => {
      const r = parseAgentMessage(raw.toString());
      if (!r.ok) throw new Error(`the agent sent a bad message: ${r.problem}`);
      if (r.msg.type === 'hello') ws.send(JSON.stringify({ type: 'welcome', protocol: PROTOCOL_VERSION }));
      // A job.report (protocol 5) is taken as the single reports it stands for.
      this.received.push(...(r.msg.type === 'job.report' ? unpackJobReport(r.msg) : [r.msg]));
      for (const l of [...this.listeners]) l();
    });
  }

  /** reconnect drops the agent's connection (as a control-plane restart would) and resolves once it is welcomed again. */
  async reconnect(): Promise<void> {
    const from = this.received.length;
    this.ws?.terminate();
    this.ws = null;
    await this.waitFor((m) => m.type === 'hello', 30_000, from);
  }

  /** send sends one message to the agent. */
  send(m: ControlToAgent): void {
    if (!this.ws) throw new Error('no agent connected');
    this.ws.send(JSON.stringify(m));
  }

  /** waitFor resolves with the first received message (from `from` on) that matches. */
  waitFor<T extends Msg = Msg>(match: (m: Msg) => boolean, timeoutMs = 20_000, from = 0): Promise<T> {
    return new Promise((resolve, reject) => {
      const check = () => {
        for (let i = from; i < this.received.length; i++) {
          const m = this.received[i]!;
          if (match(m)) {
            cleanup();
            resolve(m as T);
            return;
          }
        }
      };
      const timer = setTimeout(() => {
        cleanup();
        reject(new Error(`no matching message within ${timeoutMs} ms; last: ${JSON.stringify(this.received.slice(-3)).slice(0, 600)}`));
      }, timeoutMs);
      const cleanup = () => {
        clearTimeout(timer);
        this.listeners.delete(check);
      };
      this.listeners.add(check);
      check();
    });
  }

  /** onMessage calls `f` for every message from now on; returns a function that stops it. */
  onMessage(f: (m: Msg) => void): () => void {
    let seen = this.received.length;
    const l = () => {
      while (seen < this.received.length) f(this.received[seen++]!);
    };
    this.listeners.add(l);
    return () => this.listeners.delete(l);
  }

  /** createSandbox assigns a sandbox and resolves once the agent reports it started (its supervisor is ready). */
  async createSandbox(runtime: Runtime, opts: { timeoutSeconds?: number; diskBytes?: number; env?: Record<string, string> } = {}): Promise<{ jobId: string; cellId: string; timings: Record<string, number> }> {
    const jobId = `job_${randomBytes(10).toString('hex')}`;
    const from = this.received.length;
    this.send({
      type: 'assign',
      job: {
        jobId,
        workspaceId: 'ws_sandboxtest',
        command: [],
        env: opts.env ?? {},
        cwd: '/work',
        cpu: 1,
        memoryBytes: 512 * MiB,
        timeoutSeconds: opts.timeoutSeconds ?? 300,
        diskBytes: opts.diskBytes ?? 256 * MiB,
        runtime,
        egress: { allow: [], dryRun: false },
        outputLimitBytes: 64 * MiB,
        mode: 'sandbox',
        image: null,
      },
      credentials: { token: 'eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl', expiresAt: new Date(Date.now() + 3600_000).toISOString() },
    });
    const m = await this.waitFor((x) => (x.type === 'job.started' || x.type === 'job.ended') && x.jobId === jobId, 60_000, from);
    if (m.type !== 'job.started') throw new Error(`the sandbox did not start: ${JSON.stringify(m)}`);
    return { jobId, cellId: m.cellId, timings: m.timings };
  }

  /**
   * exec runs a process to its end, acking its output as it arrives (ackEvery: after how many bytes; 0 never acks),
   * and resolves with its output once everything up to its outputSeq has arrived.
   */
  async exec(jobId: string, argv: string[], opts: { stdin?: string | null; timeoutMs?: number | null; pty?: { cols: number; rows: number } | null; cwd?: string; env?: Record<string, string>; waitMs?: number } = {}): Promise<ExecResult> {
    const procId = `p_${randomUUID()}`;
    const streamId = `s_${randomUUID()}`;
    const r: ExecResult = { procId, stdout: '', stderr: '', pty: '', exitCode: null, signal: null, timedOut: false, seqs: [], outputSeq: -1 };
    let got = 0;
    const done = new Promise<ExecResult>((resolve, reject) => {
      const stop = this.onMessage((m) => {
        if (!('jobId' in m) || m.jobId !== jobId || !('procId' in m) || m.procId !== procId) return;
        if (m.type === 'proc.start.failed') {
          stop();
          reject(Object.assign(new Error(`start failed: ${m.code}: ${m.message}`), { code: m.code }));
        } else if (m.type === 'proc.output' && m.streamId === streamId) {
          const data = Buffer.from(m.data, 'base64');
          r[m.stream] += data.toString();
          r.seqs.push(m.seq);
          got = m.seq + data.length;
          this.send({ type: 'proc.ack', jobId, streamId, seq: got });
        } else if (m.type === 'proc.exited') {
          Object.assign(r, { exitCode: m.exitCode, signal: m.signal, timedOut: m.timedOut, outputSeq: m.outputSeq });
        }
        if (r.outputSeq >= 0 && got >= r.outputSeq) {
          stop();
          resolve(r);
        }
      });
      setTimeout(() => (stop(), reject(new Error(`process ${argv.join(' ')} did not end within ${opts.waitMs ?? 30_000} ms: ${JSON.stringify(r).slice(0, 400)}`))), opts.waitMs ?? 30_000).unref();
    });
    this.send({ type: 'proc.start', jobId, procId, argv, env: opts.env ?? {}, cwd: opts.cwd ?? '/work', timeoutMs: opts.timeoutMs ?? null, pty: opts.pty ?? null, stdin: opts.stdin !== undefined && opts.stdin !== null, streamId });
    if (opts.stdin) this.send({ type: 'proc.stdin', jobId, procId, data: Buffer.from(opts.stdin).toString('base64') });
    if (opts.stdin !== undefined && opts.stdin !== null) this.send({ type: 'proc.stdin', jobId, procId, data: null });
    return done;
  }

  /** file runs one file operation without data; resolves with its file.result. */
  async file(jobId: string, op: 'stat' | 'list' | 'mkdir' | 'remove' | 'rename', path: string, extra: { to?: string; recursive?: boolean } = {}): Promise<Extract<Msg, { type: 'file.result' }>> {
    const opId = `op_${randomUUID()}`;
    const from = this.received.length;
    this.send({ type: 'file.op', jobId, opId, op, path, ...extra });
    return this.waitFor((m) => m.type === 'file.result' && m.opId === opId, 20_000, from);
  }

  /** writeFile streams `size` bytes made by `chunkAt(offset, n)` into a file, within the file window. */
  async writeFile(jobId: string, path: string, size: number, chunkAt: (offset: number, n: number) => Buffer, chunkBytes = 64 * 1024): Promise<Extract<Msg, { type: 'file.result' }>> {
    const opId = `op_${randomUUID()}`;
    const from = this.received.length;
    let acked = 0;
    let result: Extract<Msg, { type: 'file.result' }> | null = null;
    let wake = () => {};
    const stop = this.onMessage((m) => {
      if (m.type === 'file.ack' && m.opId === opId) acked = m.seq;
      if (m.type === 'file.result' && m.opId === opId) result = m;
      wake();
    });
    this.send({ type: 'file.op', jobId, opId, op: 'write', path });
    const window = 256 * 1024;
    for (let off = 0; off < size && !result; ) {
      if (off - acked >= window) {
        await new Promise<void>((r) => ((wake = r), setTimeout(r, 1000)));
        continue;
      }
      const n = Math.min(chunkBytes, size - off, window - (off - acked));
      this.send({ type: 'file.data', jobId, opId, seq: off, data: chunkAt(off, n).toString('base64') });
      off += n;
    }
    if (!result) this.send({ type: 'file.data', jobId, opId, seq: size, data: null });
    const r = await this.waitFor<Extract<Msg, { type: 'file.result' }>>((m) => m.type === 'file.result' && m.opId === opId, 60_000, from);
    stop();
    return r;
  }

  /** readFile reads a whole file, acking as it goes; resolves with its bytes and the result. */
  async readFile(jobId: string, path: string, onChunk?: (data: Buffer) => void): Promise<{ data: Buffer; result: Extract<Msg, { type: 'file.result' }> }> {
    const opId = `op_${randomUUID()}`;
    const from = this.received.length;
    const chunks: Buffer[] = [];
    const stop = this.onMessage((m) => {
      if (m.type === 'file.data' && m.opId === opId && m.data !== null) {
        const d = Buffer.from(m.data, 'base64');
        if (onChunk) onChunk(d);
        else chunks.push(d);
        this.send({ type: 'file.ack', jobId, opId, seq: m.seq + d.length });
      }
    });
    this.send({ type: 'file.op', jobId, opId, op: 'read', path });
    const result = await this.waitFor<Extract<Msg, { type: 'file.result' }>>((m) => m.type === 'file.result' && m.opId === opId, 120_000, from);
    stop();
    return { data: Buffer.concat(chunks), result };
  }

  /** end cancels a sandbox and resolves with its end and wipe receipt. */
  async end(jobId: string): Promise<{ ended: Extract<Msg, { type: 'job.ended' }>; wiped: Extract<Msg, { type: 'job.wiped' }> }> {
    this.send({ type: 'cancel', jobId });
    const ended = await this.waitFor<Extract<Msg, { type: 'job.ended' }>>((m) => m.type === 'job.ended' && m.jobId === jobId, 30_000);
    const wiped = await this.waitFor<Extract<Msg, { type: 'job.wiped' }>>((m) => m.type === 'job.wiped' && m.jobId === jobId, 30_000);
    return { ended, wiped };
  }

  /** close stops listening (the agent keeps redialing until the cluster is brought down). */
  async close(): Promise<void> {
    this.ws?.terminate();
    this.wss.close();
    await new Promise<void>((r) => this.server.close(() => r()));
  }
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}
