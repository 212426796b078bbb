/** Agent runs cells on this host for the control plane: warm pool, assignment, streaming, wipe. */
import type { Config } from '../shared/config.js';
import { MAX_END_MESSAGE_CHARS, MAX_OFFERED_CLASSES, MAX_POOL_ERROR_CHARS, PROTOCOL_VERSION, type AgentLoad, type AgentOffers, type AgentToControl, type ControlToAgent, type JobEnd, type JobSpec, type PoolStatus, type WorkloadCredentials } from '../shared/wire.js';
import type { ControlChannel, Greeting } from './channel.js';
import type { Cell } from './cells/cell.js';
import type { CellPool } from './cells/pool.js';
import type { ReceiptSpool } from './reconcile/receipt-spool.js';
import type { WipeReceipt } from '../shared/wire.js';
import { pickSizeClass, sizeClassesFromConfig, type SizeClass } from './cells/size-class.js';
import type { ImageService } from './images/image-service.js';
import type { PreparedImage } from './images/image-store.js';
import { SandboxSession, type SandboxRequest } from './sandbox/sandbox-session.js';
import { refuseSandboxRequest } from './sandbox/refusals.js';
import { LoadReporter } from './load-reporter.js';

/** Logger is the small logging surface the agent needs. */
export type Logger = (msg: string, extra?: object) => void;

/** BACKPRESSURE_POLL_MS is how often a congested channel is checked for room. */
const BACKPRESSURE_POLL_MS = 20;

/** FINAL_REPORTS_KEPT bounds the final reports kept for replay after a reconnect. */
const FINAL_REPORTS_KEPT = 1000;

/** Agent wires the pool to the control channel. */
export class Agent {
  private readonly running = new Map<string, Cell>();
  /** The sessions of running sandboxes (a subset of running). */
  private readonly sandboxes = new Map<string, SandboxSession>();
  /** Jobs between their assign message and their cell being handed the job. */
  private readonly starting = new Set<string>();
  /**
   * The last final reports (job.ended, job.wiped) per job, replayed on every (re)connect: a control plane that died
   * before it applied them gets them again (applying them is idempotent there).
   */
  private readonly finals = new Map<string, AgentToControl[]>();
  /** Jobs of recently ended cells: denial records can arrive after the end. */
  private readonly recentCells = new Map<string, string>();
  /** Cells whose job ended but whose volume is not wiped yet. */
  private unwiped = 0;
  private readonly classes: SizeClass[];
  /** Jobs this agent runs at once (told to the control plane, which queues the rest). */
  private readonly capacity: number;
  private stopping = false;
  /** Cells whose output is paused until the channel to the control plane drains. */
  private readonly paused = new Set<Cell>();
  private drainTimer: NodeJS.Timeout | null = null;
  /** Keeps the control plane's copy of this agent's load (placement reads it) current. */
  private readonly loadReporter: LoadReporter;
  /** What this agent can run, sent with its load: placement sends it only jobs of these runtimes that fit a class. */
  private readonly offers: AgentOffers;

  constructor(
    readonly agentId: string,
    config: Config,
    private readonly pool: CellPool,
    private readonly channel: ControlChannel,
    private readonly log: Logger,
    private readonly spool: ReceiptSpool,
    private readonly images: ImageService,
  ) {
    this.classes = sizeClassesFromConfig(config.agent.classes);
    this.capacity = config.agent.maxRunningJobs;
    this.offers = {
      runtimes: pool.runtimeNames(),
      classes: this.classes.slice(0, MAX_OFFERED_CLASSES).map((c) => ({ name: c.name, cpu: c.cpu, memoryBytes: c.memoryBytes, diskBytes: c.diskBytes })),
    };
    this.loadReporter = new LoadReporter({ load: () => this.load(), send: (m) => this.channel.send(m) });
    pool.onChange(() => this.loadReporter.changed());
    // A job's end or wipe changes the load: the job.report that says so carries it (no agent.load of its own follows).
    channel.reportLoad = () => {
      const load = this.load();
      this.loadReporter.sentInHello(load);
      return load;
    };
    channel.on('message', (m: ControlToAgent) => this.onMessage(m));
    // A (re)connected control plane may have lost what was sent before: sandbox streams rewind to their acks.
    channel.on('open', () => {
      for (const s of this.sandboxes.values()) s.onReconnect();
    });
    channel.on('bad-message', (problem: string, value: unknown) => this.onBadMessage(problem, value));
    // Receipts of volumes that reconcile shredded (here or in `cleanroom down`) are reported until acknowledged.
    for (const { jobId, receipt } of spool.read()) this.keepFinal(jobId, { type: 'job.wiped', jobId, receipt, spooled: true });
  }

