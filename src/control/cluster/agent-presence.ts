/**
 * AgentPresence records in the store which replica's channel each agent is on, so that every replica can tell an agent
 * that moved to another replica (its jobs go on) from one that is gone (its jobs end after the grace period).
 */
import type { AgentRecord } from '../model.js';
import type { Store } from '../store/store.js';
import { REPLICA_DEAD_MS, type ReplicaRegistry } from './replica-registry.js';

/** AgentPresence is the hub's view of agents connected anywhere in the replica set. */
export class AgentPresence {
  constructor(
    private readonly store: Pick<Store, 'getAgent' | 'upsertAgent' | 'updateAgent'>,
    private readonly registry: ReplicaRegistry,
    private readonly log: (msg: string, extra?: object) => void,
  ) {}

  /** connected records that the agent said hello on this replica's channel. */
  async connected(agentId: string, capacity: number, running: number): Promise<void> {
    const now = new Date().toISOString();
    const prev = await this.store.getAgent(agentId);
    const rec: AgentRecord = {
      id: agentId,
      draining: false,
      removed: false,
      load: null,
      ...prev,
      replicaId: this.registry.replicaId,
      connected: true,
      capacity,
      running,
      connectedAt: now,
      lastSeenAt: now,
    };
    await this.store.upsertAgent(rec);
  }

  /** disconnected records that the agent left this replica's channel (unless it is on another's already). */
  async disconnected(agentId: string): Promise<void> {
    const rec = await this.store.getAgent(agentId);
    if (rec && rec.replicaId === this.registry.replicaId) await this.store.updateAgent(agentId, { connected: false, replicaId: null, lastSeenAt: new Date().toISOString() });
  }

  /** refresh marks the agents on this replica's channel as seen now (each heartbeat). */
  async refresh(agentIds: readonly string[]): Promise<void> {
    const now = new Date().toISOString();
    for (const id of agentIds) await this.store.updateAgent(id, { replicaId: this.registry.replicaId, connected: true, lastSeenAt: now });
  }

  /** elsewhere says whether the agent is connected to another live replica (then its jobs are not lost). */
  async elsewhere(agentId: string): Promise<boolean> {
    const rec = await this.store.getAgent(agentId).catch((e: Error) => {
      this.log('agent presence read failed', { agentId, error: e.message });
      return null;
    });
    if (!rec?.connected || rec.replicaId === null || rec.replicaId === this.registry.replicaId) return false;
    return this.registry.isLive(rec.replicaId) && Date.now() - Date.parse(rec.lastSeenAt) < REPLICA_DEAD_MS;
  }
}
