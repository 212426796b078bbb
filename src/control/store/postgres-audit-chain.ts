/**
 * PostgresAuditChain appends to the audit hash chain that every replica shares. Appends of a process queue up and go as
 * one call of cr_append_audit (migration 3) per batch: the database takes the chain's lock, reads the last event and links
 * the batch after it (seq and hash), so the chain stays one gap-free line whichever replica appends, in one round trip
 * per batch and without a lock held over round trips. The events' canonical JSON is made here (chain.ts chainParts),
 * split around the seq the database gives them, so the hashes are those eventHash computes (audit verify checks them).
 */
import type pg from 'pg';
import { chainParts, type AuditEvent, type AuditEventInput } from '../audit/chain.js';
import { jsonTextArray } from './pg-json-array.js';

interface Pending {
  input: AuditEventInput;
  time: string;
  parts: { pre: string; post: string };
  details: string;
  resolve: (e: AuditEvent) => void;
  reject: (e: Error) => void;
}

/** MAX_BATCH bounds the events of one call. */
const MAX_BATCH = 256;
/** MAX_ATTEMPTS bounds the calls of a batch that lost the race for a seq to a writer that does not take the lock. */
const MAX_ATTEMPTS = 10;

const APPEND = 'SELECT o_seq, o_prev_hash, o_hash FROM cr_append_audit($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[])';

/** PostgresAuditChain is the appender of one store instance. */
export class PostgresAuditChain {
  private readonly queue: Pending[] = [];
  private draining = false;

  constructor(private readonly pool: pg.Pool) {}

  /** append links `input` after the chain's last event, as sealEvent would at this time, and stores it; resolves with the stored event. */
  append(input: AuditEventInput): Promise<AuditEvent> {
    return new Promise((resolve, reject) => {
      const time = new Date().toISOString();
      let parts: Pending['parts'];
      let details: string;
      try {
        parts = chainParts(input, time);
        details = JSON.stringify(input.details);
      } catch (e) {
        reject(e as Error); // not JSON: this append fails alone
        return;
      }
      this.queue.push({ input, time, parts, details, resolve, reject });
      if (this.draining) return;
      this.draining = true;
      // The first append of a turn waits for the turn's others: they go in its call (group commit, as StatementBatch).
      setImmediate(() => void this.drain());
    });
  }

  private async drain(): Promise<void> {
    try {
      while (this.queue.length) await this.appendBatch(this.queue.splice(0, MAX_BATCH));
    } finally {
      this.draining = false;
    }
  }

  /**
   * call runs the append on a pooled connection that goes back to the pool when the database refused the statement (a
   * SQLSTATE error): pool.query would close the connection on any error.
   */
  private async call(values: unknown[]): Promise<Array<{ o_seq: string; o_prev_hash: string; o_hash: string }>> {
    const c = await this.pool.connect();
    let broken: Error | undefined;
    try {
      return (await c.query<{ o_seq: string; o_prev_hash: string; o_hash: string }>({ name: 'auditAppend', text: APPEND, values })).rows;
    } catch (e) {
      if (!/^[0-9A-Z]{5}$/.test(String((e as { code?: unknown }).code))) broken = e as Error;
      throw e;
    } finally {
      c.release(broken);
    }
  }

  private async appendBatch(batch: Pending[]): Promise<void> {
    const col = <K extends keyof AuditEventInput>(k: K) => batch.map((p) => p.input[k] ?? null);
    // The JSON columns (details, and the canonical JSON around each seq) go as text[] literals made natively (jsonTextArray).
    const json = (f: (p: Pending) => string) => jsonTextArray(batch.map(f));
    const values = [batch.map((p) => p.time), col('type'), col('actor'), col('workspaceId'), col('subject'), json((p) => p.details), json((p) => p.parts.pre), json((p) => p.parts.post)];
    for (let attempt = 1; ; attempt++) {
      try {
        const rows = await this.call(values);
        batch.forEach((p, i) => {
          const r = rows[i]!;
          p.resolve({ ...p.input, seq: Number(r.o_seq), time: p.time, prevHash: r.o_prev_hash, hash: r.o_hash });
        });
        return;
      } catch (e) {
        // 23505: a writer that does not take the chain's lock (a replica of an older build) stored that seq first.
        if ((e as { code?: string }).code === '23505' && attempt < MAX_ATTEMPTS) continue;
        for (const p of batch) p.reject(e as Error);
        return;
      }
    }
  }
}
