/** ControlChannel is the agent's mutual-TLS WebSocket to the control plane; it redials on loss. */
import { EventEmitter } from 'node:events';
import WebSocket from 'ws';
import {
  AgentToControlSchema,
  CHANNEL_CLOSE,
  describeProblem,
  MAX_CONTROL_MESSAGE_BYTES,
  MAX_REPORT_OUTPUT_CHARS,
  MAX_REPORT_OUTPUTS,
  parseControlMessage,
  PROTOCOL_VERSION,
  type AgentHello,
  type AgentLoad,
  type AgentToControl,
  type JobReport,
} from '../shared/wire.js';

/** ChannelTls is the agent's client certificate and the CA it trusts. */
export interface ChannelTls {
  ca: string;
  cert: string;
  key: string;
}

/** Greeting is what the agent says on every connect: its hello, then (once welcomed) the reports it replays. */
export interface Greeting {
  hello: AgentHello;
  replay: AgentToControl[];
}

/** FIRST_BACKOFF_MS is the wait before the first redial after a loss (then doubled per failed dial, up to MAX). */
const FIRST_BACKOFF_MS = 100;
const MAX_BACKOFF_MS = 5000;
/** REFUSED_BACKOFF_MS is the wait before dialing again after a refusal that will not change soon (our protocol version,
 *  or this agent removed by an operator). */
const REFUSED_BACKOFF_MS = 30_000;
/** WELCOME_TIMEOUT_MS bounds the wait for the control plane's welcome after the hello. */
const WELCOME_TIMEOUT_MS = 10_000;
/** OUTBOX_LIMIT bounds what is queued while disconnected; job ends are always kept. */
const OUTBOX_LIMIT = 10_000;
/** HIGH_WATER_BYTES: past this much unsent (socket buffer or outbox), the channel is congested and cells are paused. */
const HIGH_WATER_BYTES = 4 * 1024 * 1024;

/**
 * ControlChannel emits 'dialing' (url), 'message' (a checked ControlToAgent), 'open' (welcomed), 'close' (code, reason), 'dial-error'
 * (Error), 'bad-message' (problem, the parsed JSON or undefined), 'protocol-error' (problem) and 'bad-outgoing' (type,
 * problem).
 *
 * It dials its URLs (control-plane replicas) in turn: when one is unreachable, refuses us, or closes an established
 * channel, the next is dialed after a backoff (doubled per failed dial, bounded, with jitter so that a fleet of agents
 * losing one replica does not redial in step), and the list wraps around. The first URL is dialed first.
 *
 * On every connect it sends the hello alone and waits for the welcome: only then does it replay and send what was
 * queued, so a control plane that refuses the hello (another protocol version) never receives, and the agent never
 * loses, anything else. A message from the control plane that fails its schema is dropped and reported (the agent
 * fails a job whose assignment it cannot read): the control plane is authenticated, so a bad message is a bug or a
 * version skew affecting that one message, and closing the channel would only interrupt every other job's reports.
 */
export class ControlChannel extends EventEmitter {
  private ws: WebSocket | null = null;
  /** The control plane welcomed our hello on the current socket; until then everything waits in the outbox. */
  private welcomed = false;
  private outbox: AgentToControl[] = [];
  private outboxBytes = 0;
  private backoffMs = FIRST_BACKOFF_MS;
  private redialTimer: NodeJS.Timeout | undefined;
  private closed = false;
  /** The index in urls of the one dialed last. */
  private current = 0;
  private readonly urls: readonly string[];
  /** The protocol the control plane welcomed us with (job.report from 5 on). */
  private protocol = 0;
  /** Job reports of this turn, sent as job.report messages at its end (see flushReports). */
  private reports: JobPart[] = [];
  private reportsScheduled = false;
  /**
   * reportLoad, when set, gives the agent's load to send with the last job.report of a turn that ends or wipes a job
   * (the load changed with it): one message where a report and an agent.load would be two.
   */
  reportLoad: (() => AgentLoad) | null = null;
  /** What the schema said of a report of output alone, per job id (null: it passes); see outputReportProblem. */
  private readonly outputReportChecks = new Map<string, string | null>();

