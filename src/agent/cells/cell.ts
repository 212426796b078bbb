/** Cell is one single-use confined container: prepared without tenant data, assigned once, then wiped. */
import { closeSync, constants, mkdirSync, openSync, writeFileSync } from 'node:fs';
import { removeFlatDir } from '../runtime/flat-dir.js';
import { Socket } from 'node:net';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import type { JobEnd, JobSpec, WipeReceipt, WorkloadCredentials } from '../../shared/wire.js';
import { prepareVolume, VolumeBusyError, wipeVolume, type Volume } from '../storage/volume.js';
import type { CellRuntime, CreatedContainer } from '../runtime/cell-runtime.js';
import { CELL_CA_FILE, CELL_FILES_DIR, CELL_INIT_PATH, cellSpec, WORKLOAD_UID } from '../runtime/spec.js';
import { cellSeccompProfileJson } from '../runtime/seccomp.js';
import { mountImageRoot, unmountImageRoot, type CellRoot } from '../images/cell-root.js';
import type { PreparedImage } from '../images/image-store.js';
import { makeFifo, type SpawnOptions } from '../runtime/host-calls.js';
import { CellCgroup } from './cgroup.js';
import { encodeAssignment, encodeFile, encodeStart, FrameDecoder, type CellFrame } from './frames.js';
import { encodeSandboxAssignment, INIT_CHUNK_BYTES, MAX_INIT_OPS, MAX_INIT_PROCS, type SandboxFrame } from '../sandbox/init-codec.js';
import type { SizeClass } from './size-class.js';
import type { CellNetwork, CellNetworkHost } from '../network/cell-network.js';
import type { CellAddress, Ipam } from '../network/ipam.js';
import type { GatewayServices } from '../gateway/gateway-services.js';
import { DATA_SERVICE_NAME, MAX_ASSIGNMENT_BYTES, MAX_CELL_FILE_BYTES } from '../../shared/wire.js';

/** CellState is where a cell is in its life. */
export type CellState = 'preparing' | 'warm' | 'assigned' | 'exited' | 'wiping' | 'wiped';

/** CellEnvironment is what every cell of one agent shares. */
export interface CellEnvironment {
  agentId: string;
  cellsDir: string;
  /** Where encrypted volumes live (backing files, mount points, single-use markers). */
  volumesDir: string;
  /** Shared counters of volume wipes, for `cleanroom pool`. */
  wipeStats: WipeStats;
  /** The agent's network layer: every cell gets a private network from it. */
  networking: CellNetworking;
  /** The root shared by host-root cells (host /usr, synthetic /etc; cell init's copy at CELL_INIT_PATH). */
  rootfs: string;
  /** The image store's `unpacked/` directory (image cells mount it idmapped for their overlay). */
  unpackedImagesDir: string;
  nofile: number;
  /** How long a workload may linger after its exit frame before the cell is force-deleted. */
  exitGraceMs: number;
}

/** CellNetworking is the agent's network host, its address allocator and the gateway services cells may reach. */
export interface CellNetworking {
  host: CellNetworkHost;
  ipam: Ipam;
  gateway: GatewayServices;
}

/** WipeStats counts volumes being wiped, wiped, and whose wipe failed. */
export interface WipeStats {
  wiping: number;
  wiped: number;
  wipeFailed: number;
}

/** CellEvents receive what a running workload produces, then the end, then the wipe receipt. */
export interface CellEvents {
  output(stream: 'stdout' | 'stderr', data: Buffer): void;
  ended(end: JobEnd, timings: Record<string, number>): void;
  wiped(receipt: WipeReceipt | null, error: string | null): void;
  /** sandboxFrame receives what a sandbox's supervisor reports (sandbox mode only). */
  sandboxFrame?(frame: SandboxFrame): void;
}

/** SANDBOX_SUBNET is the address allocator's key for the subnet gVisor cells share (workspace ids never look like it). */
const SANDBOX_SUBNET = 'shared:runsc';

