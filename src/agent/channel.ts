/** ControlChannel is the agent's mutual-TLS WebSocket to the control plane; it redials on loss. */
import { EventEmitter } from 'node:events';
import WebSocket from 'ws';
import {
  AgentToControlSchema,
  CHANNEL_CLOSE,
  describeProblem,
  MAX_CONTROL_MESSAGE_BYTES,
  parseControlMessage,
  PROTOCOL_VERSION,
  type AgentHello,
  type AgentToControl,
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
      this.write(this.ws, msg);
      return;
    }
    // A load report is only worth sending now: the next hello carries the load as it is then.
    if (msg.type === 'agent.load') return;
    if (this.outbox.length < OUTBOX_LIMIT || msg.type === 'job.ended' || msg.type === 'job.wiped') {
      this.outbox.push(msg);
      if (msg.type === 'job.output') this.outboxBytes += msg.data.length;
    }
  }

  /**
   * write sends one message after checking it against the schema the control plane checks it with: a message it would
   * refuse closes the channel, and a refused final report replayed on every connect would close it every time. So a
   * bad one is dropped here and reported. Output is exempt (it is base64 of at most one cell frame, by construction).
   */
  private write(ws: WebSocket, msg: AgentToControl): void {
    if (msg.type !== 'job.output') {
      const r = AgentToControlSchema.safeParse(msg);
      if (!r.success) {
        this.emit('bad-outgoing', msg.type, describeProblem(r.error));
        return;
      }
    }
    ws.send(JSON.stringify(msg));
  }

  /** congested says whether output should wait: too much is unsent, on the socket or queued while disconnected. */
  congested(): boolean {
    if (this.ws && this.welcomed && this.ws.readyState === WebSocket.OPEN) return this.ws.bufferedAmount > HIGH_WATER_BYTES;
    return this.outboxBytes > HIGH_WATER_BYTES;
  }

  /** flushed resolves once everything sent so far has left the socket (or after timeoutMs). */
  async flushed(timeoutMs: number): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (this.ws && this.ws.bufferedAmount > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
  }

  /** close stops redialing and closes the socket. */
  close(): void {
    this.closed = true;
    clearTimeout(this.redialTimer);
    this.ws?.close();
  }
}
