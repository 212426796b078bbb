/** JobService owns the life of job records: create, read, cancel, and the agents' reports. */
import { ApiError } from '../../shared/errors.js';
import type { JobEnd, JobSpec, WipeReceipt, WorkloadCredentials } from '../../shared/wire.js';
import type { AuditLog } from '../audit/audit-log.js';
import type { TokenService, TokenSubject } from '../tokens/token-service.js';
import { TERMINAL_STATUSES, type ImageRecord, type Job, type OutputChunk, type TokenRecord, type SandboxEndRequest, type SandboxFields, type Workspace, type WorkloadMode } from '../model.js';
import type { Store } from '../store/store.js';
import type { NetworkPolicyService } from '../network/network-policy-service.js';
import type { OutputHub } from './output-hub.js';
import type { Quotas } from '../quotas/quotas.js';
import { resolveJobRequest, type JobDefaults, type JobRequest, type ResolvedJob } from './job-request.js';
import type { JobImageChoice } from '../images/image-service.js';
import type { Bus } from '../cluster/bus.js';
import type { BusMessage } from '../cluster/bus-messages.js';
import { atItem, checkBatchQuota, firstFailure } from './job-batch.js';
import { newJob } from './new-job.js';

/** ImageResolver picks a job's image (the image service implements it): null is the host root. */
export interface ImageResolver {
  forJob(ws: Workspace, ref: string | undefined): Promise<{ record: ImageRecord; ref: string } | null>;
}

/** Dispatcher places jobs on agents; the agent hub implements it. */
export interface Dispatcher {
  /** canDispatch reports whether any agent is connected and has room for another job. */
  canDispatch(): boolean;
  /** reserve picks an agent with room for the job and holds a slot on it; null if none has room. */
  reserve(spec: JobSpec): string | null;
  /** assign sends a reserved job and its credentials to its agent; false if the agent went away (its slot is freed). */
  assign(agentId: string, spec: JobSpec, credentials: WorkloadCredentials): boolean;
  /** release frees a reserved slot that will not be used. */
  release(agentId: string, jobId: string): void;
  /** holds says whether the agent is connected to this replica. */
  holds(agentId: string): boolean;
  /** refreshCredentials hands a running job a fresh token. */
  refreshCredentials(agentId: string, jobId: string, credentials: WorkloadCredentials): void;
  /** cancel asks the job's agent to stop it. */
  cancel(agentId: string, jobId: string): void;
  /** checkOffered throws (runtime_not_offered, size_not_offered) when no agent of the fleet could ever run such a workload. */
  checkOffered?(needs: Pick<JobSpec, 'runtime' | 'cpu' | 'memoryBytes' | 'diskBytes'>): Promise<void>;
}

/**
 * JobCluster is what the job service needs of the replica set: this replica's id, the bus, whether the store is shared
 * with other replicas (then the running quota is checked against the store), and a clear view of the store (no
 * unsealing) for counting.
 */
export interface JobCluster {
  replicaId: string;
  bus: Bus;
  shared: boolean;
  /** activeJobs lists the ids and workspaces of every assigned or running job in the store. */
  activeJobs(): Promise<Array<{ id: string; workspaceId: string }>>;
  /** placedJobs counts a workspace's assigned and running jobs in the store. */
  placedJobs(workspaceId: string): Promise<number>;
  /** queuedJobs lists every queued job in the store (oldest first). */
  queuedJobs(): Promise<Job[]>;
}

/** RESYNC_MS is how often a replica of a shared store merges the store's queue into its own (a missed bus message costs no more). */
const RESYNC_MS = 5000;
/** OUTPUT_NOTIFY_MS coalesces the bus's "output stored up to seq" messages of a job. */
const OUTPUT_NOTIFY_MS = 20;

/** isTerminal reports whether a job has ended. */
export function isTerminal(job: Job): boolean {
  return TERMINAL_STATUSES.includes(job.status);
}

/** JobService is the only writer of job state. */
export class JobService {
  private readonly nextSeq = new Map<string, number>();
  /** Jobs being placed right now (minting their token, sending them to an agent). */
  private readonly placing = new Set<string>();
  /**
   * The control plane's timings of each job sent to an agent from here and not yet heard of since: placing writes them
   * nowhere (no write after the dispatch), the job's first report here (its start, or an end) or an end of the control
   * plane's (end) writes them with the job. Every entry goes at the job's start or end. A job whose first report reaches
   * another replica (its agent moved between the assign and the start) is stored without them.
   */
  private readonly placeTimings = new Map<string, Record<string, number>>();
  /** What was heard of jobs of `placing` meanwhile (their start or end here): an end wins. */
  private readonly placingNews = new Map<string, { kind: 'started' } | { kind: 'ended'; job: Job; byAgent: boolean }>();
  /** Jobs of `placing` whose cancel was sent meanwhile: the agent may hear it before the job, so it is told again. */
  private readonly cancelledWhilePlacing = new Set<string>();
  /**
   * The agent each unfinished job was sent to, known from the moment it is sent (before the store says so): an agent's
   * reports about a job apply only if the job is its own. A cache of the store's agentId, bounded by OWNERS_KEPT.
   */
  private readonly owners = new Map<string, string>();
  private dispatcher: Dispatcher | null = null;
  /**
   * The fair queue: per workspace, its queued jobs in arrival order; workspaces take turns (round robin). Each is the
   * record as read when it was queued: what a job runs does not change while it waits, and whether it still waits is
   * the store's claim to judge (a job ended while queued is also dropped from here by its end).
   */
  private readonly queued = new Map<string, Job[]>();
  /** Jobs placed on an agent and not ended, per workspace (the running quota counts these). */
  private readonly active = new Map<string, Set<string>>();
  private turn = 0;
  private restored: Promise<void> | null = null;
  private cluster: JobCluster | null = null;
  /** Per job, the highest stored seq not yet announced on the bus. */
  private readonly outputToAnnounce = new Map<string, number>();
  private announceTimer: NodeJS.Timeout | null = null;
  private resyncTimer: NodeJS.Timeout | null = null;

  constructor(
    private readonly store: Store,
    private readonly hub: OutputHub,
    private readonly quotas: Quotas,
    private readonly defaults: JobDefaults,
    private readonly network: NetworkPolicyService,
    private readonly tokens: TokenService,
    private readonly audit: AuditLog,
    private readonly images: ImageResolver | null = null,
  ) {}

  /** attach connects the dispatcher (the agent hub), which is built after the service. */
  attach(dispatcher: Dispatcher): void {
    this.dispatcher = dispatcher;
  }

  /**
   * attachCluster joins the replica set: what this replica does is announced on the bus, what the others announce is
   * applied here (queued jobs are placed by whichever replica has an agent with room; live streams and lifecycle
   * watchers hear starts, output and ends from everywhere). With a shared store the queue is also resynced from it.
   */
  attachCluster(cluster: JobCluster): void {
    this.cluster = cluster;
    cluster.bus.subscribe((msg) => {
      if (msg.from === cluster.replicaId) return;
      void this.onBus(msg).catch(() => {});
    });
    if (cluster.shared) {
      this.resyncTimer = setInterval(() => void this.resync().catch(() => {}), RESYNC_MS);
      this.resyncTimer.unref();
    }
  }

  /** detachCluster stops the periodic work (at shutdown). */
  detachCluster(): void {
    if (this.resyncTimer) clearInterval(this.resyncTimer);
    if (this.announceTimer) clearTimeout(this.announceTimer);
  }

  private announce(msg: BusMessage): void {
    this.cluster?.bus.publish(msg);
  }

