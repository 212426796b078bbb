// bench/ratio-stage.ts: issue 16's ratio — sustained jobs/s of fully isolated cells ÷ the rate of bare `runc run` of the
// same command at the same parallelism — with the bare rate measured right before and right after the cells' windows,
// so that other load on the host (which changes from minute to minute on a shared machine) falls on both sides alike and
// shows as a gap between the two bare figures. Beside the rates, the same ratio in CPU: what a bare run costs its own
// processes ÷ what a job costs the cluster's own processes, the throughput ratio a CPU-bound host would give.
import { bareRate, type BareBundles, type BareRate } from './baselines.js';
import type { ThroughputLevel } from './throughput.js';
import type { TestCluster } from '../test/support/cluster.js';
import { CpuMeter, procTimes, type CpuParts } from './cpu.js';

/** BareRuncRate is a bare rate with the CPU the runs took in their own processes. */
export interface BareRuncRate extends BareRate {
  /**
   * CPU of the runc processes per run (ms): the bench process reaps each `runc run`, which reaps its container's init,
   * so their children's time is inside; other processes of the host are not.
   */
  own_cpu_ms_per_run: number;
  /**
   * CPU the cluster's own processes (control plane, agent, its runtime/tool children, cells) used during the bare window,
   * ms per second of it: work the cluster left for later (a refill, wipes) competes with the bare runs there.
   */
  cluster_cpu_ms_per_s: number;
  /** The same by process class. */
  cluster_cpu_parts_ms_per_s: Pick<CpuParts, 'control' | 'agent' | 'agent_children' | 'cells'>;
}

/** CellsRatio is one throughput level beside the bare rate. */
export interface CellsRatio {
  runtime: string;
  jobs_per_s: number;
  failed: number;
  cold_fraction: number;
  /** CPU of the cluster's own processes per job (control plane, agent, the runtime and tools it spawned, cells), ms. */
  own_cpu_ms_per_job: number;
  /** jobs_per_s ÷ the mean of the bare rates before and after (issue 16: ≥ 1). */
  ratio_to_bare_runc: number;
  /** The mean own CPU of a bare run ÷ own_cpu_ms_per_job. */
  cpu_ratio_bare_runc_to_job: number;
}

/** RatioStage is the ratio stage's result. */
export interface RatioStage {
  lanes: number;
  bare_runc: { before: BareRuncRate; after: BareRuncRate; mean_runs_per_s: number; mean_own_cpu_ms_per_run: number };
  cells: CellsRatio[];
}

// CPU seconds of this process's reaped children.
const reapedSeconds = (): number => procTimes(process.pid).children;

/**
 * measureBareRunc runs bare `runc run` in `lanes` back-to-back loops for `ms` (after three unrecorded runs) beside the
 * cluster, once its pool is full (what a window left behind is refilled first), metering the cluster's own CPU meanwhile.
 */
export async function measureBareRunc(cluster: TestCluster, bundles: BareBundles, lanes: number, ms: number): Promise<BareRuncRate> {
  await cluster.waitWarm(120_000);
  for (let i = 0; i < 3; i++) await bundles.run('runc');
  const meter = CpuMeter.of(cluster);
  const m0 = meter.read();
  const t0 = performance.now();
  const c0 = reapedSeconds();
  const rate = await bareRate(lanes, ms, (lane) => bundles.run('runc', lane));
  const ownCpu = reapedSeconds() - c0;
  const seconds = (performance.now() - t0) / 1000;
  const m1 = meter.read();
  const perS = (k: keyof CpuParts) => Math.round(((m1[k] - m0[k]) * 1000 * 10) / seconds) / 10;
  const parts = { control: perS('control'), agent: perS('agent'), agent_children: perS('agent_children'), cells: perS('cells') };
  return {
    ...rate,
    own_cpu_ms_per_run: Math.round((ownCpu * 1000 * 10) / Math.max(1, rate.runs)) / 10,
    cluster_cpu_ms_per_s: Math.round((parts.control + parts.agent + parts.agent_children + parts.cells) * 10) / 10,
    cluster_cpu_parts_ms_per_s: parts,
  };
}

const round3 = (x: number) => Math.round(x * 1000) / 1000;

/**
 * measureRatioStage runs the cells' throughput `windows` (each at `lanes` clients) between two bare runc rates of `bareMs`
 * each, all on the same host while `cluster` is up (each bare window once its pool is full): the stage of bench/run.ts
 * and of throughput-ratio.js alike.
 */
export async function measureRatioStage(
  cluster: TestCluster,
  bundles: BareBundles,
  lanes: number,
  bareMs: number,
  windows: ReadonlyArray<() => Promise<ThroughputLevel>>,
  log: (msg: string) => void,
): Promise<{ stage: RatioStage; levels: ThroughputLevel[] }> {
  log(`ratio stage: bare runc run, ${lanes} loops, ${bareMs / 1000} s (before the cells' windows)`);
  const before = await measureBareRunc(cluster, bundles, lanes, bareMs);
  const levels: ThroughputLevel[] = [];
  for (const w of windows) levels.push(await w());
  log(`ratio stage: bare runc run, ${lanes} loops, ${bareMs / 1000} s (after the cells' windows)`);
  const after = await measureBareRunc(cluster, bundles, lanes, bareMs);
  return { stage: ratioStage(lanes, before, after, levels), levels };
}

/** ratioStage puts throughput levels (at `lanes` clients) beside the bare rates measured before and after them. */
export function ratioStage(lanes: number, before: BareRuncRate, after: BareRuncRate, levels: readonly ThroughputLevel[]): RatioStage {
  const meanRate = (before.runs_per_s + after.runs_per_s) / 2;
  const meanCpu = (before.own_cpu_ms_per_run + after.own_cpu_ms_per_run) / 2;
  return {
    lanes,
    bare_runc: { before, after, mean_runs_per_s: round3(meanRate), mean_own_cpu_ms_per_run: round3(meanCpu) },
    cells: levels.map((l) => {
      const c = l.cpu_ms_per_job;
      // The cluster's own processes, not the host total (which other load on the host inflates).
      const own = c.control + c.agent + c.agent_children + c.cells;
      return {
        runtime: l.runtime,
        jobs_per_s: l.jobs_per_s,
        failed: l.failed,
        cold_fraction: l.cold_fraction,
        own_cpu_ms_per_job: round3(own),
        ratio_to_bare_runc: round3(l.jobs_per_s / meanRate),
        cpu_ratio_bare_runc_to_job: round3(meanCpu / own),
      };
    }),
  };
}
