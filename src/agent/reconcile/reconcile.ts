/**
 * Reconcile: destroy everything this agent owns on the host that is not a live cell. Runs at agent start-up, from
 * `cleanroom down` (the agent's `--reconcile` mode) and again later for whatever could not be removed the first time.
 * It never throws: every object it could not remove is returned as a Leftover, to be reported and retried.
 */
import { detachMountsUnder, mountsUnder } from '../images/cell-root.js';
import { existsSync, readdirSync, readFileSync, rmSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import type { CellRuntime } from '../runtime/cell-runtime.js';
import { CellCgroup, listCgroups } from '../cells/cgroup.js';
import { reconcileVolumes } from '../storage/reconcile.js';
import { volumePaths, wipeVolume } from '../storage/volume.js';
import { reconcileNetworks, type ReconcileReport as NetworkReconcileReport } from '../network/reconcile.js';
import { cellIdFromNetns, hubNetnsName, isCellHostIf, uplinkIfName } from '../network/names.js';
import { run } from '../exec.js';
import type { WipeReceipt } from '../../shared/wire.js';
import { ReceiptSpool } from './receipt-spool.js';

/** networkPrefix is the prefix of every netns, interface and nft table of an agent: `cr` + its 6-hex id. */
export function networkPrefix(agentId: string): string {
  return `cr${agentId}`;
}

/** CGROUP_KILL_TIMEOUT_MS bounds the wait for a killed cell's processes to leave its cgroup. */
const CGROUP_KILL_TIMEOUT_MS = 5_000;
/** Transient failures (a runtime mid-teardown, a cgroup emptying) are retried this many times in one pass. */
const ATTEMPTS = 3;
const RETRY_DELAY_MS = 200;

/** LeftoverKind names the host objects reconcile removes. */
export type LeftoverKind = 'container' | 'cgroup' | 'volume' | 'netns' | 'link' | 'nft' | 'directory';

/** Leftover is a host object reconcile could not remove, with why; `id` is enough to retry it alone. */
export interface Leftover {
  kind: LeftoverKind;
  id: string;
  error: string;
}

/** ReconcileReport counts what was found and destroyed, and what is left. */
export interface ReconcileReport {
  containers: string[];
  /** Cgroups that still held processes, which reconcile killed. */
  killed: string[];
  cgroups: string[];
  directories: string[];
  /** Mounts (image cells' roots) detached under the cells directory. */
  mounts: string[];
  /** Receipts of leftover volumes, with the job each belonged to when known. */
  wipes: Array<{ jobId: string | null; receipt: WipeReceipt }>;
  networks: NetworkReconcileReport;
  /** Everything that could not be removed; empty when the host holds nothing of this agent's but live cells. */
  leftovers: Leftover[];
}

/** ReconcileOptions says whose objects to look for and where. */
export interface ReconcileOptions {
  agentId: string;
  runtimes: readonly CellRuntime[];
  cellsDir: string;
  volumesDir: string;
  /** Receipts are written here as soon as a volume is shredded, so that none is lost if this process dies. */
  spool: ReceiptSpool;
}

/** reconcileHost runs before any cell of this agent exists: every owned leftover goes. */
export async function reconcileHost(opts: ReconcileOptions): Promise<ReconcileReport> {
  const prefix = `cr-${opts.agentId}-`;
  const report: ReconcileReport = {
    containers: [],
    killed: [],
    cgroups: [],
    directories: [],
    mounts: [],
    wipes: [],
    networks: { netns: [], links: [], nftElements: 0, tableRemoved: false },
    leftovers: [],
  };
  mkdirSync(opts.cellsDir, { recursive: true, mode: 0o711 });
  mkdirSync(opts.volumesDir, { recursive: true, mode: 0o711 });
  const jobOfCell = readJobMarkers(opts.cellsDir);

  // Processes first: a volume can only be shredded once nothing holds its files.
  for (const rt of opts.runtimes) {
    let ids: string[] = [];
    try {
      ids = await retry(() => rt.list());
    } catch (e) {
      report.leftovers.push({ kind: 'container', id: `${rt.name}:*`, error: `cannot list containers: ${message(e)}` });
    }
    for (const id of ids.filter((i) => i.startsWith(prefix))) {
      const left = await removeContainer(rt, id);
      if (left) report.leftovers.push(left);
      else report.containers.push(`${rt.name}:${id}`);
    }
  }
  // Whatever the runtimes did not kill (a runtime's state lost mid-create, a process slow to die) is killed here.
  for (const name of listCgroups(prefix)) {
    const cgroup = new CellCgroup(name);
    if (cgroup.pids().length === 0) continue;
    report.killed.push(name);
    if (!(await cgroup.kill(CGROUP_KILL_TIMEOUT_MS))) report.leftovers.push({ kind: 'cgroup', id: name, error: `processes ${cgroup.pids().join(', ')} did not exit after SIGKILL` });
  }

  const volumes = await reconcileVolumes(opts.volumesDir, []);
  for (const receipt of volumes.wiped) {
    const jobId = (receipt.cellId && jobOfCell.get(receipt.cellId)) || null;
    opts.spool.write(jobId, receipt);
    report.wipes.push({ jobId, receipt });
  }
  for (const f of volumes.failed) report.leftovers.push({ kind: 'volume', id: f.volumeId, error: f.error.message });

  const netPrefix = networkPrefix(opts.agentId);
  try {
    report.networks = await reconcileNetworks(netPrefix, []);
  } catch (e) {
    report.leftovers.push({ kind: 'nft', id: netPrefix, error: message(e) });
  }
  report.leftovers.push(...networkLeftovers(netPrefix));

  for (const name of listCgroups(prefix)) {
    const left = await removeCgroup(name);
    if (left) report.leftovers.push(left);
    else report.cgroups.push(name);
  }
  // A cell's directory holds its job marker: keep it while its volume may still need a receipt.
  const keep = new Set(report.leftovers.filter((l) => l.kind === 'volume').map((l) => cellOfVolume(opts.volumesDir, l.id)));
  // Image cells' roots (an overlay over idmapped layers, both read-only) are detached before their directories go.
  report.mounts = detachMountsUnder(opts.cellsDir);
  const stillMounted = new Set(mountsUnder(opts.cellsDir).map((m) => m.slice(opts.cellsDir.length + 1).split('/')[0]));
  for (const entry of readdirSync(opts.cellsDir)) {
    if (keep.has(entry)) continue;
    if (stillMounted.has(entry)) {
      report.leftovers.push({ kind: 'directory', id: entry, error: 'a mount under it could not be detached' });
      continue;
    }
    try {
      rmSync(join(opts.cellsDir, entry), { recursive: true, force: true });
      report.directories.push(entry);
    } catch (e) {
      report.leftovers.push({ kind: 'directory', id: entry, error: message(e) });
    }
  }
  return report;
}

/** retryLeftovers tries again to remove what an earlier pass left, one object at a time; returns what is still left. */
export async function retryLeftovers(opts: ReconcileOptions, leftovers: readonly Leftover[]): Promise<{ left: Leftover[]; wipes: ReconcileReport['wipes'] }> {
  const left: Leftover[] = [];
  const wipes: ReconcileReport['wipes'] = [];
  const jobOfCell = readJobMarkers(opts.cellsDir);
  // Dependencies first: containers and processes, then volumes, then the rest.
  const order: LeftoverKind[] = ['container', 'cgroup', 'volume', 'netns', 'link', 'nft', 'directory'];
  for (const l of [...leftovers].sort((a, b) => order.indexOf(a.kind) - order.indexOf(b.kind))) {
    try {
      switch (l.kind) {
        case 'container': {
          const [rtName, id] = l.id.split(':');
          const rt = opts.runtimes.find((r) => r.name === rtName);
          if (!rt || !id) continue;
          const ids = id === '*' ? (await rt.list()).filter((i) => i.startsWith(`cr-${opts.agentId}-`)) : [id];
          for (const i of ids) {
            const again = await removeContainer(rt, i);
            if (again) left.push(again);
          }
          break;
        }
        case 'cgroup': {
          const cgroup = new CellCgroup(l.id);
          if (!(await cgroup.kill(CGROUP_KILL_TIMEOUT_MS))) throw new Error(`processes ${cgroup.pids().join(', ')} did not exit after SIGKILL`);
          const again = await removeCgroup(l.id);
          if (again) left.push(again);
          break;
        }
        case 'volume': {
          const cellId = cellOfVolume(opts.volumesDir, l.id);
          const receipt = await wipeVolume({ root: opts.volumesDir, id: l.id });
          const jobId = (cellId && jobOfCell.get(cellId)) || null;
          opts.spool.write(jobId, receipt);
          wipes.push({ jobId, receipt });
          if (cellId) removeCellDir(opts.cellsDir, cellId);
          break;
        }
        case 'netns':
        case 'link': {
          // The network hub and its uplink serve every cell while the agent runs (openHub reuses what a sweep left):
          // like the table, they wait for the next stop.
          const prefix = networkPrefix(opts.agentId);
          if (l.id === hubNetnsName(prefix) || l.id === uplinkIfName(prefix)) left.push(l);
          else if (l.kind === 'netns' && existsSync(`/run/netns/${l.id}`)) await run(['ip', 'netns', 'del', l.id]);
          else if (l.kind === 'link' && existsSync(`/sys/class/net/${l.id}`)) await run(['ip', 'link', 'del', l.id]);
          break;
        }
        case 'nft':
          // Only at start-up or shutdown is the whole table removed; later, a failed sweep waits for the next stop.
          left.push(l);
          break;
        case 'directory':
          removeCellDir(opts.cellsDir, l.id);
          break;
        default: {
          const never: never = l.kind;
          throw new Error(`unknown leftover ${String(never)}`);
        }
      }
    } catch (e) {
      left.push({ ...l, error: message(e) });
    }
  }
  return { left, wipes };
}

async function removeContainer(rt: CellRuntime, id: string): Promise<Leftover | null> {
  try {
    await retry(() => rt.delete(id));
    return null;
  } catch (e) {
    // The runtime could not delete it (its state may be half-written): its processes are killed through the cgroup,
    // and its state directory goes with the runtime's next successful delete or the next pass.
    await new CellCgroup(id).kill(CGROUP_KILL_TIMEOUT_MS);
    try {
      await rt.delete(id);
      return null;
    } catch {
      return { kind: 'container', id: `${rt.name}:${id}`, error: message(e) };
    }
  }
}

async function removeCgroup(name: string): Promise<Leftover | null> {
  const cgroup = new CellCgroup(name);
  try {
    await retry(async () => {
      // EBUSY: a task is still in it (the runtime's delete does not wait for every process to be gone).
      if (cgroup.pids().length > 0) await cgroup.kill(CGROUP_KILL_TIMEOUT_MS);
      cgroup.remove();
    });
    return null;
  } catch (e) {
    return { kind: 'cgroup', id: name, error: message(e) };
  }
}

/** networkLeftovers lists netns and host interfaces of this agent that still exist after a full sweep. */
function networkLeftovers(prefix: string): Leftover[] {
  const out: Leftover[] = [];
  for (const n of listDir('/run/netns')) if (cellIdFromNetns(prefix, n) !== undefined || n === hubNetnsName(prefix)) out.push({ kind: 'netns', id: n, error: 'still present after the sweep' });
  for (const n of listDir('/sys/class/net')) if (isCellHostIf(prefix, n) || n === uplinkIfName(prefix)) out.push({ kind: 'link', id: n, error: 'still present after the sweep' });
  return out;
}

/** removeCellDir detaches an image cell's root mounts, then removes the cell's directory (never through a mount). */
function removeCellDir(cellsDir: string, cellId: string): void {
  const dir = join(cellsDir, cellId);
  detachMountsUnder(dir);
  if (mountsUnder(dir).some((m) => m !== dir)) throw new Error(`a mount under cell ${cellId} could not be detached`);
  rmSync(dir, { recursive: true, force: true });
}

function readJobMarkers(cellsDir: string): Map<string, string> {
  const jobOfCell = new Map<string, string>();
  for (const cellId of listDir(cellsDir)) {
    try {
      jobOfCell.set(cellId, readFileSync(join(cellsDir, cellId, 'job'), 'utf8').trim());
    } catch {
      /* never assigned */
    }
  }
  return jobOfCell;
}

/** cellOfVolume reads which cell a volume was made for from its single-use marker ('' if unknown). */
function cellOfVolume(volumesDir: string, volumeId: string): string {
  try {
    const marker = JSON.parse(readFileSync(volumePaths(volumesDir, volumeId).marker, 'utf8')) as { cellId?: unknown };
    return typeof marker.cellId === 'string' ? marker.cellId : '';
  } catch {
    return '';
  }
}

async function retry<T>(fn: () => Promise<T>): Promise<T> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await fn();
    } catch (e) {
      if (attempt >= ATTEMPTS) throw e;
      await new Promise((r) => setTimeout(r, RETRY_DELAY_MS * attempt));
    }
  }
}

function listDir(path: string): string[] {
  try {
    return readdirSync(path);
  } catch {
    return [];
  }
}

function message(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}