  private async onBus(msg: BusMessage): Promise<void> {
    switch (msg.type) {
      case 'job.queued': {
        await this.restore();
        if (this.isQueuedHere(msg.jobId)) return;
        const job = await this.store.getJob(msg.jobId);
        if (job?.status !== 'queued') return;
        this.enqueue(job);
        this.pump();
        return;
      }
      case 'job.output':
        // Another replica stored output of the job (its agent reports there now): the next seq known here is stale. Its
        // next chunk reported here (the agent may come back) reads the store's last seq, and a stream opened here replays
        // from the store (untouched).
        this.nextSeq.delete(msg.jobId);
        this.hub.publish(msg.jobId, { type: 'stored', seq: msg.seq });
        return;
      case 'job.started': {
        if (!this.followed(msg.jobId)) return;
        const job = await this.store.getJob(msg.jobId);
        if (job) this.hub.publish(msg.jobId, { type: 'started', job, remote: true });
        return;
      }
      case 'job.ended': {
        // The bookkeeping needs only the id; the record is read only for those here who follow the job.
        const id = msg.jobId;
        // A job this replica placed may end on another (its agent moved there): its place here is free again.
        const wsId = [...this.active].find(([, set]) => set.has(id))?.[0];
        if (wsId !== undefined) this.deactivate({ id, workspaceId: wsId } as Job);
        this.dropQueuedId(id); // ended while it waited here too (cancelled through another replica)
        this.placeTimings.delete(id);
        this.owners.delete(id);
        this.nextSeq.delete(id);
        // Its tokens were revoked where it ended; a refresh placed here would go on minting for an ended job.
        this.tokens.stopRefresh(id);
        if (this.followed(id)) {
          const job = await this.store.getJob(id);
          if (job && isTerminal(job)) this.hub.publish(id, { type: 'end', job, remote: true });
        }
        this.pump();
        return;
      }
      case 'agent.admin':
        return; // the agent hub's (AgentPresence)
      case 'api_key.revoked':
        return; // the tenancy service's
      case 'agent.cancel':
        if (this.placing.has(msg.jobId)) this.cancelledWhilePlacing.add(msg.jobId);
        if (this.dispatcher?.holds(msg.agentId)) this.dispatcher.cancel(msg.agentId, msg.jobId);
        return;
      default:
        assertNever(msg);
    }
  }

  /**
   * followed says whether a start or an end heard from another replica must be read and published here: a live stream
   * of the job is open here, or it is a sandbox (the sandbox relays watch every sandbox's lifecycle).
   */
  private followed(jobId: string): boolean {
    return jobId.startsWith('sbx_') || this.hub.listening(jobId);
  }

  private isQueuedHere(jobId: string): boolean {
    if (this.inPump.has(jobId)) return true;
    for (const q of this.queued.values()) if (q.some((j) => j.id === jobId)) return true;
    return false;
  }

  /**
   * resync merges the store's queue into this replica's (jobs queued by a replica that died, or whose bus message was
   * lost) and frees the places of jobs that ended elsewhere; then it pumps.
   */
  private async resync(): Promise<void> {
    const c = this.cluster;
    if (!c) return;
    await this.restore();
    const active = new Set((await c.activeJobs()).map((j) => j.id));
    for (const [wsId, set] of this.active) {
      for (const id of set) if (!active.has(id) && !this.placing.has(id)) this.deactivate({ id, workspaceId: wsId } as Job);
    }
    if (!this.dispatcher?.canDispatch()) return;
    for (const { id } of await c.queuedJobs()) {
      if (this.isQueuedHere(id) || this.placing.has(id)) continue;
      // Read through this service's store: the cluster's view is the sealed record (no command, no env).
      const job = await this.store.getJob(id);
      if (job?.status === 'queued' && !this.isQueuedHere(id) && !this.placing.has(id)) this.enqueue(job);
    }
    this.pump();
  }

  /** cancelOnAgent asks the job's agent to stop it: directly when it is on this replica's channel, else through its replica. */
  private cancelOnAgent(agentId: string, jobId: string): void {
    const d = this.dispatcher;
    if (this.placing.has(jobId)) this.cancelledWhilePlacing.add(jobId);
    if (d?.holds(agentId)) d.cancel(agentId, jobId);
    else if (this.cluster) this.announce({ type: 'agent.cancel', from: this.cluster.replicaId, agentId, jobId });
  }

  /** counts are the jobs queued and running (placed, not ended) per workspace id, as the fair queue holds them. */
  counts(): { queued: Map<string, number>; running: Map<string, number> } {
    return {
      queued: new Map([...this.queued].map(([ws, q]) => [ws, q.length])),
      running: new Map([...this.active].map(([ws, s]) => [ws, s.size])),
    };
  }

  /**
   * create validates and records a job, and queues it: it starts at once when its workspace is under its running
   * quota and an agent has room, else it waits its turn. A full queue is refused (429 quota_exceeded).
   */
  async create(ws: Workspace, req: JobRequest, actor: string): Promise<Job> {
    const chosen = await this.imageFor(ws, req.image);
    return this.admit(ws, resolveJobRequest(req, ws, this.defaults, chosen?.record ?? null), actor, 'job', undefined, chosen);
  }

  /** imageFor resolves the image a workload names (or the default one); null is the host root. */
  imageFor(ws: Workspace, ref: string | undefined): Promise<JobImageChoice> {
    return this.images ? this.images.forJob(ws, ref) : Promise.resolve(null);
  }

  /**
   * admit records a resolved workload (a job, or a sandbox with its own fields) and queues it exactly as a job: same
   * quotas, same fair queue, same placement, token and end paths. A sandbox's id starts with `sbx_`. `chosen` is the
   * image it runs on (null: the host root).
   */
  async admit(ws: Workspace, r: ResolvedJob, actor: string, mode: WorkloadMode, sandbox?: SandboxFields, chosen: JobImageChoice = null): Promise<Job> {
    await this.restore();
    await this.dispatcher?.checkOffered?.(r);
    const quota = this.quotas.of(ws);
    // Creates on their way (past this check, not yet running or queued: they await the store) count too, each taking
    // the running quota's room first and then a place in the queue, so that concurrent creates cannot all pass the
    // check before any of them is queued.
    const admitting = this.admitting.get(ws.id) ?? 0;
    checkBatchQuota({ waiting: this.queued.get(ws.id)?.length ?? 0, active: this.active.get(ws.id)?.size ?? 0, admitting, maxRunning: quota.maxRunningJobs, maxQueued: quota.maxQueuedJobs }, 1);
    this.admitting.set(ws.id, admitting + 1);
    let counted = true;
    /** settle ends this create's count in `admitting` (once): it is running or queued now, or failed. */
    const settle = (): void => {
      if (!counted) return;
      counted = false;
      const n = (this.admitting.get(ws.id) ?? 1) - 1;
      if (n > 0) this.admitting.set(ws.id, n);
      else this.admitting.delete(ws.id);
    };
    try {
      // The policy this replica last read of the workspace, if any, is used at once; the read of the one in force now goes
      // on beside the job's writes, and the job is neither sent (direct) nor recorded (queued) before it has agreed.
      const policy = this.network.policyNow(ws.id);
      policy.current.catch(() => {}); // heard where it is awaited
      const egress = policy.last ?? (await policy.current);
      const job = newJob(ws, r, egress, chosen, mode, sandbox);
      // The common case (room for it now) is placed in this call, so the client's created event says where it went; its
      // agent slot is reserved first, and the job recorded as assigned to it at once (one write, no claim).
      this.maxRunningOf.set(ws.id, quota.maxRunningJobs);
      const d = this.dispatcher;
      const direct = this.hasRoom(ws.id) && !this.queued.get(ws.id)?.length && d?.canDispatch() === true;
      const spec = specOf(job, this.defaults.outputLimitBytes);
      const agentId = direct ? d!.reserve(spec) : null;
      if (agentId) {
        settle();
        this.activate(job); // its place in the running quota, taken before any await
      }
      // The audit log is never shredded: nothing of the job's command or env goes into it.
      const audit = () => this.audit.record({ type: 'workload.created', actor, workspaceId: ws.id, subject: job.id, details: { runtime: job.runtime, data: job.dataGrants, image: job.image?.digest ?? null, ...(mode === 'sandbox' ? { mode } : {}) } });
      if (agentId) {
        // The row, its audit event and the job's token are written at once (on SQLite in one commit; on a shared store the
        // row and the token in one statement, once place has signed the token, beside the event), the event first so that
        // the chain says created before minted; the agent is sent the job only once the row and the token are both stored.
        // On a shared store the row comes back with its workspace's count of placed jobs, taken race-free in the same round
        // trip (Store.createPlacedJob): the running quota across replicas costs the placement no round trip of its own.
        const row: Job = { ...job, status: 'assigned', agentId };
        const withToken = this.cluster?.shared ? rowWithToken(this.store, row) : undefined;
        const placedCount = withToken ? withToken.count : this.store.createJob(row).then(() => null);
        const recorded = placedCount.then(() => undefined);
        const audited = audit();
        // The policy changed since this replica last read it (on any replica): the job runs with the one in force now.
        const policyAgreed = policy.current.then(async (now) => {
          if (JSON.stringify(now) === JSON.stringify(job.egress)) return;
          job.egress = spec.egress = now;
          await recorded;
          await this.store.updateJob(job.id, { egress: now });
        });
        policyAgreed.catch(() => {}); // heard in place, once the row is stored
        let placed: Job;
        try {
          placed = await this.place(job, performance.now(), { agentId, spec, recorded, counted: placedCount, before: policyAgreed, withToken }).finally(() => audited);
        } catch (e) {
          // Not recorded: it holds no place (place released its agent slot).
          if (!(await recorded.then(() => true, () => false))) this.deactivate(job);
          throw e;
        }
        if (placed.status === 'queued') {
          this.deactivate(job);
          this.enqueue(job);
          this.announceQueued(job.id);
        }
        return placed;
      }
      job.egress = await policy.current;
      await this.store.createJob(job);
      // Written once the job exists (the chain's order is the store's).
      await audit();
      settle();
      this.enqueue(job);
      this.pump();
      this.announceQueued(job.id);
      return (await this.store.getJob(job.id)) ?? job;
    } finally {
      settle();
    }
  }

