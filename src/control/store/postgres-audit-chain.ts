/**
 * PostgresAuditChain appends to the audit hash chain that every replica shares. Appends of a process queue up and go as
 * one statement per batch, linked after the chain's last event (seq and hash); the events' canonical JSON is made here
 * (chain.ts chainParts), split around the seq, so the hashes are those eventHash computes (audit verify checks them).
 *
 * While this process is the only writer, a batch is linked after the last event it knows and inserted as it is (the
 * cheapest statement; `seq` is the primary key, so a batch linked after a stale last event fails whole). Once another
 * writer is seen (a unique violation on seq), batches go for CONTENDED_MS through cr_append_audit (migration 3) instead:
 * the database takes the chain's lock, reads the last event and links the batch after it, so two replicas appending at
 * once never lose the race for a seq (which cost a failed insert, a read and a second insert for a batch in ~40 % of
 * batches with two replicas under load). Either way the chain stays one gap-free line, in one round trip per batch: every
 * event's seq is its prev's + 1 and the seq primary key admits one event per seq, whichever way each was linked.
 * The unique violation that starts a window is answered here without a log line; PostgreSQL's server log shows it as an
 * ERROR: about one per replica per CONTENDED_MS while replicas append at once (within a window, batches do not race).
 */
import { createHash } from 'node:crypto';
import type pg from 'pg';
import { auditInput, chainParts, GENESIS_HASH, type AuditEvent, type AuditEventInput } from '../audit/chain.js';
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
/** CONTENDED_MS is how long batches go through the chain's lock after another writer was seen. */
const CONTENDED_MS = 10_000;

const LAST = 'SELECT seq, hash FROM audit_events ORDER BY seq DESC LIMIT 1';
const INSERT = `INSERT INTO audit_events (seq, time, type, actor, workspace_id, subject, details, prev_hash, hash)
  SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[], $9::text[])`;

const APPEND = 'SELECT o_seq, o_prev_hash, o_hash FROM cr_append_audit($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[])';

/** column gives one input field of every event of a batch, as an array parameter (null where absent). */
const column = (batch: readonly Pending[]) => <K extends keyof AuditEventInput>(k: K) => batch.map((p) => p.input[k] ?? null);

/** PostgresAuditChain is the appender of one store instance. */
export class PostgresAuditChain {
  private readonly queue: Pending[] = [];
  private draining = false;
  /** The chain's last event as this process last stored or read it; undefined: unknown (read it before linking here). */
  private last: { seq: number; hash: string } | undefined = undefined;
  /** Until when batches go through the chain's lock (another writer was seen). */
  private lockedUntil = 0;

  constructor(private readonly pool: pg.Pool) {}

  /** append links `input` after the chain's last event, as sealEvent would at this time, and stores it; resolves with the stored event. */
  append(raw: AuditEventInput): Promise<AuditEvent> {
    return new Promise((resolve, reject) => {
      const time = new Date().toISOString();
      let input: AuditEventInput;
      let parts: Pending['parts'];
      let details: string;
      try {
        input = auditInput(raw);
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
   * query runs a statement on a pooled connection that goes back to the pool when the database refused the statement (a
   * SQLSTATE error, such as losing the race for a seq): pool.query would close the connection on any error.
   */
  private async query<R extends pg.QueryResultRow>(name: string, text: string, values: unknown[]): Promise<R[]> {
    const c = await this.pool.connect();
    let broken: Error | undefined;
    try {
      return (await c.query<R>({ name, text, values })).rows;
    } catch (e) {
      if (!/^[0-9A-Z]{5}$/.test(String((e as { code?: unknown }).code))) broken = e as Error;
      throw e;
    } finally {
      c.release(broken);
    }
  }

  /** linkHere links a batch after the last event this process knows and inserts it as it is; rejects with 23505 if another writer came first. */
  private async linkHere(batch: Pending[], json: (f: (p: Pending) => string) => string): Promise<Array<{ seq: number; prevHash: string; hash: string }>> {
    if (this.last === undefined) {
      const r = (await this.query<{ seq: string; hash: string }>('auditLast', LAST, []))[0];
      this.last = r ? { seq: Number(r.seq), hash: r.hash } : { seq: 0, hash: GENESIS_HASH };
    }
    let prev = this.last;
    const links = batch.map((p) => {
      const seq = prev.seq + 1;
      const hash = createHash('sha256').update(`${prev.hash}\n${p.parts.pre}${seq}${p.parts.post}`).digest('hex');
      const link = { seq, prevHash: prev.hash, hash };
      prev = { seq, hash };
      return link;
    });
    const col = column(batch);
    await this.query('auditInsert', INSERT, [links.map((l) => l.seq), batch.map((p) => p.time), col('type'), col('actor'), col('workspaceId'), col('subject'), json((p) => p.details), links.map((l) => l.prevHash), links.map((l) => l.hash)]);
    return links;
  }

  /** linkInDatabase has cr_append_audit link the batch after the last event, under the chain's lock. */
  private async linkInDatabase(batch: Pending[], json: (f: (p: Pending) => string) => string): Promise<Array<{ seq: number; prevHash: string; hash: string }>> {
    const col = column(batch);
    const rows = await this.query<{ o_seq: string; o_prev_hash: string; o_hash: string }>('auditAppend', APPEND, [
      batch.map((p) => p.time), col('type'), col('actor'), col('workspaceId'), col('subject'), json((p) => p.details), json((p) => p.parts.pre), json((p) => p.parts.post),
    ]);
    // One row per event, in the batch's order (the function orders them): anything else resolves no append of the batch.
    if (rows.length !== batch.length) throw new Error(`cr_append_audit returned ${rows.length} links for a batch of ${batch.length}`);
    return rows.map((r) => ({ seq: Number(r.o_seq), prevHash: r.o_prev_hash, hash: r.o_hash }));
  }

  private async appendBatch(batch: Pending[]): Promise<void> {
    // The JSON columns (details, and the canonical JSON around each seq) go as text[] literals made natively (jsonTextArray).
    const json = (f: (p: Pending) => string) => jsonTextArray(batch.map(f));
    for (let attempt = 1; ; attempt++) {
      const locked = Date.now() < this.lockedUntil;
      try {
        const links = locked ? await this.linkInDatabase(batch, json) : await this.linkHere(batch, json);
        const end = links[links.length - 1];
        this.last = end ? { seq: end.seq, hash: end.hash } : this.last;
        batch.forEach((p, i) => p.resolve({ ...p.input, seq: links[i]!.seq, time: p.time, prevHash: links[i]!.prevHash, hash: links[i]!.hash }));
        return;
      } catch (e) {
        this.last = undefined;
        // 23505: another writer stored that seq first: link in the database from now on (under its lock; a writer of an
        // older build that does not take it can still win a race, and the batch is then sent again).
        if ((e as { code?: string }).code === '23505' && attempt < MAX_ATTEMPTS) {
          this.lockedUntil = Date.now() + CONTENDED_MS;
          continue;
        }
        for (const p of batch) p.reject(e as Error);
        return;
      }
    }
  }
}