  constructor(
    urls: string | readonly string[],
    private readonly tls: ChannelTls,
    /** What to say on every connect. */
    private readonly greeting: () => Greeting,
    /** The backoff's jitter: a factor in [0.5, 1) of the wait by default (tests pass () => 1). */
    private readonly jitter: () => number = () => 0.5 + Math.random() / 2,
  ) {
    super();
    this.urls = typeof urls === 'string' ? [urls] : [...urls];
    if (this.urls.length === 0) throw new Error('the control channel needs at least one URL');
  }

  /** url is the control plane dialed last (the one connected to, while connected). */
  get url(): string {
    return this.urls[this.current]!;
  }

  /** connect dials now and keeps redialing until close(). */
  connect(): void {
    if (this.closed) return;
    const url = this.url;
    this.emit('dialing', url);
    const ws = new WebSocket(url, { ...this.tls, minVersion: 'TLSv1.2', perMessageDeflate: false, maxPayload: MAX_CONTROL_MESSAGE_BYTES });
    this.ws = ws;
    this.welcomed = false;
    let replay: AgentToControl[] = [];
    let welcomeTimer: NodeJS.Timeout | undefined;
    ws.on('open', () => {
      const g = this.greeting();
      replay = g.replay;
      this.write(ws, g.hello);
      welcomeTimer = setTimeout(() => {
        this.emit('protocol-error', `no welcome within ${WELCOME_TIMEOUT_MS} ms of the hello (does the control plane speak protocol ${PROTOCOL_VERSION}?)`);
        ws.terminate();
      }, WELCOME_TIMEOUT_MS);
    });
    ws.on('message', (data) => {
      const r = parseControlMessage(data.toString());
      if (!r.ok) {
        this.emit('bad-message', r.problem, r.value);
        return;
      }
      const msg = r.msg;
      if (msg.type === 'welcome') {
        if (this.welcomed) return;
        clearTimeout(welcomeTimer);
        this.welcomed = true;
        this.protocol = msg.protocol;
        this.backoffMs = FIRST_BACKOFF_MS;
        for (const m of replay) this.write(ws, m);
        replay = [];
        const queued = this.outbox.splice(0);
        this.outboxBytes = 0;
        for (const m of queued) this.write(ws, m);
        this.emit('open');
        return;
      }
      if (!this.welcomed) {
        this.emit('protocol-error', `${msg.type} before the welcome (dropped)`);
        return;
      }
      this.emit('message', msg);
    });
    ws.on('error', (e) => this.emit('dial-error', e));
    ws.on('close', (code, reason) => {
      clearTimeout(welcomeTimer);
      // Reports of this turn not written yet wait for the next connection, as anything sent now would.
      for (const m of this.reports.splice(0)) this.queue(m);
      this.ws = null;
      this.welcomed = false;
      this.emit('close', code, reason.toString());
      if (this.closed) return;
      // The next control plane in the list; a refusal of our version or of this agent will not change until someone
      // acts: no need to knock every few seconds.
      this.current = (this.current + 1) % this.urls.length;
      const refused = code === CHANNEL_CLOSE.protocolMismatch || code === CHANNEL_CLOSE.agentRemoved;
      const wait = Math.round((refused ? REFUSED_BACKOFF_MS : this.backoffMs) * this.jitter());
      this.redialTimer = setTimeout(() => this.connect(), wait);
      this.backoffMs = Math.min(this.backoffMs * 2, MAX_BACKOFF_MS);
    });
  }

  /** send delivers now or queues until the channel is back (and welcomed). */
  send(msg: AgentToControl): void {
    if (this.ws && this.welcomed && this.ws.readyState === WebSocket.OPEN) {
      if (this.protocol >= 5 && isJobPart(msg)) {
        this.reports.push(msg);
        if (!this.reportsScheduled) {
          this.reportsScheduled = true;
          setImmediate(() => this.flushReports());
        }
        return;
      }
      // Whatever else is sent keeps its place after the reports before it.
      this.flushReports();
      this.write(this.ws, msg);
      return;
    }
    this.queue(msg);
  }