  /** reportReconciledWipe reports a receipt that a later reconcile pass produced (it is already spooled). */
  reportReconciledWipe(jobId: string | null, receipt: WipeReceipt): void {
    const msg: AgentToControl = { type: 'job.wiped', jobId, receipt, spooled: true };
    this.keepFinal(jobId, msg);
    this.channel.send(msg);
  }

  private keepFinal(jobId: string | null, msg: AgentToControl): void {
    const key = jobId ?? `volume:${(msg as { receipt?: WipeReceipt }).receipt?.volumeId ?? ''}`;
    const list = this.finals.get(key) ?? [];
    list.push(msg);
    this.finals.delete(key);
    this.finals.set(key, list);
    while (this.finals.size > FINAL_REPORTS_KEPT) this.finals.delete(this.finals.keys().next().value!);
  }

  /** jobOfCell names the job a cell runs, for denied-connection records. */
  jobOfCell(cellId: string): string | null {
    for (const [jobId, cell] of this.running) if (cell.id === cellId) return jobId;
    return this.recentCells.get(cellId) ?? null;
  }

  /**
   * greeting is what the agent says on every (re)connect: who it is, which jobs still run here and which ended here
   * (so the control plane does not take them for lost), then the final reports it keeps.
   */
  greeting(): Greeting {
    const ended = [...this.finals.entries()].filter(([, msgs]) => msgs.some((m) => m.type === 'job.ended')).map(([jobId]) => jobId);
    const liveJobIds = [...this.running.keys(), ...this.starting];
    const load = this.load();
    this.loadReporter.sentInHello(load);
    return {
      hello: { type: 'hello', protocol: PROTOCOL_VERSION, agentId: this.agentId, liveJobIds, endedJobIds: ended, capacity: this.capacity, images: this.images.digests(), load },
      replay: [...this.finals.values()].flat(),
    };
  }

  /** load is what placement needs to know of this agent: jobs running or starting, capacity, warm and preparing cells. */
  load(): AgentLoad {
    return { running: this.running.size + this.starting.size, capacity: this.capacity, ...this.pool.load(), offers: this.offers };
  }

  /**
   * onBadMessage logs a message from the control plane that failed its schema (it is dropped); an assignment that cannot
   * be read is failed, if its job id can be, so that the job does not wait forever for a start that will not come.
   */
  private onBadMessage(problem: string, value: unknown): void {
    const v = value as { type?: unknown; job?: { jobId?: unknown } } | null | undefined;
    const jobId = v?.type === 'assign' && typeof v.job?.jobId === 'string' ? v.job.jobId : null;
    this.log('dropped a message from the control plane', { problem, type: typeof v?.type === 'string' ? v.type.slice(0, 40) : null, job: jobId?.slice(0, 64) ?? null });
    if (jobId !== null && !this.running.has(jobId) && !this.starting.has(jobId)) {
      this.report(jobId, { type: 'job.ended', jobId, end: endOf('error', `the agent could not read the assignment: ${problem}`), timings: {} });
    }
  }

