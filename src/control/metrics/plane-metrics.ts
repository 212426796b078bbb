/**
 * PlaneMetrics: the control plane's Prometheus metrics. Counters and histograms follow events the plane already has
 * (audit records, job ends on the output hub, denied connections); gauges are read at scrape time from where the
 * truth lives (the fair queue, the agents' pools), so nothing here can drift from the plane's own state.
 */
import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from 'prom-client';
import type { AuditEventInput } from '../audit/chain.js';
import type { Job } from '../model.js';
import type { AgentPool } from '../agents/agent-hub.js';
import { MetricsHistory } from './metrics-history.js';

/** JobCounts are the jobs queued and running (placed, not ended) per workspace id. */
export type JobCounts = () => { queued: Map<string, number>; running: Map<string, number> };

/** AgentsView is what the metrics read of the connected agents (the agent hub). */
export interface AgentsView {
  /** Each connected agent's pool (asks the agents; bounded by the hub's own timeout). */
  pool(): Promise<Record<string, AgentPool>>;
  connectedAgents(): string[];
}

/** AUDIT_COUNTED are the audit events counted as metrics (others are in the audit log only). */
const AUDIT_COUNTED: Record<string, string> = {
  'token.minted': 'minted',
  'token.refreshed': 'refreshed',
  'token.revoked': 'revoked',
};

/** Buckets (seconds) for starts (ms to a cold start's second) and wipes (tens of ms to seconds). */
const START_BUCKETS = [0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10];
/** POOL_SNAPSHOT_MS: one scrape's gauges share the agents' answer for this long. */
const POOL_SNAPSHOT_MS = 1000;
const WIPE_BUCKETS = [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];

/** PlaneMetrics owns one registry (not prom-client's global one: tests build several planes in one process). */
export class PlaneMetrics {
  readonly registry = new Registry();
  /** The last hour in 10 s intervals, for the console's charts. */
  readonly history = new MetricsHistory();
  private readonly jobsEnded: Counter<'status' | 'runtime' | 'workspace'>;
  private readonly startSeconds: Histogram<'runtime'>;
  private readonly wipeSeconds: Histogram<never>;
  private readonly tokens: Counter<'event'>;
  private readonly denied: Counter<'workspace'>;
  private readonly cellsAssigned: Counter<'workspace' | 'runtime'>;

  /** The agent hub, once main has made it (it needs the services first). */
  private agents: AgentsView = { pool: async () => ({}), connectedAgents: () => [] };

