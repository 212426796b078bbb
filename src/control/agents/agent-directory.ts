/**
 * AgentDirectory is what the control plane knows and operators decide of each agent: connected or not, draining (no
 * new placements; running work finishes), removed (forgotten: its channel is refused until it is re-admitted), its
 * capacity and times. In memory, for one control-plane replica: the fields are Contract S's AgentRecord, so a store-
 * backed directory (several replicas) can take its place behind the same methods.
 */
import { ApiError } from '../../shared/errors.js';
import { MIB } from '../../shared/units.js';
import type { AgentLoad, AgentOffers, Runtime } from '../../shared/wire.js';
// How an operator sees an agent (one list, in the model): `removed` wins over `draining`, which wins over the connection.
import type { AgentState } from '../model.js';

/** AgentInfo is one agent as `GET /v1/agents` lists it. */
export interface AgentInfo {
  id: string;
  state: AgentState;
  connected: boolean;
  capacity: number;
  /** Jobs placed on it and not ended (the last count when it is disconnected). */
  running: number;
  /** Cells it is preparing (0 when not connected). */
  preparing: number;
  /** Warm cells in all (as last reported, less those assigned since). */
  warmCells: number;
  /** Warm cells per (image digest or null for the host root, runtime, size class). */
  warm: AgentLoad['warm'];
  /** What it can run, as it last said (null: an agent that does not say; it is sent every runtime and size). */
  offers: OfferedView | null;
  connectedAt: string | null;
  lastSeenAt: string;
}

/** OfferedView is what an agent offers, as operators read it (sizes in MiB, as in the config). */
export interface OfferedView {
  runtimes: Runtime[];
  classes: Array<{ name: string; cpu: number; memoryMiB: number; diskMiB: number }>;
}

/** offeredView renders an agent's offers for operators (null when it did not say). */
export function offeredView(offers: AgentOffers | undefined): OfferedView | null {
  if (!offers) return null;
  return {
    runtimes: [...offers.runtimes],
    classes: offers.classes.map((c) => ({ name: c.name, cpu: c.cpu, memoryMiB: Math.round(c.memoryBytes / MIB), diskMiB: Math.round(c.diskBytes / MIB) })),
  };
}

interface Entry {
  id: string;
  connected: boolean;
  draining: boolean;
  removed: boolean;
  capacity: number;
  running: number;
  /** As its last hello said (kept while it is away). */
  offers: AgentOffers | undefined;
  connectedAt: number | null;
  lastSeenAt: number;
}

/** Live is what the hub knows of a connected agent right now. */
export interface LiveAgent {
  running: number;
  capacity: number;
  load: AgentLoad;
}

const NOT_DRAINED = { draining: false, removed: false } as const;

export class AgentDirectory {
  private readonly entries = new Map<string, Entry>();

  /** connected records a welcomed hello (with what the agent offers). */
  connected(id: string, capacity: number, offers?: AgentOffers): void {
    const now = Date.now();
    const e = this.entries.get(id);
    if (e) Object.assign(e, { connected: true, capacity, offers, connectedAt: now, lastSeenAt: now });
    else this.entries.set(id, { id, connected: true, draining: false, removed: false, capacity, running: 0, offers, connectedAt: now, lastSeenAt: now });
  }

  /** disconnected records the end of an agent's channel and how many jobs it had then. */
  disconnected(id: string, running: number): void {
    const e = this.entries.get(id);
    if (e) Object.assign(e, { connected: false, running, lastSeenAt: Date.now() });
  }

  /** seen records a message from an agent (cheap: on every report). */
  seen(id: string): void {
    const e = this.entries.get(id);
    if (e) e.lastSeenAt = Date.now();
  }

  /** flags are the operator's decisions placement obeys. */
  flags(id: string): { draining: boolean; removed: boolean } {
    return this.entries.get(id) ?? NOT_DRAINED;
  }

  /** placeable says whether new work may go to the agent. */
  placeable(id: string): boolean {
    const e = this.entries.get(id);
    return !e || (!e.draining && !e.removed);
  }

  isRemoved(id: string): boolean {
    return this.entries.get(id)?.removed === true;
  }

  /** setDraining marks an agent draining (or not). Throws not_found for an agent never seen. */
  setDraining(id: string, draining: boolean): void {
    this.get(id).draining = draining;
  }

  /** readmit clears draining and removed: the agent takes placements again (and may dial again). */
  readmit(id: string): void {
    const e = this.get(id);
    e.draining = false;
    e.removed = false;
  }

  /**
   * checkRemovable throws conflict unless the agent may be removed: disconnected (runningNow null), or draining with
   * nothing running.
   */
  checkRemovable(id: string, runningNow: number | null): void {
    const e = this.get(id);
    if (runningNow === null || e.removed) return;
    if (!e.draining) throw new ApiError('conflict', `agent ${id} is connected and not draining: drain it first (cleanroom agents drain ${id}), wait for its jobs to finish, then remove it`);
    if (runningNow > 0) throw new ApiError('conflict', `agent ${id} is draining but still runs ${runningNow} job(s): wait for them to finish (cleanroom agents ls), then remove it`);
  }

  /** setRemoved forgets an agent: it is refused until re-admitted. */
  setRemoved(id: string): void {
    const e = this.get(id);
    e.removed = true;
    e.draining = false;
  }

  /**
   * apply takes an operator's decision made on another replica (heard over the cluster bus, read from the store): the
   * agent becomes known here if it was not, so that it is refused or not placed on here too.
   */
  apply(id: string, flags: { draining: boolean; removed: boolean }): void {
    const e = this.entries.get(id);
    if (e) Object.assign(e, flags);
    else this.entries.set(id, { id, connected: false, ...flags, capacity: 0, running: 0, offers: undefined, connectedAt: null, lastSeenAt: Date.now() });
  }

  /** list renders every known agent, with live figures from the hub for connected ones (sorted by id). */
  list(live: (id: string) => LiveAgent | null): AgentInfo[] {
    const out: AgentInfo[] = [];
    for (const e of this.entries.values()) {
      const l = e.connected ? live(e.id) : null;
      const warm = l?.load.warm.filter((w) => w.cells > 0) ?? [];
      out.push({
        id: e.id,
        state: e.removed ? 'removed' : e.draining ? 'draining' : e.connected ? 'connected' : 'disconnected',
        connected: e.connected,
        capacity: l?.capacity ?? e.capacity,
        running: l?.running ?? e.running,
        preparing: l?.load.preparing ?? 0,
        warmCells: warm.reduce((n, w) => n + w.cells, 0),
        warm,
        offers: offeredView(l?.load.offers ?? e.offers),
        connectedAt: e.connectedAt === null ? null : new Date(e.connectedAt).toISOString(),
        lastSeenAt: new Date(e.lastSeenAt).toISOString(),
      });
    }
    return out.sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
  }

  private get(id: string): Entry {
    const e = this.entries.get(id);
    if (!e) throw new ApiError('not_found', `no agent ${id} (cleanroom agents ls lists them)`);
    return e;
  }
}