  private onMessage(m: ControlToAgent): void {
    switch (m.type) {
      case 'welcome':
        return; // the channel's own business
      case 'assign':
        void this.assign(m.job, m.credentials);
        return;
      case 'token.refresh':
        this.running.get(m.jobId)?.refreshCredentials(m.credentials);
        return;
      case 'cancel':
        void this.running.get(m.jobId)?.stop('cancelled');
        return;
      case 'receipts.stored':
        this.spool.remove(m.volumeIds);
        for (const id of m.volumeIds) this.finals.delete(`volume:${id}`);
        return;
      case 'pool.get':
        this.channel.send({ type: 'pool.status', requestId: m.requestId, pool: clipErrors(this.pool.status()), volumes: this.pool.volumeCounts() });
        return;
      case 'image.prepare':
        void this.images.prepare(m.image, m.maxUnpackedBytes);
        return;
      case 'image.remove':
        void this.images.remove(m.digest);
        return;
      case 'sandbox.timeout':
        if (this.sandboxes.has(m.jobId)) this.running.get(m.jobId)?.resetDeadline(m.timeoutSeconds);
        return;
      case 'proc.start':
      case 'proc.stdin':
      case 'proc.signal':
      case 'proc.resize':
      case 'proc.attach':
      case 'proc.detach':
      case 'proc.ack':
      case 'proc.list':
      case 'file.op':
      case 'file.data':
      case 'file.ack':
        return this.onSandboxRequest(m);
      default:
        assertNever(m);
    }
  }

  private onSandboxRequest(m: SandboxRequest): void {
    const session = this.sandboxes.get(m.jobId);
    if (session) return session.handle(m);
    const refusal = refuseSandboxRequest(m);
    if (refusal) this.channel.send(refusal);
  }

  private async assign(job: JobSpec, credentials: WorkloadCredentials): Promise<void> {
    const t0 = performance.now();
    if (this.stopping) return this.fail(job, 'agent is shutting down');
    if (this.running.has(job.jobId) || this.starting.has(job.jobId)) return;
    this.starting.add(job.jobId);
    this.loadReporter.changed();
    try {
      await this.start(job, credentials, t0);
    } finally {
      this.starting.delete(job.jobId);
      this.loadReporter.changed();
    }
  }

  private async start(job: JobSpec, credentials: WorkloadCredentials, t0: number): Promise<void> {
    const sizeClass = pickSizeClass(this.classes, job.cpu, job.memoryBytes, job.diskBytes);
    if (!sizeClass) return this.fail(job, `no size class fits cpu=${job.cpu} memory=${job.memoryBytes} disk=${job.diskBytes}`);
    let image: PreparedImage | null;
    try {
      image = this.images.imageFor(job.image);
    } catch (e) {
      return this.fail(job, (e as Error).message);
    }
    let cell: Cell;
    let cold: boolean;
    try {
      ({ cell, cold } = await this.pool.take(job.runtime, sizeClass, image));
    } catch (e) {
      return this.fail(job, `could not prepare a cell: ${(e as Error).message}`);
    }
    const tTaken = performance.now();
    this.running.set(job.jobId, cell);
    this.unwiped++;
    let forwarded = 0;
    let dropped = 0;
    const session =
      job.mode === 'sandbox'
        ? new SandboxSession(job.jobId, () => cell.workloadEnv, {
            toInit: (bytes) => cell.sendToSandbox(bytes),
            toControl: (msg) => this.channel.send(msg),
            congested: () => this.channel.congested(),
          })
        : null;
    try {
      await cell.assign(job, credentials, {
        sandboxFrame: (frame) => session?.onFrame(frame),
        output: (stream, data) => {
          // Past the job's output limit, output is counted and dropped; the end says how much.
          const room = Math.max(0, job.outputLimitBytes - forwarded);
          if (data.length > room) {
            dropped += data.length - room;
            data = data.subarray(0, room);
          }
          if (data.length === 0) return;
          // The job's first output (what a client waits for) goes once this read of the cell is taken apart, not at
          // the end of the event loop's turn behind whatever else the turn holds; later output is batched per turn.
          if (forwarded === 0) queueMicrotask(() => this.channel.flush());
          forwarded += data.length;
          this.channel.send({ type: 'job.output', jobId: job.jobId, stream, data: data.toString('base64') });
          if (this.channel.congested()) this.pause(cell);
        },
        ended: (end, timings) => {
          session?.close();
          this.sandboxes.delete(job.jobId);
          this.paused.delete(cell);
          this.running.delete(job.jobId);
          this.loadReporter.changed();
          this.recentCells.set(cell.id, job.jobId);
          if (this.recentCells.size > 1000) this.recentCells.delete(this.recentCells.keys().next().value!);
          const cut = end.message === null ? end : { ...end, message: end.message.slice(0, MAX_END_MESSAGE_CHARS) };
          this.report(job.jobId, { type: 'job.ended', jobId: job.jobId, end: cut, timings: rounded(timings), outputDroppedBytes: dropped });
        },
        wiped: (receipt, error) => {
          this.unwiped--;
          this.pool.release(cell);
          if (receipt) this.report(job.jobId, { type: 'job.wiped', jobId: job.jobId, receipt, timings: rounded(pick(cell.timings, /^wipe_/)) });
          else if (error) this.log('wipe failed; the volume is left for reconcile', { job: job.jobId, cell: cell.id, error });
        },
      });
    } catch (e) {
      session?.close();
      this.running.delete(job.jobId);
      this.unwiped--;
      await cell.wipe().catch(() => {});
      this.pool.release(cell);
      return this.fail(job, `assignment failed: ${(e as Error).message}`);
    }
    if (session && this.running.get(job.jobId) === cell) this.sandboxes.set(job.jobId, session);
    this.channel.send({
      type: 'job.started',
      jobId: job.jobId,
      cellId: cell.id,
      timings: rounded({ take_ms: tTaken - t0, assign_ms: performance.now() - tTaken, cold: cold ? 1 : 0 }),
    });
  }

