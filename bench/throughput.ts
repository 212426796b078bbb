// bench/throughput.ts: sustained jobs per second with N concurrent clients, every job a full cell lifecycle.
// Each client is its own SDK client (own keep-alive connections) running jobs back to back: create, follow to the end
// event. Jobs that end inside the window count, and the window is stretched to when the last of their wipes finished
// (the end is reported at exit, the wipe follows), so every counted job was prepared, assigned, run and wiped. The pool
// refills in the background as in production, so under load most cells are prepared on the request path (cold).
import { CleanroomClient } from '../src/sdk/client.js';
import type { Runtime } from '../src/shared/wire.js';
import type { TestCluster } from '../test/support/cluster.js';
import { COMMAND } from './baselines.js';
import { CpuMeter, coresUsed, type CpuParts } from './cpu.js';
import { mean, round, summarize, type Stats } from './stats.js';
import { awaitWipe, runTimedJob, wipeMs, type TimedJob } from './timed-job.js';

/** ThroughputLevel is the result for one number of concurrent clients. */
export interface ThroughputLevel {
  runtime: Runtime;
  clients: number;
  /** The window, stretched to the last counted job's wipe. */
  duration_s: number;
  completed: number;
  jobs_per_s: number;
  failed: number;
  /** Share of jobs whose cell was prepared on the request path. */
  cold_fraction: number;
  /** Start latency under this load (create request → first output byte at the client), every counted job. */
  first_byte_ms: Stats;
  /** The same, only the jobs that found a warm cell (agent_cold 0). */
  first_byte_warm_ms: Stats;
  /** Mean per-job time of each lifecycle stage (ms); prepare counts for every job, warm (background) or cold. */
  mean_stage_ms: { client_first_byte: number; client_end: number; agent_prepare: number; agent_assign: number; wipe: number; api_run_relay: number };
  /**
   * Mean time of each part of a prepare (ms): the encrypted volume, the network namespace and veth, the bundle (spec,
   * control FIFO; an image root too), and the runtime's `run --detach` until cell init waits — where the stage that
   * bounds the rate goes.
   */
  mean_prepare_parts_ms: { volume: number; network: number; bundle: number; runtime: number };
  /** Average cores used during the window, by part of the system. */
  cpu_cores: CpuParts;
  /** CPU per completed job (ms), by class of process: control plane, agent, runtime and tool processes, cells, host total. */
  cpu_ms_per_job: CpuParts;
  /** The lifecycle stage (prepare, assign, wipe, or API+run+relay) with the largest mean time per job. */
  bottleneck_stage: string;
  /** The first few failure messages, if any. */
  errors: string[];
}

/** measureThroughput runs `clients` loops for `durationMs` against the cluster's pool of `runtime`. */
export async function measureThroughput(cluster: TestCluster, clients: number, durationMs: number, runtime: Runtime = 'runc'): Promise<ThroughputLevel> {
  await cluster.waitWarm(120_000);
  const meter = CpuMeter.of(cluster);
  const inWindow: TimedJob[] = [];
  const after: TimedJob[] = [];
  const errors: string[] = [];
  let failed = 0;
  const cpuBefore = meter.read();
  const startEpochMs = Date.now();
  const deadline = performance.now() + durationMs;
  const atWindowEnd: { cpu?: CpuParts } = {};
  const windowEnd = setTimeout(() => (atWindowEnd.cpu = meter.read()), durationMs);
  const loop = async (): Promise<void> => {
    const client = new CleanroomClient({ url: cluster.url, apiKey: cluster.apiKey, ca: cluster.ca });
    try {
      while (performance.now() < deadline) {
        try {
          const s = await runTimedJob(client, { command: COMMAND, runtime }, 'hi\n');
          (performance.now() <= deadline ? inWindow : after).push(s);
        } catch (e) {
          failed++;
          if (errors.length < 5) errors.push((e as Error).message);
        }
      }
    } finally {
      client.close();
    }
  };
  await Promise.all(Array.from({ length: clients }, loop));
  clearTimeout(windowEnd);
  const cpu = coresUsed(cpuBefore, atWindowEnd.cpu ?? meter.read(), durationMs / 1000);
  // Every job's wipe must finish: the counted ones stretch the window, the later ones keep the next level clean.
  const done: TimedJob[] = [];
  const wiped = (s: TimedJob) =>
    awaitWipe(cluster.client, s).catch((e: Error) => {
      failed++;
      if (errors.length < 5) errors.push(e.message);
      return null;
    });
  for (const s of inWindow) {
    const w = await wiped(s);
    if (w) done.push(w);
  }
  for (const s of after) await wiped(s);
  const lastWipeEpochMs = Math.max(startEpochMs + durationMs, ...done.map((s) => Date.parse(s.job.wipe!.finishedAt)));
  const seconds = (lastWipeEpochMs - startEpochMs) / 1000;
  const t = (f: (s: TimedJob) => number | undefined) => round(mean(done.map((s) => f(s) ?? Number.NaN)));
  // API round trips, exec of the workload, output relay and the end report: what is neither take nor assign.
  const lifecycle = {
    agent_prepare: t((s) => s.job.timings.agent_prepare_ms),
    agent_assign: t((s) => s.job.timings.agent_assign_ms),
    wipe: t((s) => wipeMs(s.job)),
    api_run_relay: t((s) => s.endMs - (s.job.timings.agent_take_ms ?? 0) - (s.job.timings.agent_assign_ms ?? 0)),
  };
  const perJob = {} as CpuParts;
  for (const k of Object.keys(cpu) as (keyof CpuParts)[]) perJob[k] = round((cpu[k] * (durationMs / 1000) * 1000) / Math.max(1, done.length));
  return {
    runtime,
    clients,
    duration_s: round(seconds),
    completed: done.length,
    jobs_per_s: round(done.length / seconds),
    failed,
    cold_fraction: round(done.filter((s) => s.job.timings.agent_cold === 1).length / Math.max(1, done.length)),
    first_byte_ms: summarize(done.map((s) => s.firstByteMs)),
    first_byte_warm_ms: summarize(done.filter((s) => s.job.timings.agent_cold === 0).map((s) => s.firstByteMs)),
    mean_stage_ms: { client_first_byte: t((s) => s.firstByteMs), client_end: t((s) => s.endMs), ...lifecycle },
    mean_prepare_parts_ms: prepareParts(t),
    cpu_cores: cpu,
    cpu_ms_per_job: perJob,
    bottleneck_stage: Object.entries(lifecycle).sort((a, b) => b[1] - a[1])[0]?.[0] ?? 'none',
    errors,
  };
}

// The parts of a prepare from the cell's timings (cell.ts prepare: volume and network, then the bundle, then the runtime).
function prepareParts(t: (f: (s: TimedJob) => number | undefined) => number): ThroughputLevel['mean_prepare_parts_ms'] {
  const of = (s: TimedJob, key: string) => s.job.timings[`agent_prepare_${key}_ms`];
  return {
    volume: t((s) => of(s, 'volume')),
    network: t((s) => of(s, 'network')),
    bundle: t((s) => {
      const fs = of(s, 'fs');
      return fs === undefined ? undefined : fs - (of(s, 'volume') ?? 0) - (of(s, 'network') ?? 0);
    }),
    runtime: t((s) => {
      const all = s.job.timings.agent_prepare_ms;
      const fs = of(s, 'fs');
      return all === undefined || fs === undefined ? undefined : all - fs;
    }),
  };
}
