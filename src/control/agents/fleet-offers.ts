/**
 * FleetOffers answers, when a job or sandbox is created, whether any agent of the fleet could ever run it: one that
 * offers its runtime and a size class that fits it. If none does, creating it is refused at once (runtime_not_offered,
 * size_not_offered) instead of queueing it for an agent that will never come. "The fleet" is every agent known and not
 * removed, connected or not, on any replica: an agent that is only full, draining or away still takes the job later.
 *
 * Cheap on the create path: the agents on this replica's channel are indexed by their distinct offers (a fleet shares a
 * few configs), so the common answer is a lookup over those few. Only when no agent here runs the job are the store's
 * agent records read (every replica's agents, their offers in the load they last stored), at most once per
 * REMOTE_VIEW_MAX_AGE_MS for a yes; a no is always checked against a fresh read before it is given.
 */
import { ApiError } from '../../shared/errors.js';
import { MIB } from '../../shared/units.js';
import type { AgentOffers, Runtime } from '../../shared/wire.js';
import { canRun, type JobSize } from './placement.js';

/** REMOTE_VIEW_MAX_AGE_MS is how long a read of the store's agent records answers "yes, some agent runs it". */
export const REMOTE_VIEW_MAX_AGE_MS = 5000;

/** KnownAgent is an agent as the store records it: its id, whether an operator removed it, what it offers (undefined: it does not say). */
export interface KnownAgent {
  id: string;
  removed: boolean;
  offers: AgentOffers | undefined;
}

/** WorkloadNeeds is what a workload needs of an agent: its runtime and size. */
export interface WorkloadNeeds extends JobSize {
  runtime: Runtime;
}

/** EVERYTHING is the profile key of agents that do not say what they offer (agents of an earlier build, fake agents). */
const EVERYTHING = '*';

/** OfferIndex counts the agents on this replica's channel per distinct offers. */
export class OfferIndex {
  private readonly byAgent = new Map<string, string>();
  private readonly byOffers = new Map<string, { offers: AgentOffers | undefined; agents: number }>();

  /** set records what an agent offers now (at its hello, and at each load report: the same offers cost one lookup). */
  set(agentId: string, offers: AgentOffers | undefined): void {
    const key = offers ? JSON.stringify(offers) : EVERYTHING;
    const was = this.byAgent.get(agentId);
    if (was === key) return;
    if (was !== undefined) this.drop(was);
    this.byAgent.set(agentId, key);
    const p = this.byOffers.get(key);
    if (p) p.agents++;
    else this.byOffers.set(key, { offers, agents: 1 });
  }

  /** delete forgets an agent (it left this replica's channel, or was removed). */
  delete(agentId: string): void {
    const was = this.byAgent.get(agentId);
    if (was === undefined) return;
    this.byAgent.delete(agentId);
    this.drop(was);
  }

  /** has says whether the agent is indexed here. */
  has(agentId: string): boolean {
    return this.byAgent.has(agentId);
  }

  /** profiles yields one agent per distinct offers indexed here (what refusal needs of them). */
  *profiles(): Iterable<KnownAgent> {
    for (const [key, p] of this.byOffers) yield { id: key, removed: false, offers: p.offers };
  }

  /** runs says whether any indexed agent offers what the workload needs. */
  runs(needs: WorkloadNeeds): boolean {
    for (const p of this.byOffers.values()) if (canRun(p.offers, needs.runtime, needs)) return true;
    return false;
  }

  private drop(key: string): void {
    const p = this.byOffers.get(key);
    if (p && --p.agents === 0) this.byOffers.delete(key);
  }
}

/**
 * refusal is why no agent of `known` can run the workload (an ApiError to throw), or null when one can, or when no agent
 * is known at all (then the workload waits for the first agent, as before offers were known). Removed agents do not count.
 */