  /** announceQueued tells the other replicas that a job waits (one of them may have an agent with room). */
  private announceQueued(jobId: string): void {
    if (this.cluster) this.announce({ type: 'job.queued', from: this.cluster.replicaId, jobId });
  }

  /** restore rebuilds the queue and the running counts from the store (once, at start). */
  restore(): Promise<void> {
    this.restored ??= (async () => {
      for (const j of await this.store.jobsWithStatus(['assigned', 'running'])) this.activate(j);
      for (const j of await this.store.jobsWithStatus(['queued'])) this.enqueue(j);
    })();
    return this.restored;
  }

  /** hasRoom says whether a workspace is under its running quota (create records the quota of each workspace it sees). */
  private hasRoom(wsId: string): boolean {
    return (this.active.get(wsId)?.size ?? 0) < (this.maxRunningOf.get(wsId) ?? 0);
  }

  /** Per workspace, the creates past the queue-quota check that are not running or queued yet. */
  private readonly admitting = new Map<string, number>();

  /** The running quota of each workspace that has created jobs (the pump has no Workspace at hand). */
  private readonly maxRunningOf = new Map<string, number>();

  /**
   * enqueue adds a job to its workspace's queue without its command, env and cwd: what a waiting job runs stays sealed in
   * the store until it is placed (place reads it then), not in this process's memory for as long as it waits.
   */
  private enqueue(job: Job): void {
    const q = this.queued.get(job.workspaceId) ?? [];
    q.push({ ...job, command: [], env: {}, cwd: '' });
    this.queued.set(job.workspaceId, q);
  }

  private activate(job: Job): void {
    const set = this.active.get(job.workspaceId) ?? new Set<string>();
    set.add(job.id);
    this.active.set(job.workspaceId, set);
  }

  private deactivate(job: Job): void {
    const set = this.active.get(job.workspaceId);
    set?.delete(job.id);
    if (set && set.size === 0) this.active.delete(job.workspaceId);
  }

  /**
   * pump places queued jobs while agents have room, taking workspaces in turn; each within its running quota. Up to
   * MAX_PLACING placements are in flight at once (each is a few store round trips, mostly waiting on the store): a job's
   * place in its workspace's quota and its slot on an agent are taken before any await, so concurrent placements never
   * overshoot either, and the store's claim (queued → assigned) places each job at most once. A job no agent with room
   * can take goes back to its place in its queue and jobs with its needs are passed over until the next prompt (an agent
   * with room, a job ended, a job queued); a placement that fails later (on a shared store, no room in the quota after all) stops
   * the pump until then.
   */
  private pump(): void {
    this.stalled = false;
    this.noRoomFor.clear();
    this.fill();
  }

  /**
   * fill starts placements while there is room for more in flight, an agent with room and a queued job in turn. The
   * job's agent slot is reserved here, with its quota place (no await in between); when no agent has room for it, it
   * goes back to its place in its queue at once.
   */
  private fill(): void {
    const d = this.dispatcher;
    while (!this.stalled && this.inPump.size < MAX_PLACING && d?.canDispatch()) {
      const job = this.takeQueued();
      if (!job) break;
      if (this.placing.has(job.id)) {
        this.deactivate(job); // already being placed (by its create): not twice
        continue;
      }
      const spec = specOf(job, this.defaults.outputLimitBytes);
      const agentId = d.reserve(spec);
      if (!agentId) {
        // No agent with room offers what this job needs (its runtime, size, image): jobs with those needs wait for the
        // next prompt, the others go on (a job for a busy runtime must not hold up work another agent has room for).
        this.putBack(job);
        this.noRoomFor.add(needsOf(job));
        continue;
      }
      this.inPump.add(job.id);
      void this.place(job, performance.now(), { agentId, spec })
        .then(
          (placed) => (placed.status === 'queued' ? 'back' : isTerminal(placed) ? 'gone' : 'placed'),
          () => 'back' as const,
        )
        .then((outcome) => {
          this.inPump.delete(job.id);
          // Not placed after all (no room in the quota across replicas, the agent went away, the store failed): back to
          // its place in its queue, and wait for the next prompt. Should it have been claimed meanwhile, the next try
          // finds it no longer queued.
          if (outcome === 'back') {
            this.putBack(job);
            this.stalled = true;
          } else if (outcome === 'gone') {
            this.deactivate(job); // it ended while it waited (cancelled)
          }
          this.fill();
        });
    }
    if (this.unknownQuotas.size === 0) return;
    // Workspaces queued here that this replica never saw a create of: read their running quota, then pump again.
    const ids = [...this.unknownQuotas];
    this.unknownQuotas.clear();
    void Promise.all(ids.map(async (wsId) => {
      const ws = await this.store.getWorkspace(wsId);
      this.maxRunningOf.set(wsId, ws ? this.quotas.of(ws).maxRunningJobs : 0);
    })).then(() => this.fill(), () => {});
  }

  /** dropQueuedId is dropQueued when only the job's id is known (its workspace's queue is searched for it). */
  private dropQueuedId(jobId: string): void {
    for (const q of this.queued.values()) {
      const j = q.find((x) => x.id === jobId);
      if (j) return this.dropQueued(j);
    }
  }

  /** dropQueued takes a job that will not run (it ended while it waited) out of the queue. */
  private dropQueued(job: Job): void {
    const q = this.queued.get(job.workspaceId);
    const i = q?.findIndex((j) => j.id === job.id) ?? -1;
    if (i < 0) return;
    q!.splice(i, 1);
    if (q!.length === 0) this.queued.delete(job.workspaceId);
  }

