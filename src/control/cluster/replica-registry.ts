/**
 * ReplicaRegistry keeps this control-plane replica's record in the store alive (a heartbeat every 2 s) and a view of the
 * others: a replica whose heartbeat is older than REPLICA_DEAD_MS is dead. Peers reach a replica at its apiUrl.
 */
import type { ReplicaRecord } from '../model.js';
import type { Store } from '../store/store.js';

/** HEARTBEAT_MS is how often a replica refreshes its record (and re-reads the others'). */
export const HEARTBEAT_MS = 2000;
/** REPLICA_DEAD_MS is how long without a heartbeat before a replica counts as dead. */
export const REPLICA_DEAD_MS = 10_000;

/** ReplicaRegistry is this replica's membership in the set of replicas sharing the store. */
export class ReplicaRegistry {
  private readonly startedAt = new Date().toISOString();
  private replicas: ReplicaRecord[] = [];
  private timer: NodeJS.Timeout | null = null;
  private readonly tickListeners: Array<(dead: string[]) => void> = [];
  private readonly known = new Set<string>();

  constructor(
    private readonly store: Pick<Store, 'upsertReplica' | 'listReplicas' | 'deleteReplica'>,
    readonly replicaId: string,
    readonly apiUrl: string,
    private readonly log: (msg: string, extra?: object) => void,
  ) {}

  /** start records this replica and begins the heartbeat. */
  async start(): Promise<void> {
    await this.beat();
    this.timer = setInterval(() => void this.beat().catch((e: Error) => this.log('replica heartbeat failed', { error: e.message })), HEARTBEAT_MS);
    this.timer.unref();
  }

  /** onTick hears every heartbeat, with the replicas that died since the previous one (the cluster sweeps after them). */
  onTick(listener: (dead: string[]) => void): void {
    this.tickListeners.push(listener);
  }

  private async beat(): Promise<void> {
    const now = new Date().toISOString();
    await this.store.upsertReplica({ id: this.replicaId, apiUrl: this.apiUrl, startedAt: this.startedAt, heartbeatAt: now });
    this.replicas = await this.store.listReplicas();
    const live = new Set(this.live().map((r) => r.id));
    const dead = [...this.known].filter((id) => !live.has(id));
    for (const id of dead) this.known.delete(id);
    for (const id of live) this.known.add(id);
    if (dead.length) this.log('replicas stopped heartbeating', { replicas: dead });
    for (const l of this.tickListeners) l(dead);
  }

  /** live lists the replicas whose heartbeat is recent (this one included), by id. */
  live(now = Date.now()): ReplicaRecord[] {
    return this.replicas.filter((r) => r.id === this.replicaId || now - Date.parse(r.heartbeatAt) < REPLICA_DEAD_MS).sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
  }

  /** isLive says whether a replica heartbeats (as of the last read). */
  isLive(id: string): boolean {
    return this.live().some((r) => r.id === id);
  }

  /** apiUrlOf is where a live replica's API is; null if it is not live. */
  apiUrlOf(id: string): string | null {
    return this.live().find((r) => r.id === id)?.apiUrl ?? null;
  }

  /** isSweeper says whether this replica is the one that acts for dead replicas (the live one with the lowest id). */
  isSweeper(): boolean {
    return this.live()[0]?.id === this.replicaId;
  }

  /** stop ends the heartbeat and removes this replica's record (a clean stop is not a death). */
  async stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    await this.store.deleteReplica(this.replicaId).catch(() => {});
  }
}