/** CONTROL_QUEUE_LIMIT bounds what waits for a cell to read its control FIFO: the largest assignment and its files. */
const CONTROL_QUEUE_LIMIT = MAX_ASSIGNMENT_BYTES + 4 * MAX_CELL_FILE_BYTES;
/**
 * SANDBOX_CONTROL_QUEUE_LIMIT bounds the same for a sandbox: a few process starts, and the stdin and write data every
 * process and operation may have in flight (the session keeps each within INIT_CHUNK_BYTES).
 */
const SANDBOX_CONTROL_QUEUE_LIMIT = 4 * MAX_ASSIGNMENT_BYTES + (MAX_INIT_PROCS + MAX_INIT_OPS) * (INIT_CHUNK_BYTES + 64);
/** SANDBOX_READY_TIMEOUT_MS bounds the wait for a sandbox's supervisor to report ready after the start. */
const SANDBOX_READY_TIMEOUT_MS = 10_000;

const WIPE_BUSY_RETRIES = 10;
const WIPE_BUSY_DELAY_MS = 100;

/** Cell owns a container, its cgroup, its directories and its uid range, and destroys them all at the end. */
export class Cell {
  readonly id = randomBytes(5).toString('hex');
  readonly name: string;
  state: CellState = 'preparing';
  readonly timings: Record<string, number> = {};
  private readonly dir: string;
  private readonly cgroup: CellCgroup;
  private container: CreatedContainer | null = null;
  /** The agent's end of the cell's control FIFO: non-blocking, so a cell that stops reading never stalls the agent. */
  private control: Socket | null = null;
  /** When cell init was told to start the workload. */
  private handedOverAt = 0;
  private job: JobSpec | null = null;
  private events: CellEvents | null = null;
  private exitFrame: CellFrame | null = null;
  private stopReason: 'cancelled' | 'timeout' | 'shutdown' | null = null;
  private protocolError: string | null = null;
  private timers: NodeJS.Timeout[] = [];
  private deadline: NodeJS.Timeout | null = null;
  /** A sandbox's supervisor reported ready; rejected if the cell ends first. */
  private ready: { resolve: () => void; reject: (e: Error) => void } | null = null;
  /** The env a sandbox's processes start with (the job's and the platform's); set at assignment. */
  private env0: Readonly<Record<string, string>> = {};
  private wiped: Promise<WipeReceipt | null> | null = null;
  private volume: Volume | null = null;
  private network: CellNetwork | null = null;
  private address: CellAddress | null = null;
  /** An image cell's root mounts; null for a host-root cell or once unmounted. */
  private root: CellRoot | null = null;
  private readonly decoder = new FrameDecoder();

  constructor(
    private readonly env: CellEnvironment,
    private readonly runtime: CellRuntime,
    readonly sizeClass: SizeClass,
    readonly hostUidBase: number,
    /** The image whose files are this cell's root, or null for the host's /usr under a synthetic /etc. */
    readonly image: PreparedImage | null = null,
  ) {
    this.name = `cr-${env.agentId}-${this.id}`;
    this.dir = join(env.cellsDir, this.id);
    this.cgroup = new CellCgroup(this.name);
  }

  /** runtimeName is the OCI runtime this cell runs under. */
  get runtimeName(): string {
    return this.runtime.name;
  }