  /**
   * putBack returns a job taken from the queue to its place in arrival order (takeQueued may have passed over older jobs
   * to take it), and frees its quota place.
   */
  private putBack(job: Job): void {
    this.deactivate(job);
    const q = this.queued.get(job.workspaceId) ?? [];
    const later = q.findIndex((j) => j.createdAt > job.createdAt);
    q.splice(later < 0 ? q.length : later, 0, job);
    this.queued.set(job.workspaceId, q);
  }

  /** Placements the pump has in flight (taken from the queue, not yet placed or put back). */
  private readonly inPump = new Set<string>();
  private stalled = false;
  /** Needs (needsOf) no agent with room could take in this pump: jobs with them are skipped until the next prompt. */
  private readonly noRoomFor = new Set<string>();
  /** Workspaces with queued jobs whose running quota is not known here yet (being read). */
  private readonly unknownQuotas = new Set<string>();

  /**
   * takeQueued takes the oldest queued job of the next workspace (round robin) that is under its running quota, and
   * takes its place in the workspace's quota at once (no await), so a concurrent create or placement cannot take it too.
   */
  private takeQueued(): Job | null {
    const wsIds = [...this.queued.keys()];
    for (let i = 0; i < wsIds.length; i++) {
      const wsId = wsIds[(this.turn + i) % wsIds.length]!;
      if (!this.maxRunningOf.has(wsId)) {
        this.unknownQuotas.add(wsId);
        continue;
      }
      const q = this.queued.get(wsId);
      if (!q || q.length === 0 || !this.hasRoom(wsId)) continue;
      // The oldest job whose needs some agent may still have room for (queues are short: bounded by maxQueuedJobs).
      const at = this.noRoomFor.size === 0 ? 0 : q.findIndex((j) => !this.noRoomFor.has(needsOf(j)));
      if (at < 0) continue;
      const job = q.splice(at, 1)[0]!;
      if (q.length === 0) this.queued.delete(wsId);
      this.activate(job);
      this.turn = (this.turn + i + 1) % wsIds.length;
      return job;
    }
    return null;
  }

  // The token is minted only when an agent can take the job, and lives only as long as the job runs. The job is claimed
  // in the store first (queued → assigned, atomically), so of the replicas or calls racing for one queued job exactly one
  // places it; it is judged again after signing (it may have been cancelled meanwhile).
  //
  // The caller reserved the agent slot (`agentId`, before any await). `recorded`: create is recording the job as assigned
  // to that agent in the first place (no claim needed: no one else knew the job); its token is minted meanwhile, and the
  // job is sent once both are stored (and `before` has resolved). `counted`: that write's count of the workspace's placed
  // jobs (Store.createPlacedJob; null: not counted there). `withToken`: that write is made here, with the job's token, as
  // the token's record. Rejects, with the slot released and the token revoked, if the row is not stored.
  private async place(
    job: Job,
    t0: number,
    { agentId, spec: reserved, recorded, counted, before, withToken }: { agentId: string; spec: JobSpec; recorded?: Promise<void>; counted?: Promise<number | null>; before?: Promise<void>; withToken?: RowWithToken },
  ): Promise<Job> {
    let spec = reserved;
    const d = this.dispatcher!;
    this.placing.add(job.id);
    try {
      if (!recorded && !(await this.store.claimJob(job.id, 'queued', { status: 'assigned', agentId }))) {
        d.release(agentId, job.id);
        return (await this.store.getJob(job.id)) ?? job;
      }
      this.remember(job.id, agentId);
      const unclaim = async (): Promise<Job> => {
        d.release(agentId, job.id);
        this.placeTimings.delete(job.id);
        this.owners.delete(job.id);
        await this.store.claimJob(job.id, 'assigned', { status: 'queued', agentId: null });
        return (await this.store.getJob(job.id)) ?? job;
      };
      // With a shared store another replica may have filled the workspace's running quota meanwhile: counted after the claim
      // (or with the row, under the workspace's quota lock: Store.createPlacedJob), so of two placements racing for the last
      // place at least one sees both (and goes back to the queue).
      const withinQuota = async (placed?: number | null): Promise<boolean> => !this.cluster?.shared || (await this.withinQuota(job, placed ?? undefined));
      if (!recorded) {
        if (!(await withinQuota())) return await unclaim();
        // From the queue (held there without what it runs): read and unsealed now, for its agent only.
        const full = await this.store.getJob(job.id).catch(() => null);
        if (!full) return await unclaim();
        spec = specOf(full, this.defaults.outputLimitBytes);
      }
      // The control plane's own times run from the job's row stored (create's insert, or the claim).
      const ready = recorded?.then(() => before).then(async () => ((t0 = performance.now()), withinQuota(await counted)));
      const subject = subjectOf(job);
      let sent = false;
      // A job being placed has no output yet: its first chunk needs no read of the last one (a quick agent's output can
      // come before the mint below returns).
      if (!this.nextSeq.has(job.id)) this.nextSeq.set(job.id, 1);
      try {
        await this.tokens.mint(
          subject,
          'minted',
          (credentials) => {
            const tMinted = performance.now();
            sent = d.assign(agentId, spec, credentials);
            // Known before the agent can answer: its started report (on this replica's channel) records them if it comes first.
            if (sent) this.placeTimings.set(job.id, { control_token_ms: round(tMinted - t0), control_dispatch_ms: round(performance.now() - t0) });
          },
          ready,
          withToken?.write,
        );
      } catch (e) {
        withToken?.abandon(e); // no token was signed: the row is not written either
        if (!recorded || (await recorded.then(() => true, () => false))) throw e;
        // The job's row was not stored: nothing of it runs anywhere, and its token (if recorded) is void.
        d.release(agentId, job.id);
        this.placeTimings.delete(job.id);
        this.nextSeq.delete(job.id);
        this.owners.delete(job.id);
        await this.tokens.revokeJob(job.id, job.workspaceId, 'the job could not be recorded').catch(() => {});
        throw e;
      }
      if (!sent) {
        await this.tokens.revokeJob(job.id, job.workspaceId, 'no agent took the job');
        return await unclaim();
      }
      // Cancelled between the claim and the assign: the agent heard the cancel before the job, so it is told again.
      if (this.cancelledWhilePlacing.delete(job.id)) d.cancel(agentId, job.id);
      // Kept fresh from now: an end from here on stops it (revokeJob), whichever comes first; an end heard already did.
      if (this.placingNews.get(job.id)?.kind !== 'ended') this.tokens.keepFresh(subject, (c) => d.refreshCredentials(agentId, job.id, c), undefined, this.liveCheck(job.id));
      const placedTimings = this.placeTimings.get(job.id);
      const timings = { ...job.timings, ...placedTimings };
      // A quick agent reported the job here already: its start wrote these timings, and an end it reported came after the
      // assign (so after the token was stored: the end revoked it).
      const news = this.placingNews.get(job.id);
      if (news?.kind === 'started') return { ...job, status: 'running', agentId, timings };
      if (news?.kind === 'ended' && news.byAgent) return news.job;
      if (news?.kind === 'ended') {
        // Ended here while it was placed (its agent lost, say): the end may have revoked the job's tokens before this one
        // was stored, and the agent may have the job.
        this.placeTimings.delete(job.id);
        await this.tokens.revokeJob(job.id, job.workspaceId, 'the job ended while it was being placed');
        d.cancel(agentId, job.id);
        return news.job;
      }
      // No write here (the start's path waits for nothing more): the timings go on the job with its agent's first report
      // of it, a start or an end (onReport), which also finds a job ended elsewhere meanwhile and has the agent stop it.
      return { ...job, status: 'assigned', agentId, timings };
    } finally {
      withToken?.abandon(new Error('the job was not placed'));
      this.placing.delete(job.id);
      this.cancelledWhilePlacing.delete(job.id);
      this.placingNews.delete(job.id);
    }
  }

  /** withinQuota counts the workspace's placed jobs in the store (this one included; or takes `placed`, counted so) against its running quota. */
  private async withinQuota(job: Job, placed?: number): Promise<boolean> {
    const max = this.maxRunningOf.get(job.workspaceId) ?? 0;
    return (placed ?? (await this.cluster!.placedJobs(job.workspaceId))) <= max;
  }

