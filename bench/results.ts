// bench/results.ts: the shape of bench/results/latest.json (the fields issue 6 names, plus `notes` on method).
import type { DensityLevel } from './density.js';
import type { NoisyNeighbour } from './noisy-neighbour.js';
import type { Machine } from './machine.js';
import type { Stats } from './stats.js';
import type { ThroughputLevel } from './throughput.js';
import type { SandboxBench } from './sandbox.js';
import type { BareRate } from './baselines.js';
import type { RatioStage } from './ratio-stage.js';
import type { BurstResult, LoadLevel } from './load-levels.js';
import type { FleetBench } from './fleet.js';

/** LATENCY_FIELDS are the top-level figures that are latency distributions ({p50,p95,p99,min,max,n}, ms). */
export const LATENCY_FIELDS = [
  'warm_start_ms',
  'warm_start_runsc_ms',
  'cold_start_ms',
  'baseline_runc_run_ms',
  'baseline_runsc_run_ms',
  'baseline_fork_exec_ms',
  'baseline_fork_exec_node_spawn_ms',
  'wipe_ms',
] as const;

/** BenchResults is one run of the benchmark. */
export type BenchResults = Record<(typeof LATENCY_FIELDS)[number], Stats> & {
  /** ISO time the run started. */
  date: string;
  /**
   * Start latency while jobs run back to back (the throughput windows), beside the quiet warm_start_ms: every job of
   * the peak level (most go cold: the pool drains), and the ones of that level that found a warm cell.
   */
  start_under_load_ms: { clients: number; all: Stats; warm_only: Stats; cold_fraction: number };
  /** A calm workspace's warm starts, quiet and while another workspace floods the plane (bench/noisy-neighbour.ts). */
  noisy_neighbour: NoisyNeighbour;
  /** How each baseline was launched (the agent's spawn path, binary copy and flags). */
  baseline_launch: Record<string, string>;
  /**
   * warm_start_ms.p50 / a host fork+exec's p50 (both to the first output byte), by each definition of the baseline:
   * posix_spawn from the agent's addon (baseline_fork_exec_ms) and Node's child_process.spawn (baseline_fork_exec_node_spawn_ms).
   */
  ratio_warm_to_fork_exec: { posix_spawn: number; node_spawn: number };
  /** warm_start_ms.p50 / baseline_runc_run_ms.p50 (both to the first output byte). */
  ratio_warm_to_runc_run: number;
  throughput_jobs_per_s: { peak: number; peak_runtime: string; bottleneck_stage: string; levels: ThroughputLevel[] };
  /** Parallel back-to-back bare runs of the same command (null where the tool is missing). */
  baseline_rate_per_s: { runc: BareRate | null; crun: BareRate | null; podman: BareRate | null };
  baseline_crun_run_ms: Stats;
  /** Issue 18: warm start under open-loop load at 50 % and 90 % of peak, and a burst after an idle pause. */
  start_under_load: {
    quiet_p50_ms: number;
    quiet_p99_ms: number;
    levels: LoadLevel[];
    burst: BurstResult;
    ratio_p50_at_50pct_to_quiet: number;
    ratio_p99_at_50pct_to_quiet: number;
  };
  /** Cells on the default image (issue 12): starts beside the host root and the bare runtime; imports beside skopeo. */
  images: {
    warm_start_ms: Stats;
    /** Host-root warm starts taken in turns with the image ones, in the same cluster. */
    host_root_warm_start_ms: Stats;
    cold_start_ms: Stats;
    ratio_warm_to_host_root_warm: number;
    ratio_cold_to_bare_runc_run: number;
    imports: { mb_per_s: { api: number; skopeo: number }; ratio_api_to_skopeo: number; image_blob_bytes: number; shared_base: Record<string, number> };
  };
  /**
   * Cleanroom jobs/s at `lanes` clients (runc cells, crun cells) ÷ bare runc runs/s at `lanes` parallel loops (issue 16:
   * ≥ 1), the bare rate being the mean of the two measured right before and right after those cells' windows on the same
   * cluster (`stage`, with the own-CPU ratios); `at_bench_start` divides by baseline_rate_per_s.runc instead (minutes
   * earlier, with no cluster up: the figure of earlier runs).
   */
  ratio_throughput_to_bare_runc_rate: { lanes: number; runc_cells: number; crun_cells: number; at_bench_start: { runc_cells: number; crun_cells: number }; stage: RatioStage };
  idle_cell_memory_mib: { per_cell: number; levels: DensityLevel[] };
  /** Issue 13's figures: sandbox create, exec, files, concurrency and memory, with ratios to this run's warm start and fork+exec. */
  /** Control-plane capacity with a simulated fleet (bench/fleet.ts; issue 15). */
  fleet: FleetBench;
  /** The fleet stage on two replicas on one PostgreSQL. */
  fleet_replicas: FleetBench;
  /** The store on PostgreSQL: warm starts beside SQLite's (goal ≤ 1.2×) and the fleet stage. */
  store_postgres: {
    warm_start_ms: Stats;
    /** The SQLite series taken in turns with it (bench/store-warm.ts): the ratio's denominator. */
    sqlite_warm_start_ms: Stats;
    ratio_warm_p50_to_sqlite: number;
    ratio_paired_median: number;
    goal_ratio_warm_p50_to_sqlite: number;
    fleet: FleetBench;
  };
  sandboxes: SandboxBench & { ratio_create_to_warm_start_p50: number; ratio_exec_to_fork_exec_p50: number };
  /** Stage breakdowns per series, from the platform's timings and the client's clock (see notes.stages). */
  stages_ms: { warm_runc: Record<string, Stats>; warm_runsc: Record<string, Stats>; cold_runc: Record<string, Stats>; cold_runsc: Record<string, Stats> };
  machine: Machine & { load_avg_1m_at_start: number; load_avg_1m_at_end: number };
  notes: {
    smoke: boolean;
    duration_s: number;
    /** Samples that were not in the state their series asks for (excluded from it). */
    warm_runc_samples_found_cold: number;
    warm_runsc_samples_found_cold: number;
    cold_samples_found_warm: number;
    /** Host objects (cgroups, loop devices, mounts, processes) a stopped cluster left behind; should be empty. */
    leftovers: string[];
    /** Jobs whose wipe receipt never reached the job record (start latency kept, wipe missing). */
    wipe_failures: string[];
    /** The baselines to process exit (the figures above are to the first output byte, as warm start is). */
    baseline_exit_ms: { runc_run: Stats; runsc_run: Stats; crun_run: Stats; fork_exec: Stats; fork_exec_node_spawn: Stats };
    stages: Record<string, string>;
    method: string[];
  };
};
