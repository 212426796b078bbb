/** Start-up reconcile: destroy everything this agent owns on the host that is not a live cell. */
import { readdirSync, rmSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import type { CellRuntime } from '../runtime/cell-runtime.js';
import { CellCgroup, listCgroups } from '../cells/cgroup.js';

/** ReconcileReport counts what was found and destroyed. */
export interface ReconcileReport {
  containers: string[];
  cgroups: string[];
  directories: string[];
}

/** reconcileHost runs at agent start-up, before any cell exists: every owned leftover goes. */
export async function reconcileHost(opts: { agentId: string; runtimes: Iterable<CellRuntime>; cellsDir: string }): Promise<ReconcileReport> {
  const prefix = `cr-${opts.agentId}-`;
  const report: ReconcileReport = { containers: [], cgroups: [], directories: [] };
  for (const rt of opts.runtimes) {
    for (const id of await rt.list()) {
      if (!id.startsWith(prefix)) continue;
      await rt.delete(id);
      report.containers.push(`${rt.name}:${id}`);
    }
  }
  for (const name of listCgroups(prefix)) {
    new CellCgroup(name).remove();
    report.cgroups.push(name);
  }
  mkdirSync(opts.cellsDir, { recursive: true, mode: 0o711 });
  for (const entry of readdirSync(opts.cellsDir)) {
    rmSync(join(opts.cellsDir, entry), { recursive: true, force: true });
    report.directories.push(entry);
  }
  return report;
}