  /** resumeCredentials gives the live jobs of a (re)connected agent fresh tokens and keeps them fresh. */
  async resumeCredentials(agentId: string, liveJobIds: readonly string[]): Promise<void> {
    for (const id of liveJobIds) {
      const job = await this.store.getJob(id);
      if (!job || isTerminal(job) || job.agentId !== agentId || !this.dispatcher) continue;
      const d = this.dispatcher;
      const subject = subjectOf(job);
      const credentials = await this.tokens.mint(subject, 'refreshed');
      const current = await this.store.getJob(id);
      if (!current || isTerminal(current)) {
        await this.tokens.revokeJob(id, job.workspaceId, 'the job ended while its token was refreshed');
        continue;
      }
      d.refreshCredentials(agentId, job.id, credentials);
      this.tokens.keepFresh(subject, (c) => d.refreshCredentials(agentId, job.id, c), undefined, this.liveCheck(job.id));
    }
  }

  /** liveCheck reads whether a job is still unfinished in the store (asked by its token's refresh: it may end anywhere). */
  private liveCheck(jobId: string): () => Promise<boolean> {
    return async () => {
      const job = await this.store.getJob(jobId);
      return job !== null && !isTerminal(job);
    };
  }

  /** get returns a job of the workspace, or 404 — also for another workspace's job. */
  async get(ws: Workspace, id: string): Promise<Job> {
    const job = await this.store.getJob(id);
    if (!job || job.workspaceId !== ws.id) throw new ApiError('not_found', `no job ${id} in this workspace`);
    return job;
  }

  /** list returns the workspace's newest jobs. */
  list(ws: Workspace, limit: number): Promise<Job[]> {
    return this.store.listJobs(ws.id, limit);
  }

  /** cancel stops a job; a finished job cannot be cancelled (409). */
  async cancel(ws: Workspace, id: string): Promise<Job> {
    const job = await this.get(ws, id);
    if (isTerminal(job)) throw new ApiError('conflict', `job ${id} already ended as ${job.status}`);
    if (job.status === 'queued' || !job.agentId) {
      await this.end(job.id, { reason: 'cancelled', exitCode: null, signal: null, message: 'cancelled before it started' }, {});
    } else {
      await this.store.updateJob(job.id, { cancelRequested: true });
      this.cancelOnAgent(job.agentId, job.id);
    }
    return this.get(ws, id);
  }

  /**
   * requestEnd ends a sandbox for a reason of the control plane's (delete, idle): recorded first, so that the end the
   * agent then reports (cancelled) is told apart; a sandbox not placed yet ends at once. Ended already: no-op.
   */
  async requestEnd(id: string, why: SandboxEndRequest): Promise<void> {
    const job = await this.store.getJob(id);
    if (!job || isTerminal(job) || !job.sandbox) return;
    await this.store.updateJob(id, { sandbox: { ...job.sandbox, endRequested: job.sandbox.endRequested ?? why }, cancelRequested: true });
    const message = why === 'idle' ? `idle for ${job.sandbox.idleTimeoutSeconds} s: no API activity and no running process` : 'deleted';
    if (job.status === 'queued' || !job.agentId) await this.end(id, { reason: 'cancelled', exitCode: null, signal: null, message }, {});
    else this.cancelOnAgent(job.agentId, id);
  }

  /** setDeadline records a sandbox's new deadline (the caller tells its agent). */
  async setDeadline(job: Job, timeoutSeconds: number): Promise<Job> {
    if (!job.sandbox) return job;
    const sandbox = { ...job.sandbox, endsAt: new Date(Date.now() + timeoutSeconds * 1000).toISOString() };
    await this.store.updateJob(job.id, { sandbox });
    return { ...job, sandbox };
  }

  /** output returns up to `limit` stored chunks after `afterSeq`. */
  output(job: Job, afterSeq: number, limit: number): Promise<OutputChunk[]> {
    return this.store.output(job.id, afterSeq, limit);
  }

  /** expireEnded crypto-shreds the jobs that ended more than `retentionMs` ago: output deleted, job key destroyed. */
  async expireEnded(retentionMs: number, batch = 500): Promise<number> {
    const before = new Date(Date.now() - retentionMs).toISOString();
    let n = 0;
    for (;;) {
      const ids = await this.store.jobsEndedBefore(before, batch);
      for (const id of ids) await this.store.expireJob(id, new Date().toISOString());
      n += ids.length;
      if (ids.length < batch) return n;
    }
  }

  /** dispatchQueued places queued jobs (called when an agent connects and so has room). */
  async dispatchQueued(): Promise<void> {
    await this.restore();
    this.pump();
  }

  /** remember notes which agent a job was sent to. */
  private remember(jobId: string, agentId: string): void {
    if (this.owners.size >= OWNERS_KEPT) this.owners.clear(); // only a cache: the store knows every job's agent
    this.owners.set(jobId, agentId);
  }

  /**
   * untouched says whether the job was placed by this replica and, as far as any replica has told it, has neither output
   * (none stored or on its way to the store: output stored elsewhere drops the job's next seq here, onBus) nor an end: a
   * stream subscribed now misses nothing of it, unless the bus lost another replica's message (the stream reads the
   * job's status later, routes/jobs.ts).
   */
  untouched(jobId: string): boolean {
    return this.owners.has(jobId) && this.nextSeq.get(jobId) === 1;
  }

  /** ownedBy says whether a job is the agent's own and unfinished (reports about any other job are ignored). */
  private async ownedBy(agentId: string, jobId: string): Promise<boolean> {
    const owner = this.owners.get(jobId);
    if (owner !== undefined) return owner === agentId;
    const job = await this.store.getJob(jobId);
    if (!job || isTerminal(job) || job.agentId === null) return false;
    this.remember(jobId, job.agentId);
    return job.agentId === agentId;
  }

  /** onStarted records that the agent handed the job to a cell; ignored unless the job is the agent's own. */
  async onStarted(agentId: string, jobId: string, cellId: string, timings: Record<string, number>): Promise<void> {
    await this.onReport(agentId, { jobId, started: { cellId, timings } });
  }

  /** onOutput stores and publishes a chunk of output of a running job of the agent; anything else is ignored. */
  async onOutput(agentId: string, jobId: string, stream: 'stdout' | 'stderr', data: Buffer): Promise<void> {
    await this.onReport(agentId, { jobId, output: [{ stream, data }] });
  }

  /**
   * writeOutput stores chunks of a job's output (resolving with them, numbered); publishOutput then shows them. Stored
   * first: a follower never sees a chunk the store may not hold (on PostgreSQL the write is a round trip, and a replica
   * that dies before it commits must not have shown the chunk: a stream resumed on another replica goes on from the
   * store). A stream that subscribes between the two finds them in its replay (seq dedups). The chunks of one call go in
   * one batch of the store's; their seqs are taken before the first await when the job's next seq is known here, so
   * calls made one after the other number their chunks in that order.
   */
  private async writeOutput(jobId: string, parts: ReadonlyArray<{ stream: 'stdout' | 'stderr'; data: Buffer }>): Promise<OutputChunk[]> {
    let seq = this.nextSeq.get(jobId);
    if (seq === undefined) seq = (await this.store.lastOutputSeq(jobId)) + 1;
    const chunks = parts.map((p, i) => ({ seq: seq! + i, stream: p.stream, data: p.data }));
    this.nextSeq.set(jobId, seq + chunks.length);
    await Promise.all(chunks.map((chunk) => this.store.appendOutput(jobId, chunk)));
    return chunks;
  }

  /** publishOutput shows stored chunks to this replica's followers, and tells the other replicas how far the store goes. */
  private publishOutput(jobId: string, chunks: readonly OutputChunk[]): void {
    for (const chunk of chunks) this.hub.publish(jobId, { type: 'output', chunk });
    if (this.cluster) this.announceOutput(jobId, chunks[chunks.length - 1]!.seq);
  }