  /** queue keeps a message for the next connection, within the outbox's bound (final reports are always kept). */
  private queue(msg: AgentToControl): void {
    // A load report is only worth sending now: the next hello carries the load as it is then.
    if (msg.type === 'agent.load') return;
    if (this.outbox.length < OUTBOX_LIMIT || msg.type === 'job.ended' || msg.type === 'job.wiped') {
      this.outbox.push(msg);
      if (msg.type === 'job.output') this.outboxBytes += msg.data.length;
    }
  }

  /** flush sends the job reports gathered so far now instead of at the end of the turn. */
  flush(): void {
    this.flushReports();
  }

  /**
   * flushReports sends the job reports of this turn: each job's consecutive reports (started, output…, ended, wiped, in
   * that order) as one job.report, in the order of each job's first report; reports of different jobs are independent.
   */
  private flushReports(): void {
    this.reportsScheduled = false;
    if (this.reports.length === 0) return;
    const parts = this.reports.splice(0);
    const ws = this.ws;
    if (!ws || !this.welcomed || ws.readyState !== WebSocket.OPEN) {
      for (const m of parts) this.queue(m);
      return;
    }
    const out: JobReport[] = [];
    const open = new Map<string, JobReport>();
    for (const m of parts) {
      const jobId = m.jobId!;
      let r = open.get(jobId);
      if (!r || !fits(r, m)) {
        r = { type: 'job.report', jobId };
        open.set(jobId, r);
        out.push(r);
      }
      add(r, m);
    }
    const last = out[out.length - 1]!;
    if (this.reportLoad && out.some((r) => r.ended || r.wiped)) last.load = this.reportLoad();
    for (const r of out) this.write(ws, r);
    for (const r of out) if (r.started && !r.ended) this.outputReportProblem(r.jobId);
  }

  /**
   * write sends one message after checking it against the schema the control plane checks it with: a message it would
   * refuse closes the channel, and a refused final report replayed on every connect would close it every time. So a
   * bad one is dropped here and reported. Output is exempt (it is base64 of at most one cell frame, by construction):
   * a report's output is checked as one stand-in chunk, so whether a report of output alone passes depends on its job
   * id only, and that answer is kept (outputReportProblem).
   */
  private write(ws: WebSocket, msg: AgentToControl): void {
    if (msg.type !== 'job.output') {
      const problem = isOutputOnlyReport(msg) ? this.outputReportProblem(msg.jobId) : schemaProblem(withStandInOutput(msg));
      if (problem !== null) {
        this.emit('bad-outgoing', msg.type, problem);
        return;
      }
    }
    ws.send(JSON.stringify(msg));
  }

  /**
   * outputReportProblem checks a report of output alone for `jobId` against the schema once per job: a cold schema check
   * costs about a tenth of a millisecond, and would otherwise sit between every job's first output and its send. The
   * check is made ahead when the job's start is reported (flushReports), while its workload starts.
   */
  private outputReportProblem(jobId: string): string | null {
    let problem = this.outputReportChecks.get(jobId);
    if (problem === undefined) {
      problem = schemaProblem({ type: 'job.report', jobId, output: [STAND_IN_OUTPUT] });
      this.outputReportChecks.set(jobId, problem);
      while (this.outputReportChecks.size > OUTPUT_REPORT_CHECKS_KEPT) this.outputReportChecks.delete(this.outputReportChecks.keys().next().value!);
    }
    return problem;
  }

  /** congested says whether output should wait: too much is unsent, on the socket or queued while disconnected. */
  congested(): boolean {
    if (this.ws && this.welcomed && this.ws.readyState === WebSocket.OPEN) return this.ws.bufferedAmount > HIGH_WATER_BYTES;
    return this.outboxBytes > HIGH_WATER_BYTES;
  }

