// bench/density.ts: host memory per idle warm cell, and warm-start latency with many idle cells on the host.
// Each level is its own cluster whose runc pool target is the level. Host memory used = the mean of MemAvailable before
// the cluster starts and after it has stopped (which cancels a linear drift from other activity) minus MemAvailable
// once the pool is full and settled. The level with 0 cells is the cluster's own overhead; per-cell memory is the
// slope over the levels. The cells' memory cgroups are summed as a cross-check.
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Clusters } from './clusters.js';
import { memAvailableMiB } from './machine.js';
import { measureStarts } from './start-latency.js';
import { round, summarize, type Stats } from './stats.js';

/** DensityLevel is the measurement at one number of idle cells. */
export interface DensityLevel {
  cells: number;
  /** Seconds from starting `up` to the pool being full. */
  up_and_fill_s: number;
  /** Host MemAvailable drop with the cluster up and `cells` idle cells (MiB; see the head of this file). */
  mem_available_delta_mib: number;
  /** Sum of the cells' memory cgroup usage (MiB). */
  cgroup_usage_mib: number;
  /** Warm start at this level (sequential samples, pool refilled before each). */
  warm_start_ms: Stats;
  /** Samples whose wipe receipt never came. */
  wipe_failures: string[];
}

/** SETTLE_MS lets the agent's allocations and the page cache settle before memory is read. */
const SETTLE_MS = 2000;

/** measureDensityLevel runs a cluster holding `cells` idle runc cells, measures memory, then `samples` warm starts. */
export async function measureDensityLevel(clusters: Clusters, cells: number, samples: number): Promise<DensityLevel> {
  const before = memAvailableMiB();
  const t0 = performance.now();
  const { full, ...level } = await clusters.with([{ runtime: 'runc', class: 'small', warm: cells }], async (cluster) => {
    const fill = (performance.now() - t0) / 1000;
    await settle();
    const full = memAvailableMiB();
    const cgroup = cellCgroupUsageMiB(cluster.agentId);
    const series = samples > 0 ? await measureStarts(cluster, 'runc', samples, 'warm', 1) : { samples: [], mismatched: 0, wipeFailures: [] };
    if (series.mismatched > 0) throw new Error(`density ${cells}: ${series.mismatched} of the warm samples found no warm cell`);
    return { cells, up_and_fill_s: round(fill), full, cgroup_usage_mib: round(cgroup), warm_start_ms: summarize(series.samples.map((s) => s.firstByteMs)), wipe_failures: series.wipeFailures };
  });
  await settle();
  return { ...level, mem_available_delta_mib: round((before + memAvailableMiB()) / 2 - full) };
}

function settle(): Promise<void> {
  return new Promise((r) => setTimeout(r, SETTLE_MS));
}

/** perCellMiB fits host memory against cells (least squares) and returns the slope: MiB per idle cell. */
export function perCellMiB(levels: readonly DensityLevel[]): number {
  const xs = levels.map((l) => l.cells);
  const ys = levels.map((l) => l.mem_available_delta_mib);
  const mx = xs.reduce((a, b) => a + b, 0) / xs.length;
  const my = ys.reduce((a, b) => a + b, 0) / ys.length;
  const sxx = xs.reduce((a, x) => a + (x - mx) ** 2, 0);
  const sxy = xs.reduce((a, x, i) => a + (x - mx) * (ys[i]! - my), 0);
  return sxx === 0 ? Number.NaN : round(sxy / sxx);
}

function cellCgroupUsageMiB(agentId: string): number {
  const root = '/sys/fs/cgroup/memory';
  const cells = readdirSync(root).filter((d) => d.startsWith(`cr-${agentId}-`));
  return cells.reduce((sum, d) => sum + Number(readFileSync(join(root, d, 'memory.usage_in_bytes'), 'utf8')), 0) / 2 ** 20;
}
