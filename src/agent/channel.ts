/** ControlChannel is the agent's mutual-TLS WebSocket to the control plane; it redials on loss. */
import { EventEmitter } from 'node:events';
import WebSocket from 'ws';
import type { AgentToControl, ControlToAgent } from '../shared/wire.js';

/** ChannelTls is the agent's client certificate and the CA it trusts. */
export interface ChannelTls {
  ca: string;
  cert: string;
  key: string;
}

const MAX_BACKOFF_MS = 5000;
/** OUTBOX_LIMIT bounds what is queued while disconnected; job ends are always kept. */
const OUTBOX_LIMIT = 10_000;
/** HIGH_WATER_BYTES: past this much unsent (socket buffer or outbox), the channel is congested and cells are paused. */
const HIGH_WATER_BYTES = 4 * 1024 * 1024;

/** ControlChannel emits 'message' (ControlToAgent), 'open' and 'close'. */
export class ControlChannel extends EventEmitter {
  private ws: WebSocket | null = null;
  private outbox: AgentToControl[] = [];
  private outboxBytes = 0;
  private backoffMs = 100;
  private closed = false;

  constructor(
    private readonly url: string,
    private readonly tls: ChannelTls,
    /** What to say first on every connect: the hello, then anything to replay. */
    private readonly greeting: () => AgentToControl[],
  ) {
    super();
  }

  /** connect dials now and keeps redialing until close(). */
  connect(): void {
    if (this.closed) return;
    const ws = new WebSocket(this.url, { ...this.tls, minVersion: 'TLSv1.2', perMessageDeflate: false });
    this.ws = ws;
    ws.on('open', () => {
      this.backoffMs = 100;
      for (const m of this.greeting()) ws.send(JSON.stringify(m));
      const queued = this.outbox.splice(0);
      this.outboxBytes = 0;
      for (const m of queued) ws.send(JSON.stringify(m));
      this.emit('open');
    });
    ws.on('message', (data) => {
      try {
        this.emit('message', JSON.parse(data.toString()) as ControlToAgent);
      } catch {
        this.emit('error-message', 'unparseable message from control plane');
      }
    });
    ws.on('error', (e) => this.emit('dial-error', e));
    ws.on('close', () => {
      this.ws = null;
      this.emit('close');
      if (this.closed) return;
      setTimeout(() => this.connect(), this.backoffMs);
      this.backoffMs = Math.min(this.backoffMs * 2, MAX_BACKOFF_MS);
    });
  }

  /** send delivers now or queues until the channel is back. */
  send(msg: AgentToControl): void {
    if (this.ws?.readyState === WebSocket.OPEN) {
      this.ws.send(JSON.stringify(msg));
      return;
    }
    if (this.outbox.length < OUTBOX_LIMIT || msg.type === 'job.ended' || msg.type === 'job.wiped') {
      this.outbox.push(msg);
      if (msg.type === 'job.output') this.outboxBytes += msg.data.length;
    }
  }

  /** congested says whether output should wait: too much is unsent, on the socket or queued while disconnected. */
  congested(): boolean {
    if (this.ws?.readyState === WebSocket.OPEN) return this.ws.bufferedAmount > HIGH_WATER_BYTES;
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
    this.ws?.close();
  }
}
