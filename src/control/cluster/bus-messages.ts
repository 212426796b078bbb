/**
 * BusMessage is everything control-plane replicas tell each other over the bus. Payloads are small and carry ids and
 * sequence numbers only — never a token, a key or tenant data: a receiver reads what it needs from the store. Every
 * message is checked against its schema on receipt (a peer on an older version, or a stray NOTIFY, is ignored).
 */
import { z } from 'zod';

const Id = z.string().min(1).max(128);

/** BusMessageSchema is the one list of bus messages. */
export const BusMessageSchema = z.discriminatedUnion('type', [
  /** A job was queued (created, or put back): replicas with agents that have room try to place it. */
  z.object({ type: z.literal('job.queued'), from: Id, jobId: Id }).strict(),
  /** A job's output up to `seq` is in the store (coalesced: not one message per chunk). */
  z.object({ type: z.literal('job.output'), from: Id, jobId: Id, seq: z.number().int().min(0) }).strict(),
  /** A sandbox started on its agent (its record says where); a plain job's start is not announced (JobService.afterStart). */
  z.object({ type: z.literal('job.started'), from: Id, jobId: Id }).strict(),
  /** A job ended (its record holds the end): live streams finish, quota slots free up, queues pump. */
  z.object({ type: z.literal('job.ended'), from: Id, jobId: Id }).strict(),
  /** An operator drained, undrained or removed an agent: every replica reads its flags from the store. */
  z.object({ type: z.literal('agent.admin'), from: Id, agentId: Id }).strict(),
  /** An API key was revoked: every replica drops what it remembers of it (see TenancyService.authenticate). */
  z.object({ type: z.literal('api_key.revoked'), from: Id, keyId: Id }).strict(),
  /** Ask the replica holding `agentId`'s channel to send it a cancel for the job. */
  z.object({ type: z.literal('agent.cancel'), from: Id, agentId: Id, jobId: Id }).strict(),
]);

/** BusMessage is one message on the bus. */
export type BusMessage = z.infer<typeof BusMessageSchema>;

/** BUS_CHANNEL is the PostgreSQL NOTIFY channel of the bus. */
export const BUS_CHANNEL = 'cleanroom_bus';

/** parseBusMessage checks a received payload; null when it is not a message of ours. */
export function parseBusMessage(raw: string): BusMessage | null {
  try {
    const r = BusMessageSchema.safeParse(JSON.parse(raw));
    return r.success ? r.data : null;
  } catch {
    return null;
  }
}

/**
 * parseBusPayload reads a NOTIFY payload: one message, or a JSON array of them (a replica sends what it published in
 * one turn as one NOTIFY). Each is checked on its own; what is not a message of ours is left out.
 */
export function parseBusPayload(raw: string): BusMessage[] {
  let value: unknown;
  try {
    value = JSON.parse(raw);
  } catch {
    return [];
  }
  const out: BusMessage[] = [];
  for (const v of Array.isArray(value) ? value : [value]) {
    const r = BusMessageSchema.safeParse(v);
    if (r.success) out.push(r.data);
  }
  return out;
}

/** MAX_NOTIFY_PAYLOAD_BYTES keeps one NOTIFY's payload under PostgreSQL's limit (8000 bytes by default). */
export const MAX_NOTIFY_PAYLOAD_BYTES = 7000;

/**
 * busPayloads packs serialized messages, in order, into as few JSON-array payloads as fit MAX_NOTIFY_PAYLOAD_BYTES each
 * (a message is a few ids: far below the limit on its own).
 */
export function busPayloads(serialized: readonly string[]): string[] {
  const out: string[] = [];
  let part: string[] = [];
  let bytes = 2;
  for (const m of serialized) {
    const n = Buffer.byteLength(m) + 1;
    if (part.length && bytes + n > MAX_NOTIFY_PAYLOAD_BYTES) {
      out.push(`[${part.join(',')}]`);
      part = [];
      bytes = 2;
    }
    part.push(m);
    bytes += n;
  }
  if (part.length) out.push(`[${part.join(',')}]`);
  return out;
}
