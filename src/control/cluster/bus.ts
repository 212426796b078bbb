/** Bus is how control-plane replicas prompt each other; LocalBus is the one-process bus (SQLite, a single replica). */
import type { BusMessage } from './bus-messages.js';

/** BusListener hears every message published by any replica (its own included). */
export type BusListener = (msg: BusMessage) => void;

/**
 * Bus is a best-effort broadcast of small prompts between replicas. It is never the source of truth: every receiver
 * reads the store, and every replica also resyncs from the store periodically, so a lost message costs latency only.
 */
export interface Bus {
  /** publish broadcasts a message to every replica; it never throws (a failure is logged by the adapter). */
  publish(msg: BusMessage): void;
  /** subscribe adds a listener; it returns its removal. */
  subscribe(listener: BusListener): () => void;
  close(): Promise<void>;
}

/** LocalBus delivers in process, on the next tick (as a network bus would: never inside the publisher's call). */
export class LocalBus implements Bus {
  private readonly listeners = new Set<BusListener>();

  publish(msg: BusMessage): void {
    queueMicrotask(() => {
      for (const l of this.listeners) l(msg);
    });
  }

  subscribe(listener: BusListener): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  async close(): Promise<void> {
    this.listeners.clear();
  }
}