  constructor(jobCounts: JobCounts) {
    const registers = [this.registry];
    const agents = () => this.agents;
    collectDefaultMetrics({ register: this.registry, prefix: 'cleanroom_control_' });
    this.jobsEnded = new Counter({ name: 'cleanroom_jobs_ended_total', help: 'Jobs that ended, by final status, runtime and workspace id', labelNames: ['status', 'runtime', 'workspace'], registers });
    this.startSeconds = new Histogram({ name: 'cleanroom_job_start_seconds', help: 'From a job\'s creation to its workload starting in a cell (queueing included)', labelNames: ['runtime'], buckets: START_BUCKETS, registers });
    this.wipeSeconds = new Histogram({ name: 'cleanroom_wipe_seconds', help: 'Crypto-shred of a cell\'s volume, from its wipe receipt', buckets: WIPE_BUCKETS, registers });
    this.tokens = new Counter({ name: 'cleanroom_tokens_total', help: 'Workload tokens minted, refreshed and revoked', labelNames: ['event'], registers });
    this.denied = new Counter({ name: 'cleanroom_network_denied_total', help: 'Connections from cells that the network policy denied, by workspace id', labelNames: ['workspace'], registers });
    this.cellsAssigned = new Counter({ name: 'cleanroom_cells_assigned_total', help: 'Cells handed to a workload, by workspace id and runtime', labelNames: ['workspace', 'runtime'], registers });
    new Gauge({
      name: 'cleanroom_jobs',
      help: 'Jobs queued or running now, by workspace id',
      labelNames: ['state', 'workspace'],
      registers,
      collect() {
        this.reset();
        const { queued, running } = jobCounts();
        for (const [ws, n] of queued) this.set({ state: 'queued', workspace: ws }, n);
        for (const [ws, n] of running) this.set({ state: 'running', workspace: ws }, n);
      },
    });
    new Gauge({
      name: 'cleanroom_agents_connected',
      help: 'Agents connected to this control plane',
      registers,
      collect() {
        this.set(agents().connectedAgents().length);
      },
    });
    // prom-client collects every metric of a scrape concurrently: the three pool gauges share one ask of the agents.
    let asked: { at: number; pools: Promise<Record<string, AgentPool>> } | null = null;
    const poolsNow = () => {
      if (!asked || performance.now() - asked.at > POOL_SNAPSHOT_MS) asked = { at: performance.now(), pools: agents().pool() };
      return asked.pools;
    };
    new Gauge({
      name: 'cleanroom_pool_cells',
      help: 'Cells per agent and pool entry: warm, preparing, busy, and the target',
      labelNames: ['agent', 'pool', 'state'],
      registers,
      async collect() {
        this.reset();
        for (const [agent, p] of Object.entries(await poolsNow())) {
          for (const [pool, e] of Object.entries(p.pool)) for (const state of ['warm', 'preparing', 'busy', 'target'] as const) this.set({ agent, pool, state }, e[state]);
        }
      },
    });
    new Gauge({
      name: 'cleanroom_pool_prepare_failing',
      help: '1 when the last prepare of a pool entry failed',
      labelNames: ['agent', 'pool'],
      registers,
      async collect() {
        this.reset();
        for (const [agent, p] of Object.entries(await poolsNow())) for (const [pool, e] of Object.entries(p.pool)) this.set({ agent, pool }, e.lastError ? 1 : 0);
      },
    });
    new Gauge({
      name: 'cleanroom_volumes',
      help: 'Encrypted volumes per agent by state',
      labelNames: ['agent', 'state'],
      registers,
      async collect() {
        this.reset();
        for (const [agent, p] of Object.entries(await poolsNow())) for (const [state, n] of Object.entries(p.volumes)) this.set({ agent, state }, n);
      },
    });
  }

  /** watchAgents binds the agent hub. */
  watchAgents(view: AgentsView): void {
    this.agents = view;
  }

  /** onAudit counts the audit events that are also metrics. */
  onAudit(e: AuditEventInput): void {
    const event = AUDIT_COUNTED[e.type];
    if (event) this.tokens.inc({ event });
    if (e.type === 'cell.assigned') this.cellsAssigned.inc({ workspace: e.workspaceId ?? '', runtime: String((e.details as { runtime?: unknown } | undefined)?.runtime ?? '') });
    if (e.type === 'wipe.done') {
      const ms = (e.details as { totalMs?: unknown } | undefined)?.totalMs;
      if (typeof ms === 'number') this.wipeSeconds.observe(ms / 1000);
    }
  }

  /** onJobEnded counts a job's end and observes its start latency. */
  onJobEnded(job: Job): void {
    this.jobsEnded.inc({ status: job.status, runtime: job.runtime, workspace: job.workspaceId });
    const startMs = job.startedAt ? Math.max(0, Date.parse(job.startedAt) - Date.parse(job.createdAt)) : null;
    if (startMs !== null) this.startSeconds.observe({ runtime: job.runtime }, startMs / 1000);
    this.history.jobEnded(startMs);
  }

  /** onDenied counts denied connections of a workspace. */
  onDenied(workspaceId: string, n: number): void {
    this.denied.inc({ workspace: workspaceId }, n);
  }

  /** render is the text exposition format. */
  render(): Promise<string> {
    return this.registry.metrics();
  }

  get contentType(): string {
    return this.registry.contentType;
  }
}
