/**
 * AgentPresence records in the store which replica's channel each agent is on, so that every replica can tell an agent
 * that moved to another replica (its jobs go on) from one that is gone (its jobs end after the grace period).
 */
import type { AgentRecord } from '../model.js';
import type { AgentLoad } from '../../shared/wire.js';
import type { AgentFiguresRow, Store } from '../store/store.js';
import type { Bus } from './bus.js';
import { REPLICA_DEAD_MS, type ReplicaRegistry } from './replica-registry.js';

/** AgentFlags are an operator's decisions about an agent. */
export interface AgentFlags {
  draining: boolean;
  removed: boolean;
}

/** AgentFigures are an agent's figures as the replica holding it knows them (stored at each heartbeat). */
export interface AgentFigures {
  running: number;
  capacity: number;
  load: AgentLoad;
}

/** AgentPresence is the hub's view of agents connected anywhere in the replica set. */
export class AgentPresence {
  /** The figures last stored per agent on this channel: unchanged ones are not written again. */
  private readonly storedFigures = new Map<string, { counts: string; load: string }>();

  constructor(
    private readonly store: Pick<Store, 'getAgent' | 'upsertAgent' | 'updateAgent' | 'touchAgents' | 'storeAgentFigures' | 'listAgents'>,
    private readonly registry: ReplicaRegistry,
    private readonly bus: Bus,
    private readonly log: (msg: string, extra?: object) => void,
  ) {}

  /** replicaId is this replica's id. */
  get replicaId(): string {
    return this.registry.replicaId;
  }

  /** shareFlags stores an operator's decision about an agent and tells the other replicas. */
  async shareFlags(agentId: string, flags: AgentFlags): Promise<void> {
    await this.store.updateAgent(agentId, flags);
    this.bus.publish({ type: 'agent.admin', from: this.registry.replicaId, agentId });
  }

  /** onFlags hears the decisions made on other replicas (read from the store). */
  onFlags(listener: (agentId: string, flags: AgentFlags) => void): void {
    this.bus.subscribe((msg) => {
      if (msg.type !== 'agent.admin' || msg.from === this.registry.replicaId) return;
      void this.store.getAgent(msg.agentId).then(
        (rec) => rec && listener(rec.id, { draining: rec.draining, removed: rec.removed }),
        (e: Error) => this.log('agent flags read failed', { agentId: msg.agentId, error: e.message }),
      );
    });
  }

  /** records lists every agent the store knows, with whether it is on a live replica's channel now. */
  async records(): Promise<Array<AgentRecord & { live: boolean }>> {
    const now = Date.now();
    return (await this.store.listAgents()).map((r) => ({
      ...r,
      live: r.connected && r.replicaId !== null && this.registry.isLive(r.replicaId) && now - Date.parse(r.lastSeenAt) < REPLICA_DEAD_MS,
    }));
  }

  /** connected records that the agent said hello on this replica's channel (with the hello's load, when given); returns its operator flags as stored. */
  async connected(agentId: string, capacity: number, running: number, load?: AgentLoad): Promise<AgentFlags> {
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
      ...(load ? { load } : {}),
      connectedAt: now,
      lastSeenAt: now,
    };
    await this.store.upsertAgent(rec);
    this.storedFigures.set(agentId, { counts: `${running}/${capacity}`, load: JSON.stringify(rec.load) });
    return { draining: rec.draining, removed: rec.removed };
  }

  /** disconnected records that the agent left this replica's channel (unless it is on another's already). */
  async disconnected(agentId: string): Promise<void> {
    const rec = await this.store.getAgent(agentId);
    if (rec && rec.replicaId === this.registry.replicaId) await this.store.updateAgent(agentId, { connected: false, replicaId: null, lastSeenAt: new Date().toISOString() });
  }

  /**
   * refresh marks the agents on this replica's channel as seen now (each heartbeat: one statement for all of them) and,
   * when `figures` tells them, stores the running count, capacity and load of those whose figures changed since they
   * were last stored (one more statement for all of them; the load only when it changed), so that every replica lists
   * them fresh (GET /v1/agents) at no cost per job.
   */
  async refresh(agentIds: readonly string[], figures?: (agentId: string) => AgentFigures | null): Promise<void> {
    await this.store.touchAgents(agentIds, this.registry.replicaId, new Date().toISOString());
    const here = new Set(agentIds);
    for (const id of this.storedFigures.keys()) if (!here.has(id)) this.storedFigures.delete(id);
    if (!figures) return;
    const changed: AgentFiguresRow[] = [];
    const stored: Array<[string, { counts: string; load: string }]> = [];
    for (const id of agentIds) {
      const f = figures(id);
      if (!f) continue;
      const was = this.storedFigures.get(id);
      const now = { counts: `${f.running}/${f.capacity}`, load: JSON.stringify(f.load) };
      if (was?.counts === now.counts && was.load === now.load) continue;
      changed.push({ id, running: f.running, capacity: f.capacity, ...(was?.load === now.load ? {} : { load: f.load }) });
      stored.push([id, now]);
    }
    if (changed.length === 0) return;
    await this.store.storeAgentFigures(changed);
    for (const [id, now] of stored) this.storedFigures.set(id, now);
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