export function refusal(known: Iterable<KnownAgent>, needs: WorkloadNeeds): ApiError | null {
  const offered = new Set<Runtime>();
  let agents = 0;
  let withRuntime = 0;
  for (const a of known) {
    if (a.removed) continue;
    agents++;
    if (canRun(a.offers, needs.runtime, needs)) return null;
    // Only agents that say what they offer reach here (canRun is true for the others).
    for (const r of a.offers!.runtimes) offered.add(r);
    if (a.offers!.runtimes.includes(needs.runtime)) withRuntime++;
  }
  if (agents === 0) return null;
  const runtimes = [...offered].sort();
  if (withRuntime === 0) {
    return new ApiError(
      'runtime_not_offered',
      `no agent offers runtime ${needs.runtime} (the fleet offers: ${runtimes.join(', ') || 'none'}): ask for one of those with "runtime", or enable ${needs.runtime} on an agent (agent.runtimes; \`cleanroom doctor\` on its host says what it can run). Workloads that name no runtime get the control plane's limits.defaultRuntime`,
      { runtime: needs.runtime, offered: runtimes },
    );
  }
  const memoryMiB = Math.ceil(needs.memoryBytes / MIB);
  const diskMiB = Math.ceil(needs.diskBytes / MIB);
  return new ApiError(
    'size_not_offered',
    `no agent that offers runtime ${needs.runtime} has a size class that fits cpu=${needs.cpu} memoryMiB=${memoryMiB} diskMiB=${diskMiB}: ask for less, or give an agent a larger class (agent.classes)`,
    { runtime: needs.runtime, cpu: needs.cpu, memoryMiB, diskMiB },
  );
}

/** RemoteAgents reads every agent the store records (all replicas'), with what each last said it offers. */
export type RemoteAgents = () => Promise<KnownAgent[]>;

/**
 * FleetCheck refuses workloads no agent of the fleet can run (see the file comment). `local` indexes the agents on this
 * replica's channel; `remote` reads the store's records of every replica's agents (absent: only the local index counts).
 */
export class FleetCheck {
  private cached: { at: number; agents: KnownAgent[] } | null = null;
  private reading: Promise<KnownAgent[]> | null = null;
  private remote: RemoteAgents | null = null;

  constructor(
    private readonly local: OfferIndex,
    /** Whether this replica knows the agent as removed (its decision may be newer than the record read). */
    private readonly removedHere: (agentId: string) => boolean,
  ) {}

  /** attachRemote sets where the fleet's agents are read from (the store, once the replica set is joined). */
  attachRemote(remote: RemoteAgents): void {
    this.remote = remote;
    this.cached = null;
  }

  /** check throws runtime_not_offered or size_not_offered when no agent known anywhere can run the workload. */
  async check(needs: WorkloadNeeds): Promise<void> {
    if (this.local.runs(needs)) return;
    if (!this.remote) {
      const why = refusal(this.local.profiles(), needs);
      if (why) throw why;
      return;
    }
    const c = this.cached;
    if (c && Date.now() - c.at < REMOTE_VIEW_MAX_AGE_MS && refusal(this.fleet(c.agents), needs) === null) return;
    // A "no" is never given from a cached read: an agent may have joined since. Nor without a read: a store that cannot
    // be read lets the workload through (it queues, as before offers were known).
    const stored = await this.read().catch(() => null);
    if (stored === null) return;
    const why = refusal(this.fleet(stored), needs);
    if (why && !this.local.runs(needs)) throw why;
  }

  /** fleet is every agent known: those on this channel (one per distinct offers), then the store's others. */
  private *fleet(stored: KnownAgent[]): Iterable<KnownAgent> {
    yield* this.local.profiles();
    for (const a of stored) {
      if (this.local.has(a.id)) continue;
      yield this.removedHere(a.id) && !a.removed ? { ...a, removed: true } : a;
    }
  }

  /** read reads the store's agents once for all concurrent callers. */
  private read(): Promise<KnownAgent[]> {
    this.reading ??= this.remote!()
      .then((agents) => {
        this.cached = { at: Date.now(), agents };
        return agents;
      })
      .finally(() => {
        this.reading = null;
      });
    return this.reading;
  }
}
