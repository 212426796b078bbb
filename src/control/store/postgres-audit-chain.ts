/**
 * PostgresAuditChain appends to the audit hash chain that every replica shares. Each event takes the sequence number
 * after the chain's last and hashes that event's hash; `seq` is the primary key, so of two replicas sealing after the
 * same last event one insert wins and the other fails with a unique violation, reads the new last event and seals
 * again. Events are never removed (triggers refuse it), so the chain stays one gap-free line without a lock held over
 * round trips. Within a process appends queue up and go as one multi-row INSERT (all or none), sealed in order: one
 * round trip per batch while this process is the only writer, instead of a locked transaction per event.
 */
import type pg from 'pg';
import type { AuditEvent, AuditEventInput } from '../audit/chain.js';

/** Seal chains an input after the previous event (null: the first). */
type Seal = (input: AuditEventInput, prev: { seq: number; hash: string } | null) => AuditEvent;

interface Pending {
  input: AuditEventInput;
  seal: Seal;
  resolve: (e: AuditEvent) => void;
  reject: (e: Error) => void;
}

/** MAX_BATCH bounds the events of one INSERT. */
const MAX_BATCH = 256;
/** MAX_ATTEMPTS bounds how often a batch is sealed again after losing to another replica's append. */
const MAX_ATTEMPTS = 100;

const LAST = 'SELECT seq, hash FROM audit_events ORDER BY seq DESC LIMIT 1';
const INSERT = `INSERT INTO audit_events (seq, time, type, actor, workspace_id, subject, details, prev_hash, hash)
  SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[], $9::text[])`;

/** PostgresAuditChain is the appender of one store instance. */
export class PostgresAuditChain {
  private readonly queue: Pending[] = [];
  private draining = false;
  /** The chain's last event as this process last saw it; undefined: read it before sealing. */
  private last: { seq: number; hash: string } | null | undefined = undefined;

  constructor(private readonly pool: pg.Pool) {}

  /** append seals `input` after the chain's last event and stores it; resolves with the stored event. */
  append(input: AuditEventInput, seal: Seal): Promise<AuditEvent> {
    return new Promise((resolve, reject) => {
      this.queue.push({ input, seal, resolve, reject });
      if (this.draining) return;
      this.draining = true;
      // The first append of a turn waits for the turn's others: they go in its INSERT (group commit, as StatementBatch).
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
   * insert runs the INSERT on a pooled connection that goes back to the pool when the database refused the statement (a
   * SQLSTATE error, such as losing the race for a seq to another replica): pool.query would close the connection on any
   * error, and with two replicas appending, a new connection (and its SCRAM login, on both ends) per lost race.
   */
  private async insert(values: unknown[]): Promise<void> {
    const c = await this.pool.connect();
    let broken: Error | undefined;
    try {
      await c.query({ name: 'auditInsert', text: INSERT, values });
    } catch (e) {
      if (!/^[0-9A-Z]{5}$/.test(String((e as { code?: unknown }).code))) broken = e as Error;
      throw e;
    } finally {
      c.release(broken);
    }
  }

  private async appendBatch(batch: Pending[]): Promise<void> {
    let pending = batch;
    for (let attempt = 1; ; attempt++) {
      try {
        if (this.last === undefined) this.last = (await this.pool.query<{ seq: number; hash: string }>({ name: 'auditLast', text: LAST })).rows[0] ?? null;
        let prev = this.last;
        const sealed: Array<{ p: Pending; e: AuditEvent }> = [];
        for (const p of pending) {
          try {
            const e = p.seal(p.input, prev);
            sealed.push({ p, e });
            prev = { seq: e.seq, hash: e.hash };
          } catch (e) {
            p.reject(e as Error);
          }
        }
        pending = sealed.map((s) => s.p);
        if (sealed.length === 0) return;
        const col = <K extends keyof AuditEvent>(k: K) => sealed.map((s) => s.e[k]);
        const details = sealed.map((s) => JSON.stringify(s.e.details));
        await this.insert([col('seq'), col('time'), col('type'), col('actor'), col('workspaceId'), col('subject'), details, col('prevHash'), col('hash')]);
        this.last = prev;
        for (const s of sealed) s.p.resolve(s.e);
        return;
      } catch (e) {
        this.last = undefined;
        // 23505: another replica stored the next event first; seal the batch again after it.
        if ((e as { code?: string }).code === '23505' && attempt < MAX_ATTEMPTS) continue;
        for (const p of pending) p.reject(e as Error);
        return;
      }
    }
  }
}