  /** Per job, the application of the latest of its reports taken here and of all before it (settled, never rejected; gone once settled). */
  private readonly applying = new Map<string, Promise<void>>();

  /**
   * onReport applies what an agent reports of one of its jobs (a protocol-5 job.report, or one of the single reports):
   * its start, end and wipe receipt go in one write of the job, and what follows each (events, audit, the token's
   * revocation, the job's place going to the next) in that order. Each part is judged as its single report would be: a
   * start or an end only of an unfinished job of this agent's, a receipt once.
   *
   * Output is published only once stored, once the job's earlier reports here have been applied (or failed), and, when
   * the report also holds the job's start, once that start is stored (should that write fail, the chunks stay
   * unpublished: the store holds them, and a stream's next catch-up shows them). An end or a receipt is written only once
   * the output before it is stored, and its events follow the output's. The writes themselves need not wait for each
   * other: a report's output write goes out at once, beside the previous report's write or its own start's, and the
   * agent's channel takes its next report without waiting for a start's write (startOnly). So a job's first output waits
   * for the slower of its start's and its own round trip, not for both one after the other. A report's start, end or
   * receipt is written, and its output published, only once every write of the job's previous report here has settled,
   * so reports of one job apply in the order taken, also when one of them fails.
   */
  onReport(agentId: string, r: JobReportParts): Promise<void> {
    const previous = this.applying.get(r.jobId);
    const applied = this.applyReport(agentId, r, previous);
    const settled = Promise.allSettled([previous, applied]).then(() => undefined);
    this.applying.set(r.jobId, settled);
    void settled.then(() => {
      if (this.applying.get(r.jobId) === settled) this.applying.delete(r.jobId);
    });
    return applied;
  }

  /**
   * applyReport is onReport's work for one report, after `previous` (the job's previous report here) in the order above.
   * It settles only once every write it started has settled, and then rejects with the first failure.
   */
  private async applyReport(agentId: string, r: JobReportParts, previous: Promise<void> | undefined): Promise<void> {
    const { jobId, started, ended, wiped } = r;
    const parts = r.output?.length && (await this.ownedBy(agentId, jobId)) ? r.output.map((o) => ({ stream: o.stream, data: typeof o.data === 'string' ? Buffer.from(o.data, 'base64') : o.data })) : null;
    if (!parts) {
      // Written only after the previous report's own writes: a job's transitions keep the order of its reports.
      await previous;
      return this.applyTransition(agentId, r);
    }
    const written = this.writeOutput(jobId, parts);
    if (started && !ended && !wiped) {
      // A start with output and nothing after it: the start's write goes out beside the output's (it says nothing of the
      // output), and is applied and published first.
      const startApplied = (async () => {
        await previous;
        await this.applyTransition(agentId, r);
      })();
      const [start, output] = await Promise.allSettled([startApplied, written]);
      if (start.status === 'rejected') throw start.reason;
      if (output.status === 'rejected') throw output.reason;
      return this.publishOutput(jobId, output.value);
    }
    const [, output] = await Promise.allSettled([previous, written]);
    if (output.status === 'rejected') throw output.reason; // an end is not written before the output it follows
    const chunks = output.value;
    if (!started) {
      this.publishOutput(jobId, chunks);
      return this.applyTransition(agentId, r);
    }
    // A start with output and an end (or a receipt): one write of the job once the output is stored (its end may not be
    // stored before the output), the output published once that write is applied, before the start's and end's events.
    return this.applyTransition(agentId, r, () => this.publishOutput(jobId, chunks));
  }

  /**
   * applyTransition writes what a report says of a job's state (its start, end and wipe receipt) and what follows each;
   * `written`, if given, is called once that write is applied, before the events that follow it.
   */
  private async applyTransition(agentId: string, r: JobReportParts, written?: () => void): Promise<void> {
    const { jobId, started, ended, wiped } = r;
    if (!started && !ended && !wiped) return;
    const now = new Date();
    let didStart = false;
    let endedFrom: Job['status'] | null = null;
    let didWipe = false;
    /** The job had ended before this report of its agent's (elsewhere, while it was placed, or an end replayed). */
    let endedBefore: Job | null = null;
    // Judged and written in one step (no read first).
    const job = await this.store.transitionJob(jobId, (current) => {
      didStart = false;
      endedFrom = null;
      didWipe = false;
      const owner = this.owners.get(jobId) ?? current.agentId;
      endedBefore = isTerminal(current) && owner === agentId ? current : null;
      let next: Job = current;
      const patch: Partial<Job> = {};
      if (started && !isTerminal(next) && owner === agentId) {
        didStart = true;
        Object.assign(patch, { status: 'running', cellId: started.cellId, startedAt: now.toISOString(), timings: { ...next.timings, ...this.placeTimings.get(jobId), ...prefixed('agent_', started.timings) } });
        // A sandbox's deadline runs from when it is ready (the agent's timer starts there too).
        if (next.sandbox) patch.sandbox = { ...next.sandbox, endsAt: new Date(now.getTime() + next.timeoutSeconds * 1000).toISOString() };
        next = { ...next, ...patch };
      }
      if (ended && !isTerminal(next) && owner === agentId) {
        endedFrom = next.status;
        // An end with no start before it: the placement's timings go on the job here.
        if (!didStart) next = { ...next, timings: { ...next.timings, ...this.placeTimings.get(jobId) } };
        Object.assign(patch, endPatch(next, ended.end, ended.timings, ended.outputDroppedBytes ?? 0, now.toISOString()));
        next = { ...next, ...patch };
      }
      if (wiped && current.agentId === agentId && next.wipe?.volumeId !== wiped.receipt.volumeId) {
        didWipe = true;
        Object.assign(patch, { wipe: wiped.receipt, timings: { ...next.timings, ...prefixed('agent_', wiped.timings ?? {}) } });
      }
      return didStart || endedFrom !== null || didWipe ? patch : null;
    });
    written?.();
    if (endedBefore && (started || ended)) await this.afterEndedBefore(agentId, endedBefore, started !== undefined && !ended);
    if (!job) return;
    // The audit chain keeps the order of the records' calls: the cell's assignment, the token's revocation, the wipe.
    const audits: Array<Promise<unknown>> = [];
    if (didStart && started) audits.push(this.afterStart(job, started.cellId));
    if (endedFrom !== null && ended) await this.afterEnd(job, endedFrom, ended.end, true);
    if (didWipe && wiped) {
      const { volumeId, cellId, keyIdentifier, keyStateAfterRemoval, totalMs } = wiped.receipt;
      audits.push(this.audit.record({ type: 'wipe.done', actor: `agent:${job.agentId}`, workspaceId: job.workspaceId, subject: jobId, details: { volumeId, cellId, keyIdentifier, keyStateAfterRemoval, totalMs } }));
    }
    // A start alone does not wait for its record (the chain keeps the call order): the job's next report (its first
    // output, most often) is not held behind an audit round trip. An end or a receipt waits, so that a flood of reports
    // slows its agent's channel (REPORTS_HIGH_WATER) rather than growing the audit queue.
    if (ended || wiped) await Promise.all(audits);
  }

  /**
   * afterEndedBefore answers a start or an end of a job that had ended before (another replica ended it while it was
   * being placed here, say): after a start its agent is told to stop it, and its tokens are revoked (one may have been
   * stored after that end revoked the others).
   */
  private async afterEndedBefore(agentId: string, job: Job, running: boolean): Promise<void> {
    // Only a job sent from here and not heard of since (placeTimings), or one its agent says it runs, can hold a token
    // stored after its end: an agent's replayed final reports (up to FINAL_REPORTS_KEPT per reconnect) cost no write.
    const firstReport = this.placeTimings.delete(job.id);
    if (running) this.cancelOnAgent(agentId, job.id);
    if (firstReport || running) await this.tokens.revokeJob(job.id, job.workspaceId, 'the job had ended when its agent reported it');
  }

