/**
 * startCluster joins this control plane to the replica set sharing its store: the replica registry (heartbeat), the
 * bus (PgBus on a shared PostgreSQL store, LocalBus on SQLite, where there is only one replica), the agents' presence,
 * and the job service's cross-replica behaviour. One replica on SQLite runs the same code with a local bus.
 */
import type { TenancyService } from '../tenancy/tenancy-service.js';
import { randomBytes } from 'node:crypto';
import type { Store } from '../store/store.js';
import type { AgentHub } from '../agents/agent-hub.js';
import type { JobService } from '../jobs/job-service.js';
import { AgentPresence } from './agent-presence.js';
import { LocalBus, type Bus } from './bus.js';
import { PgBus } from './pg-bus.js';
import { ReplicaRegistry } from './replica-registry.js';

/** ClusterInput is what the replica set is built from; `pgUrl` is set when the store is a shared PostgreSQL database. */
export interface ClusterInput {
  /** The store without the sealing layer (the cluster reads ids and statuses only). */
  store: Store;
  replicaId: string | undefined;
  advertiseUrl: string;
  pgUrl: string | null;
  jobs: JobService;
  agents: AgentHub;
  /** Told of API key revocations on the bus (it remembers keys briefly). */
  tenancy?: TenancyService;
  log: (msg: string, extra?: object) => void;
}

/** Cluster is this replica's membership: stop() leaves the set cleanly. */
export interface Cluster {
  replicaId: string;
  /** shared: the store is shared with other replicas (PostgreSQL). */
  shared: boolean;
  bus: Bus;
  registry: ReplicaRegistry;
  stop(): Promise<void>;
}

/** newReplicaId is a fresh replica id (`rep_<hex>`), used when the config names none. */
export function newReplicaId(): string {
  return `rep_${randomBytes(6).toString('hex')}`;
}

/** startCluster joins the replica set (see the file comment). */
export async function startCluster({ store, replicaId = newReplicaId(), advertiseUrl, pgUrl, jobs, agents, tenancy, log }: ClusterInput): Promise<Cluster> {
  const bus: Bus = pgUrl ? await PgBus.open(pgUrl, log) : new LocalBus();
  const registry = new ReplicaRegistry(store, replicaId, advertiseUrl, log);
  const presence = new AgentPresence(store, registry, bus, log);
  tenancy?.attachBus(bus, replicaId);
  agents.attachPresence(presence);
  jobs.attachCluster({
    replicaId,
    bus,
    shared: pgUrl !== null,
    activeJobs: async () => (await store.jobsWithStatus(['assigned', 'running'])).map((j) => ({ id: j.id, workspaceId: j.workspaceId })),
    queuedJobs: () => store.jobsWithStatus(['queued']),
    placedJobs: (workspaceId) => store.countJobs(workspaceId, ['assigned', 'running']),
  });
  registry.onTick((dead) => {
    void presence.refresh(agents.connectedAgents(), (id) => agents.figuresOf(id)).catch((e: Error) => log('agent presence refresh failed', { error: e.message }));
    // A replica died: the agents that were on its channel either come to another replica (their jobs go on) or, after
    // the grace period, their unfinished jobs end as errors. One replica (the sweeper) starts those grace periods.
    if (dead.length && registry.isSweeper()) {
      void jobs.agentsWithUnfinishedJobs().then(
        (ids) => agents.expectAgents(ids),
        (e: Error) => log('sweeping after a dead replica failed', { error: e.message }),
      );
    }
  });
  await registry.start();
  log('replica joined', { replicaId, advertiseUrl, bus: pgUrl ? 'postgres' : 'local' });
  return {
    replicaId,
    shared: pgUrl !== null,
    bus,
    registry,
    stop: async () => {
      jobs.detachCluster();
      await registry.stop();
      await bus.close();
    },
  };
}