  /** flushed resolves once everything sent so far has left the socket (or after timeoutMs). */
  async flushed(timeoutMs: number): Promise<void> {
    this.flushReports();
    const deadline = Date.now() + timeoutMs;
    while (this.ws && this.ws.bufferedAmount > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
  }

  /** close stops redialing and closes the socket. */
  close(): void {
    this.flushReports();
    this.closed = true;
    clearTimeout(this.redialTimer);
    this.ws?.close();
  }
}

/** JobPart is a report about a job that a job.report can carry. */
type JobPart = Extract<AgentToControl, { type: 'job.started' | 'job.output' | 'job.ended' | 'job.wiped' }>;

/** REPORT_OUTPUT_CHUNK_CHARS: a larger output chunk goes as its own job.output (it would crowd a report). */
const REPORT_OUTPUT_CHUNK_CHARS = 64 * 1024;

/** isJobPart says whether a message can go in a job.report (a receipt of reconcile's, with no job or spooled, cannot). */
function isJobPart(m: AgentToControl): m is JobPart {
  switch (m.type) {
    case 'job.started':
    case 'job.ended':
      return true;
    case 'job.output':
      return m.data.length <= REPORT_OUTPUT_CHUNK_CHARS;
    case 'job.wiped':
      return m.jobId !== null && !m.spooled;
    default:
      return false;
  }
}

/** OUTPUT_REPORT_CHECKS_KEPT bounds the kept answers of outputReportProblem (the most recent jobs'). */
const OUTPUT_REPORT_CHECKS_KEPT = 1000;
/** STAND_IN_OUTPUT is the one output chunk a report's output is checked as (see write). */
const STAND_IN_OUTPUT = { stream: 'stdout', data: 'AAAA' } as const;

/** isOutputOnlyReport says whether a message is a job.report carrying output and nothing else. */
function isOutputOnlyReport(m: AgentToControl): m is JobReport {
  if (m.type !== 'job.report' || !m.output) return false;
  return Object.keys(m).every((k) => k === 'type' || k === 'jobId' || k === 'output');
}

/** withStandInOutput is a report with its output replaced by one stand-in chunk (other messages as they are). */
function withStandInOutput(m: AgentToControl): unknown {
  return m.type === 'job.report' && m.output ? { ...m, output: [STAND_IN_OUTPUT] } : m;
}

/** schemaProblem checks a message against the schema the control plane uses: null if it passes, else the first problem. */
function schemaProblem(m: unknown): string | null {
  const r = AgentToControlSchema.safeParse(m);
  return r.success ? null : describeProblem(r.error);
}

/** STAGE orders a job's reports: a report can take a part only at or after the stage of those it holds. */
const STAGE = { 'job.started': 0, 'job.output': 1, 'job.ended': 2, 'job.wiped': 3 } as const;

function stageOf(r: JobReport): number {
  return r.wiped ? 3 : r.ended ? 2 : r.output ? 1 : r.started ? 0 : -1;
}

/** fits says whether a report can take one more part and still mean the same as the parts sent one by one. */
function fits(r: JobReport, m: JobPart): boolean {
  const stage = STAGE[m.type];
  const at = stageOf(r);
  if (stage < at || (stage === at && m.type !== 'job.output')) return false;
  if (m.type !== 'job.output' || !r.output) return true;
  return r.output.length < MAX_REPORT_OUTPUTS && r.output.reduce((n, o) => n + o.data.length, 0) + m.data.length <= MAX_REPORT_OUTPUT_CHARS;
}

function add(r: JobReport, m: JobPart): void {
  switch (m.type) {
    case 'job.started':
      r.started = { cellId: m.cellId, timings: m.timings };
      return;
    case 'job.output':
      (r.output ??= []).push({ stream: m.stream, data: m.data });
      return;
    case 'job.ended':
      r.ended = { end: m.end, timings: m.timings, ...(m.outputDroppedBytes !== undefined ? { outputDroppedBytes: m.outputDroppedBytes } : {}) };
      return;
    case 'job.wiped':
      r.wiped = { receipt: m.receipt, ...(m.timings ? { timings: m.timings } : {}) };
      return;
  }
}