  /**
   * prepare creates the container with cell init waiting; nothing of any tenant is involved. `{ background: true }`: a
   * refill's (its runtime processes get the background CPU weight, runtime/background.ts), not a start's.
   */
  async prepare(options: SpawnOptions = {}): Promise<void> {
    const t0 = performance.now();
    const user = this.image?.user ?? { uid: WORKLOAD_UID, gid: WORKLOAD_UID };
    mkdirSync(this.dir, { mode: 0o711 });
    if (this.image) {
      this.root = mountImageRoot(this.dir, this.env.unpackedImagesDir, this.image, this.hostUidBase, this.runtime.name);
      this.timings.prepare_root_ms = performance.now() - t0;
    }
    // Every writable path of the cell (/work, /tmp) is on its own fscrypt-encrypted volume, owned by its workload user.
    const tVolume = performance.now();
    this.volume = await prepareVolume({ root: this.env.volumesDir, cellId: this.id, uid: this.hostUidBase + user.uid, gid: this.hostUidBase + user.gid, sizeBytes: this.sizeClass.diskBytes });
    this.timings.prepare_volume_ms = performance.now() - tVolume;
    // A private network namespace with its veth, attached to nothing until assignment. gVisor reads its network once,
    // when the sandbox starts (now, before any tenant is known), so a runsc cell takes its address here from a subnet
    // shared by all gVisor cells; what it may reach is still bound per cell at assignment.
    const { host, ipam } = this.env.networking;
    if (this.runtime.name === 'runsc') this.address = ipam.allocate(SANDBOX_SUBNET);
    this.network = await host.prepareCellNetwork(this.id, this.address ?? undefined);
    this.timings.prepare_network_ms = performance.now() - tVolume - this.timings.prepare_volume_ms;
    const { workDir, tmpDir } = this.volume;
    const fifo = join(this.dir, 'control');
    makeFifo(fifo, 0o600);
    // We hold the FIFO read-write so it never reports EOF to init while we live; init gets a read-only end.
    const controlFd = openSync(fifo, constants.O_RDWR);
    this.control = new Socket({ fd: controlFd, readable: false, writable: true });
    // Writes to a cell that refused its input and exited are dropped with the cell; nothing to report here.
    this.control.on('error', () => {});
    const initFd = openSync(fifo, constants.O_RDONLY | constants.O_NONBLOCK);
    const c = this.sizeClass;
    const seccompJson = cellSeccompProfileJson(this.runtime.name);
    writeFileSync(
      join(this.dir, 'config.json'),
      JSON.stringify(
        cellSpec({
          runtime: this.runtime.name,
          rootfs: this.root?.rootfs ?? this.env.rootfs,
          image: this.image ? { initBinary: join(this.env.rootfs, CELL_INIT_PATH), uid: user.uid, gid: user.gid } : null,
          workDir,
          tmpDir,
          hostUidBase: this.hostUidBase,
          cgroupsPath: this.cgroup.path,
          netnsPath: this.network?.netnsPath ?? null,
          memoryBytes: c.memoryBytes,
          cpuMillis: Math.round(c.cpu * 1000),
          pids: this.runtime.name === 'runsc' ? Math.max(c.pids, 1024) : c.pids,
          nofile: this.env.nofile,
          annotations: this.runtime.specAnnotations(seccompJson),
        }),
      ),
      { mode: 0o600 },
    );
    this.timings.prepare_fs_ms = performance.now() - t0;
    try {
      this.container = await this.runtime.create(this.name, this.dir, initFd, seccompJson, options);
    } finally {
      closeSync(initFd);
    }
    this.cgroup.readLimits();
    this.container.stdio.stdout.on('data', (chunk: Buffer) => this.onCellBytes(chunk));
    this.container.stdio.stdout.on('close', () => void this.onCellClosed());
    this.container.stdio.stderr.on('data', () => {}); // runtime diagnostics; the workload's stderr is framed on stdout
    this.timings.prepare_ms = performance.now() - t0;
    this.state = 'warm';
  }

