/**
 * SandboxService owns the life of sandboxes: a sandbox is a job of mode 'sandbox' (placed, confined, token-refreshed,
 * ended and wiped by the job machinery), plus metadata, a movable deadline and an idle limit. Processes and files are
 * relayed to the sandbox's agent by ProcessRelay and FileRelay; this service says which sandbox is live and where.
 */
import { ApiError } from '../../shared/errors.js';
import type { Job, Workspace } from '../model.js';
import { isTerminal, type JobService } from '../jobs/job-service.js';
import type { JobDefaults } from '../jobs/job-request.js';
import type { OutputHub } from '../jobs/output-hub.js';
import type { Store } from '../store/store.js';
import { checkTimeout, resolveSandboxRequest, type SandboxRequest } from './sandbox-request.js';
import type { SandboxChannel } from './sandbox-channel.js';

/** SANDBOX_READY_WAIT_MS bounds how long create waits for a cell; a sandbox still queued then is answered as `starting`. */
export const SANDBOX_READY_WAIT_MS = 60_000;
/** SANDBOX_END_WAIT_MS bounds how long delete waits for the agent to report the end. */
export const SANDBOX_END_WAIT_MS = 30_000;
/** IDLE_SWEEP_MS is how often idle sandboxes are looked for (idle ends hold to within this). */
export const IDLE_SWEEP_MS = 1_000;
/** LIST_PAGE_MAX bounds one page of the sandbox list. */
export const LIST_PAGE_MAX = 1000;

/** LiveSandbox is a running sandbox, where it runs. */
export interface LiveSandbox {
  job: Job;
  agentId: string;
}

/** Activity is what the idle limit watches of one live sandbox. */
interface Activity {
  workspaceId: string;
  idleMs: number;
  lastAt: number;
}

/** SandboxService creates, finds, times and ends sandboxes. */
export class SandboxService {
  private readonly activity = new Map<string, Activity>();
  private sweeper: NodeJS.Timeout | null = null;
  private sweeping = false;
  /** busy says whether a sandbox has a running process that keeps it from idling (set by the process relay). */
  busy: (sb: LiveSandbox) => Promise<boolean> = async () => false;

  constructor(
    private readonly store: Store,
    private readonly jobs: JobService,
    private readonly hub: OutputHub,
    private readonly defaults: JobDefaults,
    private readonly channel: () => SandboxChannel | null,
    private readonly now: () => number = Date.now,
  ) {}

  /** create records a sandbox, queues it like a job and answers once it is ready (or ended, or still queued after the wait). */
  async create(ws: Workspace, req: SandboxRequest, actor: string, waitMs = SANDBOX_READY_WAIT_MS): Promise<Job> {
    const chosen = await this.jobs.imageFor(ws, req.image);
    const { spec, sandbox } = resolveSandboxRequest(req, ws, this.defaults, chosen?.record ?? null);
    const job = await this.jobs.admit(ws, spec, actor, 'sandbox', sandbox, chosen);
    this.watch(job);
    return this.waitFor(job.id, (j) => j.status === 'running' || isTerminal(j), waitMs);
  }

  /** get returns a sandbox of the workspace, or 404 — also for another workspace's sandbox or for a job. */
  async get(ws: Workspace, id: string): Promise<Job> {
    const job = await this.store.getJob(id);
    if (!job || job.workspaceId !== ws.id || job.mode !== 'sandbox') throw new ApiError('not_found', `no sandbox ${id} in this workspace`);
    return job;
  }

  /** list returns one page of the workspace's sandboxes, newest first, and the cursor of the next page. */
  async list(ws: Workspace, q: { metadata: Record<string, string>; state: 'live' | 'ended' | 'all'; cursor?: string; limit: number }): Promise<{ sandboxes: Job[]; next: string | null }> {
    const before = q.cursor === undefined ? undefined : decodeCursor(q.cursor);
    const sandboxes = await this.store.listSandboxes(ws.id, { metadata: q.metadata, state: q.state, limit: q.limit, ...(before ? { before } : {}) });
    const last = sandboxes.at(-1);
    return { sandboxes, next: sandboxes.length === q.limit && last ? encodeCursor(last) : null };
  }

  /** live returns a running sandbox and its agent, or 404 (unknown) / 409 sandbox_not_running (starting or ended); counts as activity. */
  async live(ws: Workspace, id: string): Promise<LiveSandbox> {
    const job = await this.get(ws, id);
    if (isTerminal(job)) throw new ApiError('sandbox_not_running', `sandbox ${id} has ended (${job.status}${job.message ? `: ${job.message}` : ''}); create a new one`);
    if (job.status !== 'running' || !job.agentId) throw new ApiError('sandbox_not_running', `sandbox ${id} is not ready yet (${job.status}); retry when its state is running`);
    this.touch(id);
    return { job, agentId: job.agentId };
  }

