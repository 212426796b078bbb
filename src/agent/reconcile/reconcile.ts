/** Start-up reconcile: destroy everything this agent owns on the host that is not a live cell. */
import { readdirSync, readFileSync, rmSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import type { CellRuntime } from '../runtime/cell-runtime.js';
import { CellCgroup, listCgroups } from '../cells/cgroup.js';
import { reconcileVolumes } from '../storage/reconcile.js';
import { reconcileNetworks, type ReconcileReport as NetworkReconcileReport } from '../network/reconcile.js';
import type { WipeReceipt } from '../../shared/wire.js';

/** networkPrefix is the prefix of every netns, interface and nft table of an agent: `cr` + its 6-hex id. */
export function networkPrefix(agentId: string): string {
  return `cr${agentId}`;
}

/** ReconcileReport counts what was found and destroyed. */
export interface ReconcileReport {
  containers: string[];
  cgroups: string[];
  directories: string[];
  /** Receipts of leftover volumes, with the job each belonged to when known. */
  wipes: Array<{ jobId: string | null; receipt: WipeReceipt }>;
  wipeFailures: Array<{ volumeId: string; error: string }>;
  networks: NetworkReconcileReport;
}

/** reconcileHost runs at agent start-up, before any cell exists: every owned leftover goes. */
export async function reconcileHost(opts: { agentId: string; runtimes: Iterable<CellRuntime>; cellsDir: string; volumesDir: string }): Promise<ReconcileReport> {
  const prefix = `cr-${opts.agentId}-`;
  const report: ReconcileReport = { containers: [], cgroups: [], directories: [], wipes: [], wipeFailures: [], networks: { netns: [], links: [], nftElements: 0, tableRemoved: false } };
  mkdirSync(opts.cellsDir, { recursive: true, mode: 0o711 });
  const jobOfCell = new Map<string, string>();
  for (const cellId of readdirSync(opts.cellsDir)) {
    try {
      jobOfCell.set(cellId, readFileSync(join(opts.cellsDir, cellId, 'job'), 'utf8').trim());
    } catch {
      /* never assigned */
    }
  }
  // Processes first: a volume can only be shredded once nothing holds its files.
  for (const rt of opts.runtimes) {
    for (const id of await rt.list()) {
      if (!id.startsWith(prefix)) continue;
      await rt.delete(id);
      report.containers.push(`${rt.name}:${id}`);
    }
  }
  mkdirSync(opts.volumesDir, { recursive: true, mode: 0o711 });
  const volumes = await reconcileVolumes(opts.volumesDir, []);
  for (const receipt of volumes.wiped) report.wipes.push({ jobId: (receipt.cellId && jobOfCell.get(receipt.cellId)) || null, receipt });
  for (const f of volumes.failed) report.wipeFailures.push({ volumeId: f.volumeId, error: f.error.message });
  report.networks = await reconcileNetworks(networkPrefix(opts.agentId), []);
  for (const name of listCgroups(prefix)) {
    new CellCgroup(name).remove();
    report.cgroups.push(name);
  }
  for (const entry of readdirSync(opts.cellsDir)) {
    rmSync(join(opts.cellsDir, entry), { recursive: true, force: true });
    report.directories.push(entry);
  }
  return report;
}