  /**
   * afterStart is what follows a job's start: its events here and, for a sandbox, on the bus, and its audit record
   * (returned). Another replica acts on a sandbox's start only (its lifecycle watchers follow sandboxes; a job's streams
   * show output and the end): a job's start costs the bus nothing, and its first output does not share the database with
   * a NOTIFY.
   */
  private afterStart(job: Job, cellId: string): Promise<unknown> {
    const jobId = job.id;
    this.placeTimings.delete(jobId);
    if (this.placing.has(jobId) && !this.placingNews.has(jobId)) this.placingNews.set(jobId, { kind: 'started' });
    this.hub.publish(jobId, { type: 'started', job });
    if (this.cluster && job.mode === 'sandbox') this.announce({ type: 'job.started', from: this.cluster.replicaId, jobId });
    return this.audit.record({ type: 'cell.assigned', actor: `agent:${job.agentId}`, workspaceId: job.workspaceId, subject: jobId, details: { cellId, runtime: job.runtime } });
  }

  /** announceOutput tells the other replicas (at most every OUTPUT_NOTIFY_MS) how far each job's stored output goes. */
  private announceOutput(jobId: string, seq: number): void {
    this.outputToAnnounce.set(jobId, Math.max(seq, this.outputToAnnounce.get(jobId) ?? 0));
    this.announceTimer ??= setTimeout(() => {
      this.announceTimer = null;
      const from = this.cluster!.replicaId;
      for (const [id, s] of this.outputToAnnounce) this.announce({ type: 'job.output', from, jobId: id, seq: s });
      this.outputToAnnounce.clear();
    }, OUTPUT_NOTIFY_MS);
  }

  /** onEnded records the end an agent reports of its own job; an end of another agent's job is ignored. */
  async onEnded(agentId: string, jobId: string, end: JobEnd, timings: Record<string, number>, outputDroppedBytes = 0): Promise<void> {
    await this.onReport(agentId, { jobId, ended: { end, timings, outputDroppedBytes } });
  }

  /** end records a terminal state once; later reports for the same job are ignored. */
  async end(jobId: string, end: JobEnd, timings: Record<string, number>, outputDroppedBytes = 0): Promise<void> {
    let was: Job['status'] | null = null;
    const endedAt = new Date().toISOString();
    const job = await this.store.transitionJob(jobId, (current) => {
      if (isTerminal(current)) return null;
      was = current.status;
      // Ended before its agent's first report here (its agent lost right after the assign, say): the placement's timings
      // go on the job with its end.
      const placed = this.placeTimings.get(jobId);
      return endPatch(placed ? { ...current, timings: { ...current.timings, ...placed } } : current, end, timings, outputDroppedBytes, endedAt);
    });
    if (job && was !== null) await this.afterEnd(job, was, end, false);
  }

  /**
   * afterEnd is what follows a job's end (`was` its status before): its token revoked, its events, and its place (in the
   * workspace's running quota and on its agent) going to the next job in turn. `byAgent`: the agent reported the end
   * (it needs no cancel).
   */
  private async afterEnd(job: Job, was: Job['status'], end: JobEnd, byAgent: boolean): Promise<void> {
    const jobId = job.id;
    if (was === 'queued') this.dropQueued(job);
    if (this.placing.has(jobId)) this.placingNews.set(jobId, { kind: 'ended', job, byAgent });
    await this.tokens.revokeJob(jobId, job.workspaceId, `the job ended (${end.reason})`);
    this.nextSeq.delete(jobId);
    this.owners.delete(jobId);
    this.placeTimings.delete(jobId);
    this.hub.publish(jobId, { type: 'end', job });
    if (this.cluster) {
      this.outputToAnnounce.delete(jobId); // the end makes every follower read the store to its last chunk
      this.announce({ type: 'job.ended', from: this.cluster.replicaId, jobId });
    }
    this.deactivate(job);
    this.pump();
  }

  /** onWiped attaches the wipe receipt of the job's volume; ignored unless the job is the agent's own. */
  async onWiped(agentId: string, jobId: string, receipt: WipeReceipt, timings: Record<string, number>): Promise<void> {
    await this.onReport(agentId, { jobId, wiped: { receipt, timings } });
  }

  /** agentsWithUnfinishedJobs lists the agents that hold assigned or running jobs. */
  async agentsWithUnfinishedJobs(): Promise<string[]> {
    const jobs = await this.store.jobsWithStatus(['assigned', 'running']);
    return [...new Set(jobs.map((j) => j.agentId).filter((a): a is string => a !== null))];
  }

  /** onAgentLost ends the agent's unfinished jobs that it no longer has (`isLive` is asked after the read). */
  async onAgentLost(agentId: string, isLive: (jobId: string) => boolean, why: string): Promise<void> {
    for (const job of await this.unfinishedJobs()) {
      if (job.agentId === agentId && !isLive(job.id)) {
        await this.end(job.id, { reason: 'error', exitCode: null, signal: null, message: why }, {});
      }
    }
  }

  /** A read of the unfinished jobs that has not been sent yet: the calls of this turn share it. */
  private unfinishedRead: Promise<Job[]> | null = null;

  /**
   * unfinishedJobs reads every assigned or running job; the calls made before the read is sent (a fleet's hellos after a
   * restart arrive by the hundred) share one read, and each call's read is sent after it, so it sees what was stored
   * before the call.
   */
  private unfinishedJobs(): Promise<Job[]> {
    this.unfinishedRead ??= new Promise<void>((resolve) => setImmediate(resolve)).then(() => {
      this.unfinishedRead = null;
      return this.store.jobsWithStatus(['assigned', 'running']);
    });
    return this.unfinishedRead;
  }