  /** kill ends a sandbox (the answer carries its final state; the wipe receipt follows on the record). Ended already: as it is. */
  async kill(ws: Workspace, id: string, waitMs = SANDBOX_END_WAIT_MS): Promise<Job> {
    const job = await this.get(ws, id);
    if (isTerminal(job)) return job;
    await this.jobs.requestEnd(id, 'deleted');
    return this.waitFor(id, isTerminal, waitMs);
  }

  /** setTimeout moves a running sandbox's deadline to `timeoutSeconds` from now (longer or shorter). */
  async setTimeout(ws: Workspace, id: string, timeoutSeconds: number): Promise<Job> {
    checkTimeout(ws, timeoutSeconds);
    const { job, agentId } = await this.live(ws, id);
    if (!this.channel()?.send(agentId, { type: 'sandbox.timeout', jobId: id, timeoutSeconds })) {
      throw new ApiError('unavailable', `the agent running sandbox ${id} is not connected right now; retry shortly`);
    }
    return this.jobs.setDeadline(job, timeoutSeconds);
  }

  /** touch records API activity on a sandbox (it resets the idle limit). */
  touch(id: string): void {
    const a = this.activity.get(id);
    if (a) a.lastAt = this.now();
  }

  /** restore watches the sandboxes that were live when the control plane started (their idle clocks start now). */
  async restore(): Promise<void> {
    for (const j of await this.store.jobsWithStatus(['queued', 'assigned', 'running'])) if (j.mode === 'sandbox') this.watch(j);
  }

  /** start runs the idle sweep. */
  start(): void {
    this.sweeper ??= setInterval(() => {
      if (this.sweeping) return;
      this.sweeping = true;
      void this.sweep().finally(() => (this.sweeping = false));
    }, IDLE_SWEEP_MS);
    this.sweeper.unref();
  }

  /** stop ends the idle sweep. */
  stop(): void {
    if (this.sweeper) clearInterval(this.sweeper);
    this.sweeper = null;
  }

  /** ended forgets a sandbox's activity (called on its end). */
  ended(id: string): void {
    this.activity.delete(id);
  }

  private watch(job: Job): void {
    const idleMs = (job.sandbox?.idleTimeoutSeconds ?? 0) * 1000;
    this.activity.set(job.id, { workspaceId: job.workspaceId, idleMs, lastAt: this.now() });
  }

  /** sweep ends the running sandboxes idle past their limit: no API activity and no process that keeps them alive. */
  private async sweep(): Promise<void> {
    const now = this.now();
    for (const [id, a] of this.activity) {
      if (a.idleMs <= 0 || now - a.lastAt < a.idleMs) continue;
      const job = await this.store.getJob(id);
      if (!job || isTerminal(job)) {
        this.activity.delete(id);
        continue;
      }
      if (job.status !== 'running' || !job.agentId) continue; // waiting for a cell is not idling
      // A running process is activity; if the agent cannot be asked now, the sandbox is not judged idle this round.
      const busy = await this.busy({ job, agentId: job.agentId }).catch(() => true);
      if (busy) {
        a.lastAt = this.now();
        continue;
      }
      if (this.now() - a.lastAt < a.idleMs) continue; // touched while the agent was asked
      this.activity.delete(id);
      await this.jobs.requestEnd(id, 'idle').catch(() => this.watch(job));
    }
  }

  /** waitFor resolves with the sandbox once `done` holds (checked on every start/end event), or as it is after `ms`. */
  private async waitFor(id: string, done: (j: Job) => boolean, ms: number): Promise<Job> {
    let wake: () => void = () => {};
    const unsubscribe = this.hub.subscribe(id, (e) => (e.type === 'started' || e.type === 'end') && wake());
    const deadline = this.now() + ms;
    try {
      for (;;) {
        const woken = new Promise<void>((resolve) => (wake = resolve));
        const job = await this.store.getJob(id);
        if (!job) throw new ApiError('not_found', `no sandbox ${id}`);
        if (done(job) || this.now() >= deadline) return job;
        await Promise.race([woken, sleep(Math.min(1000, Math.max(1, deadline - this.now())))]);
      }
    } finally {
      unsubscribe();
    }
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** encodeCursor makes the opaque cursor of the page after `last`. */
function encodeCursor(last: Job): string {
  return Buffer.from(JSON.stringify([last.createdAt, last.id])).toString('base64url');
}

function decodeCursor(cursor: string): { createdAt: string; id: string } {
  try {
    const v: unknown = JSON.parse(Buffer.from(cursor, 'base64url').toString('utf8'));
    if (Array.isArray(v) && v.length === 2 && typeof v[0] === 'string' && typeof v[1] === 'string') return { createdAt: v[0], id: v[1] };
  } catch {
    /* refused below */
  }
  throw new ApiError('invalid_request', 'query.next: not a cursor this server made; pass the `next` of the previous page');
}