  /** pause stops reading a cell's output until the channel drains (checked every BACKPRESSURE_POLL_MS). */
  private pause(cell: Cell): void {
    cell.pauseOutput();
    this.paused.add(cell);
    this.drainTimer ??= setInterval(() => {
      if (this.channel.congested() && this.paused.size > 0) return;
      for (const c of this.paused) c.resumeOutput();
      this.paused.clear();
      clearInterval(this.drainTimer!);
      this.drainTimer = null;
    }, BACKPRESSURE_POLL_MS);
  }

  private fail(job: JobSpec, message: string): void {
    this.log('job failed to start', { job: job.jobId, message });
    this.report(job.jobId, { type: 'job.ended', jobId: job.jobId, end: endOf('error', message), timings: {} });
  }

  /** report sends a final report, kept for replay after a reconnect. */
  private report(jobId: string, msg: AgentToControl): void {
    this.keepFinal(jobId, msg);
    this.channel.send(msg);
  }

  /** shutdown ends running jobs as errors, wipes every cell and reports before returning. */
  async shutdown(): Promise<void> {
    this.stopping = true;
    this.loadReporter.close();
    await Promise.all([...this.running.values()].map((c) => c.stop('shutdown')));
    await this.pool.drain();
    const deadline = Date.now() + 15_000;
    while ((this.running.size > 0 || this.unwiped > 0) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    await this.channel.flushed(2000);
  }
}

/** endOf is an end with no exit code or signal, its message cut to what the control plane accepts. */
function endOf(reason: JobEnd['reason'], message: string): JobEnd {
  return { reason, exitCode: null, signal: null, message: message.slice(0, MAX_END_MESSAGE_CHARS) };
}

function clipErrors(pool: PoolStatus): PoolStatus {
  return Object.fromEntries(Object.entries(pool).map(([k, e]) => [k, { ...e, lastError: e.lastError?.slice(0, MAX_POOL_ERROR_CHARS) ?? null }]));
}

function pick(t: Record<string, number>, pattern: RegExp): Record<string, number> {
  return Object.fromEntries(Object.entries(t).filter(([k]) => pattern.test(k)));
}

function rounded(t: Record<string, number>): Record<string, number> {
  return Object.fromEntries(Object.entries(t).map(([k, v]) => [k, Math.round(v * 1000) / 1000]));
}

function assertNever(x: never): never {
  throw new Error(`unhandled message ${JSON.stringify(x)}`);
}