  /**
   * createBatch records several jobs of one workspace at once (POST /v1/jobs/batch), all or nothing: every item is
   * resolved (limits, image, a runtime and size the fleet offers) and the queue quota judged for the whole batch before
   * anything is stored (an item's error names its index, atItem); then the rows go to the store in one write
   * (Store.createJobs: one transaction, one statement on PostgreSQL), their audit events once it committed, and each job
   * is placed or queued as a single create's would be. The jobs are answered in request order. The egress policy is read
   * once, before the write, so no job is corrected after it.
   */
  async createBatch(ws: Workspace, reqs: readonly JobRequest[], actor: string): Promise<Job[]> {
    const refs = new Map<string, Promise<JobImageChoice>>();
    const imageOf = (ref: string | undefined): Promise<JobImageChoice> => {
      let p = refs.get(ref ?? '');
      if (!p) refs.set(ref ?? '', (p = this.imageFor(ws, ref)));
      return p;
    };
    const images = await Promise.allSettled(reqs.map((req) => imageOf(req.image)));
    const resolved = images.map((img, i) => {
      if (img.status === 'rejected') throw atItem(i, img.reason);
      try {
        return { r: resolveJobRequest(reqs[i]!, ws, this.defaults, img.value?.record ?? null), chosen: img.value };
      } catch (e) {
        throw atItem(i, e);
      }
    });
    await this.restore();
    const offers = new Map<string, Promise<void>>();
    firstFailure(
      await Promise.allSettled(
        resolved.map(({ r }) => {
          const key = `${r.runtime}|${r.cpu}|${r.memoryBytes}|${r.diskBytes}`;
          let p = offers.get(key);
          if (!p) offers.set(key, (p = Promise.resolve(this.dispatcher?.checkOffered?.(r))));
          return p;
        }),
      ),
    );
    const egress = await this.network.policyOf(ws.id);

    // From the quota check to the last reservation nothing is awaited: concurrent creates see this batch's places taken.
    const quota = this.quotas.of(ws);
    const state = {
      waiting: this.queued.get(ws.id)?.length ?? 0,
      active: this.active.get(ws.id)?.size ?? 0,
      admitting: this.admitting.get(ws.id) ?? 0,
      maxRunning: quota.maxRunningJobs,
      maxQueued: quota.maxQueuedJobs,
    };
    checkBatchQuota(state, reqs.length);
    this.maxRunningOf.set(ws.id, quota.maxRunningJobs);
    const d = this.dispatcher;
    // Jobs go to agents with room in request order until one cannot; it and the rest wait in the queue, in order.
    let direct = !this.queued.get(ws.id)?.length;
    const plan = resolved.map(({ r, chosen }) => {
      const job = newJob(ws, r, egress, chosen);
      const spec = specOf(job, this.defaults.outputLimitBytes);
      const agentId = direct && this.hasRoom(ws.id) && d?.canDispatch() ? d.reserve(spec) : null;
      if (agentId) this.activate(job);
      else direct = false;
      return { job, spec, agentId };
    });
    // The queued ones count as being admitted until they are in the queue (the placed ones count as running already).
    const toQueue = plan.filter((p) => !p.agentId).length;
    try {
      // Judged again on what the plan queues: running room no agent has now is a place in the queue, not a free pass.
      checkBatchQuota(state, reqs.length, toQueue);
    } catch (e) {
      for (const p of plan) {
        if (!p.agentId) continue;
        d!.release(p.agentId, p.job.id);
        this.deactivate(p.job);
      }
      throw e;
    }
    this.admitting.set(ws.id, (this.admitting.get(ws.id) ?? 0) + toQueue);
    let counted = true;
    const settle = (): void => {
      if (!counted) return;
      counted = false;
      const n = (this.admitting.get(ws.id) ?? toQueue) - toQueue;
      if (n > 0) this.admitting.set(ws.id, n);
      else this.admitting.delete(ws.id);
    };
    try {
      const recorded = this.store.createJobs(plan.map((p) => (p.agentId ? { ...p.job, status: 'assigned' as const, agentId: p.agentId } : p.job)));
      // Recorded now, in request order and before any place() below mints a token (the chain keeps the order of the calls,
      // so it says created before minted), as a single create's; should the rows fail to commit, it goes on to the
      // tokens' revocation.
      const audited = Promise.all(plan.map(({ job }) => this.audit.record({ type: 'workload.created', actor, workspaceId: ws.id, subject: job.id, details: { runtime: job.runtime, data: job.dataGrants, image: job.image?.digest ?? null } })));
      audited.catch(() => {}); // heard below
      // The waiting ones join the queue as soon as their rows exist, in request order.
      const queuedIn = recorded.then(() => {
        settle();
        for (const p of plan) {
          if (p.agentId) continue;
          this.enqueue(p.job);
          this.announceQueued(p.job.id);
        }
        if (toQueue > 0) this.pump();
      });
      queuedIn.catch(() => {}); // a failed write is heard below (await recorded), also when no job of the batch waits
      const results = await Promise.allSettled(
        plan.map(async ({ job, spec, agentId }) => {
          if (!agentId) {
            await queuedIn;
            return job;
          }
          try {
            const placed = await this.place(job, performance.now(), { agentId, spec, recorded });
            if (placed.status === 'queued') {
              this.deactivate(job);
              this.enqueue(job);
              this.announceQueued(job.id);
            }
            return placed;
          } catch (e) {
            if (!(await recorded.then(() => true, () => false))) {
              this.deactivate(job);
              throw e;
            }
            // The batch is stored and its other jobs run: failing the request would have the client create them all again.
            // This one is answered as it stands (placement errors after the write are a single create's, not the batch's).
            return (await this.store.getJob(job.id).catch(() => null)) ?? job;
          }
        }),
      );
      await recorded; // a failed write fails the batch (no row of it was stored: one statement, one transaction)
      await audited;
      return results.map((res) => {
        if (res.status === 'rejected') throw res.reason;
        return res.value;
      });
    } finally {
      settle();
    }
  }
}

/**
 * RowWithToken is a placed job's row to be written with its first token, in one write of the store's: `write` (the
 * token's record, as TokenService.mint takes it) writes both, and `count` settles with that write (Store.createPlacedJob),
 * or with the error `abandon` is given should no token be signed.
 */
interface RowWithToken {
  write(t: TokenRecord): Promise<void>;
  count: Promise<number>;
  abandon(e: unknown): void;
}

function rowWithToken(store: Store, row: Job): RowWithToken {
  let settle!: (written: Promise<number>) => void;
  const count = new Promise<number>((resolve) => (settle = resolve));
  let settled = false;
  return {
    count,
    write(t) {
      settled = true;
      const written = store.createPlacedJob(row, t);
      settle(written);
      return written.then(() => undefined);
    },
    abandon(e) {
      if (settled) return;
      settled = true;
      settle(Promise.reject(e instanceof Error ? e : new Error(String(e))));
    },
  };
}

/** MAX_PLACING bounds the placements one replica has in flight at once (each holds a few store round trips). */
const MAX_PLACING = 32;

/** OWNERS_KEPT bounds the cache of which agent runs which job. */
const OWNERS_KEPT = 100_000;

/** subjectOf is what a job's token is about: the job, its workspace and its data grants. */
function subjectOf(job: Job): TokenSubject {
  return { jobId: job.id, workspaceId: job.workspaceId, dataGrants: job.dataGrants };
}

/** specOf is what the agent is told about a job: no key, no tenant secret beyond the job's own env. */
/** needsOf is what placement asks of an agent for a job: its runtime, image and size (jobs alike in these place alike). */
function needsOf(job: Job): string {
  return `${job.runtime}|${job.image?.digest ?? ''}|${job.cpu}|${job.memoryBytes}|${job.diskBytes}`;
}

function specOf(job: Job, outputLimitBytes: number): JobSpec {
  const { id: jobId, workspaceId, command, env, cwd, cpu, memoryBytes, timeoutSeconds, diskBytes, runtime, egress } = job;
  return { jobId, workspaceId, command, env, cwd, cpu, memoryBytes, timeoutSeconds, diskBytes, runtime, egress, outputLimitBytes, image: job.image ?? null, mode: job.mode ?? 'job' };
}

/**
 * startOnly says whether a report holds a job's start and nothing else: the agent's channel may go on to its next report
 * without waiting for it to be applied (JobService.onReport keeps the job's order). Its failure is then heard only by
 * the promise onReport returned.
 */
export function startOnly(r: JobReportParts): boolean {
  return r.started !== undefined && !r.output?.length && !r.ended && !r.wiped;
}

/**
 * JobReportParts is what an agent reports of one job at once (wire.ts JobReport, less its load; output may be decoded):
 * each part optional, in the order they happened.
 */
export interface JobReportParts {
  jobId: string;
  started?: { cellId: string; timings: Record<string, number> };
  output?: ReadonlyArray<{ stream: 'stdout' | 'stderr'; data: string | Buffer }>;
  ended?: { end: JobEnd; timings: Record<string, number>; outputDroppedBytes?: number };
  wiped?: { receipt: WipeReceipt; timings?: Record<string, number> };
}

/** endPatch is the change that ends an unfinished job. */
function endPatch(current: Job, end: JobEnd, timings: Record<string, number>, outputDroppedBytes: number, endedAt: string): Partial<Job> {
  return {
    outputDroppedBytes,
    status: end.reason,
    exitCode: end.exitCode,
    signal: end.signal,
    message: end.message,
    endedAt,
    timings: { ...current.timings, ...prefixed('agent_', timings) },
  };
}

function prefixed(p: string, t: Record<string, number>): Record<string, number> {
  return Object.fromEntries(Object.entries(t).map(([k, v]) => [p + k, v]));
}

function round(ms: number): number {
  return Math.round(ms * 1000) / 1000;
}

function assertNever(x: never): never {
  throw new Error(`unhandled bus message ${JSON.stringify(x).slice(0, 200)}`);
}
