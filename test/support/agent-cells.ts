/**
 * AgentCells assembles the agent's cell machinery in the test process, as src/agent/main.ts does (real runtimes, network
 * host, gateway, encrypted volumes, image store), without a control plane: tests prepare, assign and wipe cells
 * directly and look at the host between the steps. close() reconciles like an agent's shutdown and removes the dir.
 */
import { chmodSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { Cell, type CellEnvironment } from '../../src/agent/cells/cell.js';
import type { SizeClass } from '../../src/agent/cells/size-class.js';
import { UidRanges } from '../../src/agent/cells/uid-ranges.js';
import { GatewayServices } from '../../src/agent/gateway/gateway-services.js';
import { ImageStore, type PreparedImage } from '../../src/agent/images/image-store.js';
import { CellNetworkHost } from '../../src/agent/network/cell-network.js';
import { Ipam } from '../../src/agent/network/ipam.js';
import { ReceiptSpool } from '../../src/agent/reconcile/receipt-spool.js';
import { networkPrefix, reconcileHost, type ReconcileOptions, type ReconcileReport } from '../../src/agent/reconcile/reconcile.js';
import type { CellRuntime } from '../../src/agent/runtime/cell-runtime.js';
import { OciRuntime } from '../../src/agent/runtime/oci-runtime.js';
import { buildRootfs } from '../../src/agent/runtime/rootfs.js';
import { ensureSharedRoot, releaseSharedRoot } from '../../src/agent/storage/shared-root.js';
import { RUNTIMES, type JobEnd, type JobSpec, type Runtime, type WipeReceipt } from '../../src/shared/wire.js';
import { REPO_ROOT, unusedPool } from './cluster.js';
import { prepareCrunHost } from '../../src/agent/runtime/crun-host.js';

/** PLATFORM_CA stands for the platform's CA in test cells' trust stores. */
export const PLATFORM_CA = '-----BEGIN CERTIFICATE-----\nTEST-PLATFORM-CA\n-----END CERTIFICATE-----\n';

/** SMALL is the size class test cells use. */
export const SMALL: SizeClass = { name: 'small', cpu: 1, memoryBytes: 256 << 20, pids: 256, diskBytes: 64 << 20 } as SizeClass;

/** CellRun is what a job produced in a cell. */
export interface CellRun {
  stdout: string;
  stderr: string;
  end: JobEnd;
  receipt: WipeReceipt | null;
}

/** AgentCells is one test agent's cells on this host. */
export class AgentCells {
  private readonly runtimes = new Map<Runtime, CellRuntime>();
  private readonly uids: UidRanges;
  readonly reconcileOptions: ReconcileOptions;

  private constructor(
    readonly dir: string,
    readonly agentId: string,
    readonly env: CellEnvironment,
    readonly images: ImageStore,
    private readonly gateway: GatewayServices,
    private readonly host: CellNetworkHost,
  ) {
    this.uids = new UidRanges(parseInt(this.agentId, 16));
    for (const name of RUNTIMES) this.runtimes.set(name, new OciRuntime({ name, stateRoot: join(dir, 'agent', name) }));
    this.reconcileOptions = { agentId: this.agentId, runtimes: [...this.runtimes.values()], cellsDir: env.cellsDir, volumesDir: env.volumesDir, spool: new ReceiptSpool(join(dir, 'agent', 'receipts')) };
  }

  /** start builds the environment in a fresh directory under /var/tmp. */
  static async start(): Promise<AgentCells> {
    // As the agent does at start: crun needs the hybrid cgroup layout's v2 hierarchy empty.
    const crun = await prepareCrunHost();
    if (!crun.ok) throw new Error(`crun cannot run here: ${crun.reason}`);
    const dir = mkdtempSync('/var/tmp/cleanroom-test-imgcells-');
    chmodSync(dir, 0o711); // runc resolves the root and bind sources as the cell's (unmapped) root
    const agentDir = join(dir, 'agent');
    mkdirSync(join(agentDir, 'cells'), { recursive: true, mode: 0o711 });
    mkdirSync(join(agentDir, 'volumes'), { recursive: true, mode: 0o711 });
    await ensureSharedRoot(join(agentDir, 'volumes'));
    const gateway = new GatewayServices({ dataService: { host: '127.0.0.1', port: 9 }, dataPort: 443, dnsUpstream: null, log: () => {} });
    const pool = unusedPool();
    const agentId = randomBytes(3).toString('hex');
    const host = await CellNetworkHost.open({ prefix: networkPrefix(agentId), pool, onGateway: (a) => gateway.openOn(a) });
    const images = new ImageStore({ root: join(dir, 'images'), platformCa: PLATFORM_CA });
    await images.open();
    const rootfs = join(agentDir, 'rootfs');
    buildRootfs(rootfs, join(REPO_ROOT, 'build/cell-init'), PLATFORM_CA);
    const env: CellEnvironment = {
      agentId,
      cellsDir: join(agentDir, 'cells'),
      volumesDir: join(agentDir, 'volumes'),
      wipeStats: { wiping: 0, wiped: 0, wipeFailed: 0 },
      networking: { host, ipam: new Ipam({ pool }), gateway },
      rootfs,
      unpackedImagesDir: images.unpackedDir,
      nofile: 1024,
      exitGraceMs: 2000,
    };
    return new AgentCells(dir, agentId, env, images, gateway, host);
  }

  /** prepare makes a warm cell on `image` (or the host root). */
  async prepare(runtime: Runtime, image: PreparedImage | null): Promise<Cell> {
    const cell = new Cell(this.env, this.runtimes.get(runtime)!, SMALL, this.uids.acquire(), image);
    try {
      await cell.prepare();
    } catch (e) {
      await cell.wipe().catch(() => {});
      throw e;
    }
    return cell;
  }

  /** run assigns a job to a warm cell and waits for its end and its wipe. */
  async run(cell: Cell, job: Partial<JobSpec> & { command: string[] }): Promise<CellRun> {
    const spec: JobSpec = {
      env: {},
      cwd: '/work',
      cpu: 1,
      memoryBytes: 256 << 20,
      timeoutSeconds: 60,
      diskBytes: 64 << 20,
      runtime: cell.runtimeName as Runtime,
      jobId: `job_${randomBytes(6).toString('hex')}`,
      workspaceId: 'ws_imagetest',
      egress: { allow: [], dryRun: false },
      outputLimitBytes: 1 << 20,
      image: cell.image ? { digest: cell.image.manifest.digest, uid: null, gid: null } : null,
      ...job,
    } as JobSpec;
    let stdout = '';
    let stderr = '';
    return new Promise<CellRun>((resolve, reject) => {
      let end: JobEnd | null = null;
      cell
        .assign(spec, { token: 'a.b.c', expiresAt: new Date(Date.now() + 3600_000).toISOString() }, {
          output: (s, d) => (s === 'stdout' ? (stdout += d.toString()) : (stderr += d.toString())),
          ended: (e) => (end = e),
          wiped: (receipt, error) => (error ? reject(new Error(error)) : resolve({ stdout, stderr, end: end!, receipt })),
        })
        .catch(reject);
    });
  }

  /** reconcile runs the agent's start-up reconcile over this agent's objects (what a restart after a crash does). */
  reconcile(): Promise<ReconcileReport> {
    return reconcileHost(this.reconcileOptions);
  }

  /** close tears everything down like an agent's shutdown and removes the directory. */
  async close(): Promise<void> {
    await this.gateway.close();
    await this.host.close();
    await this.reconcile();
    await releaseSharedRoot(this.env.volumesDir);
    rmSync(this.dir, { recursive: true, force: true });
  }
}

/** mountLines are the lines of /proc/self/mountinfo whose mount point is under `dir`. */
export function mountLines(dir: string): string[] {
  return readFileSync('/proc/self/mountinfo', 'utf8').split('\n').filter((l) => (l.split(' ')[4] ?? '').startsWith(`${dir}/`));
}
