// bench/load-levels.ts: warm start latency under load (issue 18). Jobs arrive open-loop (on a fixed schedule, whether or
// not earlier ones have finished) at 50 % and 90 % of the peak throughput measured earlier in the same run, on a
// demand-sized pool, each measured after a warm-up at its own rate (the steady state: a pool that has not yet seen the
// rate ramps up from its minimum, which is the burst's case, measured apart); then a burst of BURST jobs arrives at once after an idle pause. The pool learns a burst's size from
// the burst before it (its target is the most starts seen within one prepare, over poolDemandWindowSeconds), so the
// stage sends one burst to teach it, waits for the refill and the idle pause, and measures the second.
import { CleanroomClient } from '../src/sdk/client.js';
import type { TestCluster } from '../test/support/cluster.js';
import { COMMAND } from './baselines.js';
import { round, summarize, type Stats } from './stats.js';
import { runTimedJob, type TimedJob } from './timed-job.js';

/** LoadLevel is one open-loop level. */
export interface LoadLevel {
  /** Share of the peak throughput the arrivals were scheduled at. */
  share: number;
  /** Arrivals at the same rate just before the measured ones, not recorded (the pool learns the rate). */
  warmup_s: number;
  offered_jobs_per_s: number;
  completed: number;
  failed: number;
  first_byte_ms: Stats;
  warm_fraction: number;
  /** The first few failures. */
  errors: string[];
}

/** BurstResult is the measured burst (the second one). */
export interface BurstResult {
  jobs: number;
  idle_s: number;
  pool_warm_before: number;
  first_byte_ms: Stats;
  warm_fraction: number;
  failed: number;
  errors: string[];
}

/** LoadOptions size the stage (the full run and the smoke differ). */
export interface LoadOptions {
  peakJobsPerS: number;
  levelMs: number;
  /** Unrecorded arrivals at each level's rate before its measured window. */
  warmupMs: number;
  burst: number;
  idleMs: number;
}

/** measureLoad runs the two load levels, then the bursts, against a cluster whose runc pool is demand-sized. */
export async function measureLoad(cluster: TestCluster, o: LoadOptions): Promise<{ levels: LoadLevel[]; burst: BurstResult }> {
  await cluster.waitWarm(120_000);
  const clients = Array.from({ length: 8 }, () => new CleanroomClient({ url: cluster.url, apiKey: cluster.apiKey, ca: cluster.ca }));
  try {
    const levels: LoadLevel[] = [];
    for (const share of [0.5, 0.9]) levels.push(await openLoop(clients, share, o.peakJobsPerS * share, o.warmupMs, o.levelMs));
    await fire(clients, o.burst); // teaches the pool the burst's size
    const deadline = Date.now() + 120_000;
    let warm = 0;
    while (Date.now() < deadline && (warm = await runcWarm(cluster)) < o.burst * 0.9) await new Promise((r) => setTimeout(r, 500));
    await new Promise((r) => setTimeout(r, o.idleMs));
    warm = await runcWarm(cluster);
    const measured = await fire(clients, o.burst);
    const ok = measured.filter((r): r is TimedJob => !(r instanceof Error));
    return {
      levels,
      burst: {
        jobs: o.burst,
        idle_s: o.idleMs / 1000,
        pool_warm_before: warm,
        first_byte_ms: summarize(ok.map((s) => s.firstByteMs)),
        warm_fraction: round(ok.filter((s) => s.job.timings.agent_cold === 0).length / o.burst),
        failed: measured.length - ok.length,
        errors: measured.filter((r): r is Error => r instanceof Error).slice(0, 5).map((e) => e.message),
      },
    };
  } finally {
    for (const c of clients) c.close();
  }
}

async function runcWarm(cluster: TestCluster): Promise<number> {
  const p = await cluster.client.pool();
  return Object.values(p.agents).reduce((n, a) => n + (a['runc/small']?.warm ?? 0), 0);
}

/**
 * openLoop schedules arrivals every 1/rate s for `warmupMs + ms`, each a job on the next client, waits for all of them
 * and records those of the last `ms` (the arrivals do not pause between warm-up and window).
 */
async function openLoop(clients: CleanroomClient[], share: number, rate: number, warmupMs: number, ms: number): Promise<LoadLevel> {
  const runs: Array<Promise<TimedJob | Error>> = [];
  const t0 = performance.now();
  const interval = 1000 / Math.max(rate, 0.1);
  let recordedFrom = 0;
  for (let i = 0; i * interval < warmupMs + ms; i++) {
    if (i * interval < warmupMs) recordedFrom = i + 1;
    const wait = t0 + i * interval - performance.now();
    if (wait > 0) await new Promise((r) => setTimeout(r, wait));
    runs.push(runTimedJob(clients[i % clients.length]!, { command: COMMAND, runtime: 'runc' }, 'hi\n').catch((e: Error) => e));
  }
  const done = (await Promise.all(runs)).slice(recordedFrom);
  const ok = done.filter((r): r is TimedJob => !(r instanceof Error));
  return {
    share,
    warmup_s: warmupMs / 1000,
    offered_jobs_per_s: round(rate),
    completed: ok.length,
    failed: done.length - ok.length,
    first_byte_ms: summarize(ok.map((s) => s.firstByteMs)),
    warm_fraction: round(ok.filter((s) => s.job.timings.agent_cold === 0).length / Math.max(1, ok.length)),
    errors: done.filter((r): r is Error => r instanceof Error).slice(0, 5).map((e) => e.message),
  };
}

/** fire sends `n` jobs at once (spread over the clients) and waits for every one. */
function fire(clients: CleanroomClient[], n: number): Promise<Array<TimedJob | Error>> {
  return Promise.all(Array.from({ length: n }, (_, i) => runTimedJob(clients[i % clients.length]!, { command: COMMAND, runtime: 'runc' }, 'hi\n').catch((e: Error) => e)));
}