  /**
   * assign sets the job's cgroup limits and hands the job to cell init, then attaches the workspace network while init
   * wakes up and places the files, then tells init to start the workload. Precondition: warm.
   */
  async assign(job: JobSpec, credentials: WorkloadCredentials, events: CellEvents): Promise<void> {
    if (this.state !== 'warm' || this.control === null) throw new Error(`cell ${this.id} is ${this.state}, not warm`);
    const t0 = performance.now();
    this.state = 'assigned';
    this.job = job;
    this.events = events;
    // Only the job id, so that a crash-recovery wipe is credited to the right job: written before anything of the
    // job reaches the cell (a page-cache write), so that no crash leaves a used volume without its job.
    writeFileSync(join(this.dir, 'job'), job.jobId, { mode: 0o600 });
    const { host, ipam, gateway } = this.env.networking;
    if (this.network) this.address ??= ipam.allocate(job.workspaceId);
    const gw = this.address?.gateway;
    // The token travels only over the cell's control FIFO into its private tmpfs: never argv, env or disk.
    const env = {
      PATH: '/usr/local/bin:/usr/bin:/bin',
      HOME: '/work',
      USER: this.image?.user.name ?? 'workload',
      ...job.env,
      CLEANROOM_JOB_ID: job.jobId,
      CLEANROOM_TOKEN_FILE: `${CELL_FILES_DIR}/token`,
      CLEANROOM_DATA_URL: gateway.dataUrl,
      CLEANROOM_CA_FILE: CELL_CA_FILE,
    };
    this.env0 = env;
    const sandbox = job.mode === 'sandbox';
    const assignment = sandbox ? encodeSandboxAssignment() : encodeAssignment(job.command, env, job.cwd);
    // The control plane refuses larger jobs; a cell would refuse this one and end (never block: the write is queued).
    if (assignment.length - 8 > MAX_ASSIGNMENT_BYTES) throw new Error(`the job's command, env and cwd encode to ${assignment.length - 8} bytes; cells accept at most ${MAX_ASSIGNMENT_BYTES}`);
    // The job's limits, and the normal CPU weight in place of a warm cell's low one, before init wakes up to place the
    // files: on a busy host a cell still at the warm weight waits behind everything else for its first time slice.
    this.cgroup.limit(job.memoryBytes, job.cpu);
    this.sendControl(
      Buffer.concat([
        encodeFile('token', 0o400, credentials.token),
        encodeFile('hosts', 0o444, `127.0.0.1 localhost cell\n${gw ? `${gw} ${DATA_SERVICE_NAME}\n` : ''}`),
        encodeFile('resolv.conf', 0o444, gw ? `nameserver ${gw}\noptions timeout:2 attempts:2\n` : ''),
        assignment,
      ]),
    );
    if (this.network && this.address) {
      await host.attachCellNetwork(this.network, { workspaceId: job.workspaceId, address: this.address.address, gateway: this.address.gateway, gatewayPorts: gateway.ports, egress: job.egress });
      gateway.addClient(this.address.address, this.address.gateway, job.egress);
      this.timings.assign_network_ms = performance.now() - t0;
      Object.assign(this.timings, this.network.attachTimings);
    }
    if (this.state !== 'assigned' || this.control === null) throw new Error(`cell ${this.id} ended during assignment`);
    const ready = sandbox ? this.readyPromise() : null;
    this.sendControl(encodeStart());
    this.handedOverAt = performance.now();
    this.resetDeadline(job.timeoutSeconds);
    if (ready) await ready;
    this.timings.assign_ms = performance.now() - t0;
  }

