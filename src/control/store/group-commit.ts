/**
 * groupCommit makes a SQLite store commit once per turn of the event loop instead of once per write. Every write (any
 * Store method that is not a read) made while no batch is open opens one (BEGIN); the batch commits on setImmediate,
 * after everything else this turn wrote; each write's promise resolves only once the batch holding it has committed,
 * so nothing is acknowledged (an API answer, an agent report applied) before it is durable.
 *
 * Why: a job's life is about a dozen small writes (the job row, its token, five audit events, output, four updates),
 * and each commit costs far more than its statement: with one commit per write the control plane spent most of its CPU
 * in SQLite commits (bench/fleet.ts). better-sqlite3 runs a transaction function inside an open transaction as a
 * savepoint, so the store's own transactions (audit chain, job updates) keep their atomicity within the batch. Reads go
 * straight through and see the batch's writes (one connection: one writer, this process).
 */
import type { Store } from './store.js';

/** Batchable is what the wrapper needs of the store: begin, commit and roll back a transaction of its own. */
export interface Batchable {
  beginBatch(): void;
  commitBatch(): void;
  rollbackBatch(): void;
}

/** READS are the Store methods that never write (by prefix or name); every other method is treated as a write. */
const READ_PREFIXES = ['get', 'list', 'count', 'find'];
const READS = new Set(['output', 'lastOutputSeq', 'jobsEndedBefore', 'jobsWithStatus', 'imagesWithDigest', 'imagesInStates', 'imageBytes', 'objectUsage']);

function isBatchable(s: Store): s is Store & Batchable {
  const b = s as Partial<Batchable>;
  return typeof b.beginBatch === 'function' && typeof b.commitBatch === 'function' && typeof b.rollbackBatch === 'function';
}

function isRead(name: string): boolean {
  return READS.has(name) || READ_PREFIXES.some((p) => name.startsWith(p) && name.length > p.length && name[p.length] === name[p.length]!.toUpperCase());
}

/** groupCommit wraps a store that can batch (SQLite); close() commits an open batch first. Any other store is returned as it is. */
export function groupCommit(plain: Store): Store {
  if (!isBatchable(plain)) return plain;
  const store = plain;
  /** The open batch's commit, or null when none is open. */
  let open: Promise<void> | null = null;

  const begin = (): void => {
    store.beginBatch();
    open = new Promise<void>((resolve, reject) => {
      setImmediate(() => {
        open = null;
        try {
          store.commitBatch();
          resolve();
        } catch (e) {
          store.rollbackBatch();
          reject(e as Error);
        }
      });
    });
    // A failed commit is reported to the writers waiting on it; never an unhandled rejection here.
    open.catch(() => {});
  };

  /** settle waits for the batch open when the write finished (its write is in it or in one committed before). */
  const settle = async <T>(value: T): Promise<T> => {
    if (open) await open;
    return value;
  };

  return new Proxy(store, {
    get(target, prop, receiver) {
      const value: unknown = Reflect.get(target, prop, receiver);
      if (typeof value !== 'function' || typeof prop !== 'string') return value;
      const fn = value as (...a: unknown[]) => unknown;
      if (prop === 'close') {
        return async () => {
          if (open) await open.catch(() => {});
          return fn.call(target);
        };
      }
      if (prop === 'beginBatch' || prop === 'commitBatch' || prop === 'rollbackBatch' || isRead(prop)) return fn.bind(target);
      return (...args: unknown[]) => {
        if (!open) begin();
        const r = fn.apply(target, args);
        return r instanceof Promise ? r.then(settle) : settle(r);
      };
    },
  });
}
