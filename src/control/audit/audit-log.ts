/** AuditLog appends security events to the hash-chained log and reads them back. */
import { ChainVerifier, type AuditEvent, type AuditEventInput, type ChainVerdict } from './chain.js';
import type { AuditQuery, Store } from '../store/store.js';

const VERIFY_BATCH = 1000;

/** AuditLog is the only writer of audit events. */
export class AuditLog {
  constructor(
    private readonly store: Store,
    private readonly log: (msg: string, extra?: object) => void = () => {},
    /** observe sees every event as it is recorded (the metrics count some of them). */
    private readonly observe: (e: AuditEventInput) => void = () => {},
  ) {}

  /** record appends one event; a failure is logged, never thrown into the operation being audited. */
  async record(input: AuditEventInput): Promise<void> {
    this.observe(input);
    try {
      await this.store.appendAudit(input);
    } catch (e) {
      this.log('audit append failed', { type: input.type, error: (e as Error).message });
    }
  }

  /** list returns events, newest first unless the query says ascending. */
  list(q: AuditQuery): Promise<AuditEvent[]> {
    return this.store.listAudit(q);
  }

  /** verify walks the whole chain from the first event and reports the first broken link. */
  async verify(): Promise<ChainVerdict> {
    const v = new ChainVerifier();
    let after = 0;
    for (;;) {
      const batch = await this.store.listAudit({ afterSeq: after, limit: VERIFY_BATCH, order: 'asc' });
      for (const e of batch) v.add(e);
      if (batch.length < VERIFY_BATCH) return v.verdict();
      after = batch.at(-1)!.seq;
    }
  }
}
