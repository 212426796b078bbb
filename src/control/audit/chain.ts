/** The audit log's hash chain: each event's hash covers its content and the previous event's hash. */
import { createHash } from 'node:crypto';

/** AUDIT_EVENT_TYPES lists every security event the platform records. */
export const AUDIT_EVENT_TYPES = [
  'api_key.created',
  'api_key.revoked',
  'workload.created',
  'cell.assigned',
  'token.minted',
  'token.refreshed',
  'token.revoked',
  'policy.changed',
  'access.denied',
  'access.denied.suppressed',
  'wipe.done',
  'image.imported',
  'image.removed',
  'agent.drained',
  'agent.undrained',
  'agent.removed',
] as const;

/** AuditEventType is one of AUDIT_EVENT_TYPES. */
export type AuditEventType = (typeof AUDIT_EVENT_TYPES)[number];

/** AuditEventInput is what a caller records: what happened, who did it, to what. */
export interface AuditEventInput {
  type: AuditEventType;
  /** Who acted: `key:<id>`, `workload:<job id>`, `agent:<id>`, `system`, or `anonymous`. */
  actor: string;
  workspaceId: string | null;
  /** What it happened to: a job, key, object or token id. */
  subject: string | null;
  details: Record<string, unknown>;
}

/** AuditEvent is a stored, chained event. */
export interface AuditEvent extends AuditEventInput {
  seq: number;
  time: string;
  prevHash: string;
  hash: string;
}

/** GENESIS_HASH is the previous hash of the first event. */
export const GENESIS_HASH = '0'.repeat(64);

/**
 * auditInput is the input as a store keeps it: its five fields only, details as their JSON reads back (toJSON applied,
 * undefined members dropped), so the hash covers exactly what the row stores and audit verify re-hashes. Both stores
 * append through it (sealEvent; the PostgreSQL chain before chainParts). Throws when details are not a JSON object.
 */
export function auditInput(input: AuditEventInput): AuditEventInput {
  const json: unknown = JSON.stringify(input.details);
  if (typeof json !== 'string' || json[0] !== '{') throw new TypeError('audit details must be a JSON object');
  return { type: input.type, actor: input.actor, workspaceId: input.workspaceId ?? null, subject: input.subject ?? null, details: JSON.parse(json) as Record<string, unknown> };
}

/** sealEvent chains an input (as auditInput keeps it) after `prev` (null for the first event). */
export function sealEvent(raw: AuditEventInput, prev: { seq: number; hash: string } | null, time = new Date()): AuditEvent {
  const input = auditInput(raw);
  const body = { ...input, seq: (prev?.seq ?? 0) + 1, time: time.toISOString(), prevHash: prev?.hash ?? GENESIS_HASH };
  return { ...body, hash: eventHash(body) };
}

/** eventHash is SHA-256 over the previous hash and the canonical JSON of every other field. */
export function eventHash(e: Omit<AuditEvent, 'hash'> & { hash?: string }): string {
  const { prevHash, hash: _own, ...content } = e;
  return createHash('sha256').update(prevHash).update('\n').update(canonicalJson(content)).digest('hex');
}

/**
 * chainParts is the canonical JSON eventHash hashes for `input` at `time`, split around its seq: for every seq,
 * canonicalJson(content) === pre + seq + post. A store links the event after whichever event turns out to be the last
 * with it (the PostgreSQL store does so in the database, under a lock): hash = sha256(prevHash + '\n' + pre + seq + post).
 * `input` is as auditInput returns it. Throws what canonicalJson throws (details that are not JSON).
 */
export function chainParts(input: AuditEventInput, time: string): { pre: string; post: string } {
  const { prevHash: _p, hash: _h, ...rest } = input as AuditEventInput & { prevHash?: string; hash?: string };
  const content: Record<string, unknown> = { ...rest, seq: 0, time };
  const entries = Object.entries(content).filter(([, x]) => x !== undefined).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  let pre = '{';
  let post = '';
  let afterSeq = false;
  entries.forEach(([k, x], i) => {
    const sep = i === 0 ? '' : ',';
    if (k === 'seq') {
      pre += `${sep}${JSON.stringify(k)}:`;
      afterSeq = true;
    } else if (afterSeq) post += `${sep}${JSON.stringify(k)}:${canonicalJson(x)}`;
    else pre += `${sep}${JSON.stringify(k)}:${canonicalJson(x)}`;
  });
  return { pre, post: `${post}}` };
}

/** ChainVerdict is the result of checking a chain from its first event. */
export type ChainVerdict =
  | { ok: true; events: number; lastHash: string }
  | { ok: false; events: number; brokenAt: number; reason: string };

/** ChainVerifier checks events fed in ascending order and remembers the first broken link. */
export class ChainVerifier {
  private prev: { seq: number; hash: string } | null = null;
  private count = 0;
  private broken: { seq: number; reason: string } | null = null;

  /** add checks one event; after the first break, later events are not judged. */
  add(e: AuditEvent): void {
    if (this.broken) return;
    this.count++;
    const expectedSeq = (this.prev?.seq ?? 0) + 1;
    const expectedPrev = this.prev?.hash ?? GENESIS_HASH;
    if (e.seq !== expectedSeq) this.broken = { seq: e.seq, reason: `expected event ${expectedSeq} here (events removed or reordered)` };
    else if (e.prevHash !== expectedPrev) this.broken = { seq: e.seq, reason: 'its previous-hash does not match the event before it' };
    else if (eventHash(e) !== e.hash) this.broken = { seq: e.seq, reason: 'its content does not match its hash (altered)' };
    this.prev = { seq: e.seq, hash: e.hash };
  }

  /** verdict reports the chain so far. */
  verdict(): ChainVerdict {
    if (this.broken) return { ok: false, events: this.count, brokenAt: this.broken.seq, reason: this.broken.reason };
    return { ok: true, events: this.count, lastHash: this.prev?.hash ?? GENESIS_HASH };
  }
}

/** canonicalJson is JSON with object keys sorted at every level, so equal content hashes equally. */
export function canonicalJson(v: unknown): string {
  if (Array.isArray(v)) return `[${v.map(canonicalJson).join(',')}]`;
  if (v && typeof v === 'object') {
    const entries = Object.entries(v as Record<string, unknown>).filter(([, x]) => x !== undefined).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    return `{${entries.map(([k, x]) => `${JSON.stringify(k)}:${canonicalJson(x)}`).join(',')}}`;
  }
  return JSON.stringify(v) ?? 'null';
}
