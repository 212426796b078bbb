/** The columns an AgentRecord is stored in, shared by both adapters so that a patch maps to the same columns in each. */
import type { AgentRecord } from '../model.js';

/** AGENT_COLUMNS maps each AgentRecord field but the id to its column. */
export const AGENT_COLUMNS = {
  replicaId: 'replica_id',
  connected: 'connected',
  draining: 'draining',
  removed: 'removed',
  capacity: 'capacity',
  running: 'running',
  load: 'load',
  connectedAt: 'connected_at',
  lastSeenAt: 'last_seen_at',
} as const satisfies Record<Exclude<keyof AgentRecord, 'id'>, string>;

/** AgentField is an AgentRecord field kept in a column of its own. */
export type AgentField = keyof typeof AGENT_COLUMNS;

/** patchedAgentFields lists the fields a patch sets, in a fixed order (so equal patches give equal statement text). */
export function patchedAgentFields(patch: Partial<AgentRecord>): AgentField[] {
  return (Object.keys(AGENT_COLUMNS) as AgentField[]).filter((f) => patch[f] !== undefined);
}

/** AgentRow is an agents row as both adapters read it (booleans as SQLite's 0/1 or PostgreSQL's true/false). */
export interface AgentRow {
  id: string;
  replica_id: string | null;
  connected: number | boolean;
  draining: number | boolean;
  removed: number | boolean;
  capacity: number;
  running: number;
  load: string | null;
  connected_at: string | null;
  last_seen_at: string;
}

/** agentFrom reads an agents row. */
export function agentFrom(r: AgentRow): AgentRecord {
  return {
    id: r.id,
    replicaId: r.replica_id,
    connected: Boolean(r.connected),
    draining: Boolean(r.draining),
    removed: Boolean(r.removed),
    capacity: r.capacity,
    running: r.running,
    load: r.load === null ? null : (JSON.parse(r.load) as AgentRecord['load']),
    connectedAt: r.connected_at,
    lastSeenAt: r.last_seen_at,
  };
}
