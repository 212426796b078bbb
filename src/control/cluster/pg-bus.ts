/**
 * PgBus is the bus of replicas sharing one PostgreSQL database: LISTEN on a dedicated connection, NOTIFY on another.
 * What is published in one turn of the event loop (and while a NOTIFY is on its way) goes as one NOTIFY whose payload is
 * the array of those messages: a job's life is several messages, and a NOTIFY each cost the database (and the
 * publisher) a round trip and a commit per message. A lost connection is reopened with backoff; messages published meanwhile are dropped (the bus only prompts: the
 * replicas' periodic resync from the store covers what it missed).
 */
import pg from 'pg';
import { BUS_CHANNEL, busPayloads, parseBusPayload, type BusMessage } from './bus-messages.js';
import type { Bus, BusListener } from './bus.js';

/** RECONNECT_MAX_MS bounds the backoff between attempts to reopen a lost connection. */
const RECONNECT_MAX_MS = 5000;
/** PUBLISH_QUEUE_MAX bounds the messages waiting for the publishing connection; past it they are dropped. */
const PUBLISH_QUEUE_MAX = 10_000;

/** PgBus broadcasts through NOTIFY on the `cleanroom_bus` channel. */
export class PgBus implements Bus {
  private readonly listeners = new Set<BusListener>();
  private listener: pg.Client | null = null;
  private publisher: pg.Client | null = null;
  private publishing: Promise<void> = Promise.resolve();
  /** Messages (serialized) waiting for the next NOTIFY, in order; a flush is scheduled or on its way while any wait. */
  private pending: string[] = [];
  private flushing = false;
  private closed = false;
  private backoffMs = 100;
  /** onReconnect hears that the listening connection was reopened (messages may have been missed meanwhile). */
  onReconnect: () => void = () => {};

  private constructor(
    private readonly url: string,
    private readonly log: (msg: string, extra?: object) => void,
  ) {}

  /** open connects both connections and starts listening. */
  static async open(url: string, log: (msg: string, extra?: object) => void): Promise<PgBus> {
    const bus = new PgBus(url, log);
    await bus.listen();
    bus.publisher = await bus.connect();
    bus.publisher.on('error', (e) => bus.lost('publish', e));
    return bus;
  }

  private async connect(): Promise<pg.Client> {
    const c = new pg.Client({ connectionString: this.url, application_name: 'cleanroom-bus' });
    await c.connect();
    return c;
  }

  private async listen(): Promise<void> {
    const c = await this.connect();
    c.on('notification', (n) => {
      if (n.channel !== BUS_CHANNEL || !n.payload) return;
      for (const msg of parseBusPayload(n.payload)) for (const l of this.listeners) l(msg);
    });
    c.on('error', (e) => this.lost('listen', e));
    await c.query(`LISTEN ${BUS_CHANNEL}`);
    this.listener = c;
    this.backoffMs = 100;
  }

  private lost(which: 'listen' | 'publish', e: Error): void {
    if (this.closed) return;
    this.log('cluster bus connection lost', { connection: which, error: e.message });
    const old = which === 'listen' ? this.listener : this.publisher;
    if (which === 'listen') this.listener = null;
    else this.publisher = null;
    void old?.end().catch(() => {});
    const retry = async (): Promise<void> => {
      if (this.closed) return;
      try {
        if (which === 'listen') {
          await this.listen();
          this.onReconnect();
        } else {
          this.publisher = await this.connect();
          this.publisher.on('error', (err) => this.lost('publish', err));
        }
        this.log('cluster bus connection reopened', { connection: which });
      } catch (err) {
        this.backoffMs = Math.min(RECONNECT_MAX_MS, this.backoffMs * 2);
        this.log('cluster bus reconnect failed', { connection: which, error: (err as Error).message });
        setTimeout(() => void retry(), this.backoffMs).unref();
      }
    };
    setTimeout(() => void retry(), this.backoffMs).unref();
  }

  publish(msg: BusMessage): void {
    if (this.closed || this.pending.length >= PUBLISH_QUEUE_MAX) return;
    this.pending.push(JSON.stringify(msg));
    if (this.flushing) return;
    this.flushing = true;
    this.publishing = new Promise<void>((resolve) => setImmediate(resolve)).then(() => this.flush());
  }

  /** flush sends what waits, one NOTIFY per payload, until nothing waits (messages published meanwhile go next). */
  private async flush(): Promise<void> {
    try {
      while (this.pending.length) {
        const batch = this.pending;
        this.pending = [];
        for (const payload of busPayloads(batch)) {
          if (!this.publisher) continue; // reconnecting: dropped (the bus only prompts)
          await this.publisher.query({ name: 'busNotify', text: 'SELECT pg_notify($1, $2)', values: [BUS_CHANNEL, payload] }).catch((e: Error) => this.log('cluster bus publish failed', { messages: batch.length, error: e.message }));
        }
      }
    } finally {
      this.flushing = false;
    }
  }

  subscribe(listener: BusListener): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  async close(): Promise<void> {
    this.closed = true;
    this.listeners.clear();
    await this.publishing;
    await Promise.all([this.listener?.end().catch(() => {}), this.publisher?.end().catch(() => {})]);
  }
}