  private readyPromise(): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`the sandbox's supervisor did not report ready within ${SANDBOX_READY_TIMEOUT_MS} ms`)), SANDBOX_READY_TIMEOUT_MS);
      const done = () => clearTimeout(timer);
      this.ready = { resolve: () => (done(), resolve()), reject: (e) => (done(), reject(e)) };
    });
  }

  /** resetDeadline ends the workload as timed out `seconds` from now (a sandbox's sandbox.timeout). Precondition: assigned. */
  resetDeadline(seconds: number): void {
    if (this.state !== 'assigned') return;
    if (this.deadline) clearTimeout(this.deadline);
    this.deadline = setTimeout(() => void this.stop('timeout'), Math.min(seconds * 1000, 2 ** 31 - 1));
  }

  /** workloadEnv is the env a sandbox's processes start with (its job's and the platform's). */
  get workloadEnv(): Readonly<Record<string, string>> {
    return this.env0;
  }

  /** sendToSandbox queues a request for a sandbox's supervisor (see sendControl). Precondition: a sandbox cell. */
  sendToSandbox(bytes: Buffer): void {
    if (this.state !== 'assigned') return;
    this.sendControl(bytes);
  }

  /** refreshCredentials replaces the workload's token file (atomically, by cell init) with a fresh token. */
  refreshCredentials(credentials: WorkloadCredentials): void {
    if (this.state !== 'assigned' || this.control === null) return;
    this.sendControl(encodeFile('token', 0o400, credentials.token));
  }

  /**
   * sendControl queues bytes for cell init. libuv writes at once what the FIFO takes and the rest when init reads, so
   * the agent's thread never waits on a cell. A cell that leaves more than CONTROL_QUEUE_LIMIT unread is stopped.
   */
  private sendControl(bytes: Buffer): void {
    const control = this.control;
    if (!control || control.destroyed) return;
    const limit = this.job?.mode === 'sandbox' ? SANDBOX_CONTROL_QUEUE_LIMIT : CONTROL_QUEUE_LIMIT;
    if (control.writableLength + bytes.length > limit) {
      this.protocolError = `the cell left ${control.writableLength} bytes of its control channel unread`;
      void this.runtime.delete(this.name, { background: true }).catch(() => {});
      return;
    }
    control.write(bytes);
  }

  /** stop ends the workload early; the end is reported once the cell's output closes. */
  async stop(reason: 'cancelled' | 'timeout' | 'shutdown'): Promise<void> {
    if (this.state !== 'assigned') return;
    this.stopReason ??= reason;
    this.resumeOutput(); // a paused cell must still be read to its end
    await this.runtime.delete(this.name).catch(() => {});
  }

  /** pauseOutput stops reading the cell's output: its pipe fills and the workload blocks on its writes (backpressure). */
  pauseOutput(): void {
    if (this.state === 'assigned' && this.stopReason === null) this.container?.stdio.stdout.pause();
  }

  /** resumeOutput reads the cell's output again. */
  resumeOutput(): void {
    this.container?.stdio.stdout.resume();
  }

  private onCellBytes(chunk: Buffer): void {
    let frames: CellFrame[];
    try {
      frames = this.decoder.push(chunk);
    } catch (e) {
      // A cell speaking garbage is hostile or broken: stop listening and kill it.
      this.protocolError = (e as Error).message;
      this.container?.stdio.stdout.destroy();
      return;
    }
    for (const f of frames) {
      if (f.type === 'stdout' || f.type === 'stderr') {
        this.timings.first_output_ms ??= performance.now() - this.handedOverAt; // hand-off → first output at the agent
        // Once the cell is being stopped its output is read only to reach the end, never forwarded.
        if (this.events && !this.exitFrame && this.stopReason === null) this.events.output(f.type, f.data);
      } else if (f.type === 'started') {
        this.timings.init_started_ms ??= performance.now() - this.handedOverAt;
        continue;
      } else if (f.type === 'exit' || f.type === 'error') {
        if (this.exitFrame) continue;
        this.exitFrame = f;
        // Init exits right after its exit frame; if anything holds the cell open, force it down.
        this.timers.push(setTimeout(() => void this.runtime.delete(this.name, { background: true }).catch(() => {}), this.env.exitGraceMs));
      } else if (this.job?.mode === 'sandbox' && this.state === 'assigned') {
        if (f.type === 'ready') {
          this.timings.init_started_ms ??= performance.now() - this.handedOverAt;
          this.ready?.resolve();
          this.ready = null;
        }
        if (this.stopReason === null) this.events?.sandboxFrame?.(f as SandboxFrame);
      } else {
        // A sandbox frame from a job's cell: hostile or broken.
        this.protocolError = `unexpected frame ${f.type}`;
        this.container?.stdio.stdout.destroy();
        return;
      }
    }
  }

  private async onCellClosed(): Promise<void> {
    this.ready?.reject(new Error('the cell ended before its supervisor was ready'));
    this.ready = null;
    const wasAssigned = this.state === 'assigned';
    this.state = 'exited';
    const end = this.judgeEnd(wasAssigned);
    if (wasAssigned) this.events?.ended(end, this.timings);
    let receipt: WipeReceipt | null = null;
    let error: string | null = null;
    try {
      receipt = await this.wipe();
    } catch (e) {
      error = (e as Error).message;
    }
    if (wasAssigned) this.events?.wiped(receipt, error);
  }

  private judgeEnd(wasAssigned: boolean): JobEnd {
    const base = { exitCode: null, signal: null, message: null };
    if (!wasAssigned) return { ...base, reason: 'error', message: 'cell ended before assignment' };
    if (this.stopReason === 'cancelled') return { ...base, reason: 'cancelled' };
    if (this.stopReason === 'timeout') return { ...base, reason: 'timeout', message: `exceeded ${this.job?.timeoutSeconds}s` };
    if (this.stopReason === 'shutdown') return { ...base, reason: 'error', message: 'agent shut down while the job ran' };
    if (this.cgroup.oomKills() > 0) return { ...base, reason: 'oom', message: 'memory limit exceeded' };
    if (this.protocolError) return { ...base, reason: 'error', message: `cell protocol violation: ${this.protocolError}` };
    const f = this.exitFrame;
    if (f?.type === 'exit') {
      if (f.code === 0) return { ...base, reason: 'succeeded', exitCode: 0 };
      return { ...base, reason: 'failed', exitCode: f.code, signal: f.signal };
    }
    if (f?.type === 'error') return { ...base, reason: 'error', message: f.message };
    return { ...base, reason: 'error', message: 'cell init ended without reporting an exit' };
  }

  /** wipe kills every process, then crypto-shreds the volume and removes cgroup and directories; idempotent. */
  wipe(): Promise<WipeReceipt | null> {
    // Wiping is background work (runtime/background.ts): the next job's start goes first.
    this.wiped ??= this.doWipe();
    return this.wiped;
  }

  private async doWipe(): Promise<WipeReceipt | null> {
    const t0 = performance.now();
    // A cell whose output closed has (nearly always) no process left: it is removed without a runtime process.
    const exited = this.state === 'exited';
    this.state = 'wiping';
    for (const t of this.timers) clearTimeout(t);
    if (this.deadline) clearTimeout(this.deadline);
    this.control?.destroy();
    this.control = null;
    if (!exited) await this.runtime.delete(this.name, { background: true });
    else if (!(await this.runtime.deleteStopped(this.name, () => this.cgroup.empty(), { background: true }))) this.timings.wipe_runtime_delete = 1;
    this.container?.stdio.stdout.destroy();
    this.container?.stdio.stderr.destroy();
    this.timings.wipe_container_ms = performance.now() - t0;
    // The gateway's connections of the cell close while its interface still exists (their FIN reaches the cell and is
    // answered): cut after the network went, the host would retransmit into an address a later cell may hold.
    if (this.address) this.env.networking.gateway.removeClient(this.address.address);
    if (this.network) await this.env.networking.host.destroyCellNetwork(this.network);
    if (this.address) this.env.networking.ipam.release(this.address.workspaceId, this.address.address);
    this.timings.wipe_network_ms = performance.now() - t0 - this.timings.wipe_container_ms;
    // The container is gone: nothing runs on the image root any more. A root that cannot be detached keeps the cell's
    // directory (never removed through a mount) for reconcile.
    let rootError: Error | null = null;
    if (this.root) {
      try {
        unmountImageRoot(this.root);
        this.root = null;
      } catch (e) {
        rootError = e as Error;
      }
    }
    const receipt = this.volume ? await this.wipeVolumeWithRetry(this.volume) : null;
    await this.cgroup.removeAsync();
    if (!rootError) removeFlatDir(this.dir);
    this.timings.wipe_ms = performance.now() - t0;
    this.state = 'wiped';
    // The volume is shredded either way (the receipt stands); the mounts left are read-only and reconcile detaches them.
    if (rootError) this.timings.wipe_root_left = 1;
    return receipt;
  }

  private async wipeVolumeWithRetry(volume: Volume): Promise<WipeReceipt> {
    const stats = this.env.wipeStats;
    stats.wiping++;
    try {
      for (let attempt = 0; ; attempt++) {
        try {
          const receipt = await wipeVolume(volume);
          stats.wiped++;
          return receipt;
        } catch (e) {
          // A process that outlived `delete` for a moment can still hold a file: retry briefly.
          if (!(e instanceof VolumeBusyError) || attempt >= WIPE_BUSY_RETRIES) {
            stats.wipeFailed++;
            throw e;
          }
          await new Promise((r) => setTimeout(r, WIPE_BUSY_DELAY_MS));
        }
      }
    } finally {
      stats.wiping--;
    }
  }
}
