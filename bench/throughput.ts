// bench/throughput.ts: sustained jobs per second with N concurrent clients, every job a full cell lifecycle.
// Each client is its own SDK client (own keep-alive connections) running jobs back to back: create, follow to the end
// event (sent after the wipe). Jobs that end inside the window count; the pool refills in the background as in production,
// so under load most cells are prepared on the request path (cold) — the figure is what the host sustains.
import { CleanroomClient } from '../src/sdk/client.js';
import type { TestCluster } from '../test/support/cluster.js';
import { COMMAND } from './baselines.js';
import { CpuMeter, coresUsed, type CpuParts } from './cpu.js';
import { mean, round } from './stats.js';
import { runTimedJob, type TimedJob } from './timed-job.js';

/** ThroughputLevel is the result for one number of concurrent clients. */
export interface ThroughputLevel {
  clients: number;
  duration_s: number;
  completed: number;
  jobs_per_s: number;
  failed: number;
  /** Share of jobs whose cell was prepared on the request path. */
  cold_fraction: number;
  /** Mean per-job time of each lifecycle stage (ms); prepare counts for every job, warm or cold. */
  mean_stage_ms: { client_first_byte: number; client_end: number; agent_take: number; agent_prepare: number; agent_assign: number; agent_wipe: number; api_run_relay: number };
  /** Average cores used during the window, by part of the system. */
  cpu_cores: CpuParts;
  /** The lifecycle stage (prepare, assign, wipe, or API+run+relay) with the largest mean time per job. */
  bottleneck_stage: string;
  /** The first few failure messages, if any. */
  errors: string[];
}

/** measureThroughput runs `clients` loops for `durationMs` against the cluster's runc pool. */
export async function measureThroughput(cluster: TestCluster, clients: number, durationMs: number): Promise<ThroughputLevel> {
  await cluster.waitWarm(120_000);
  const meter = CpuMeter.of(cluster);
  const done: TimedJob[] = [];
  const errors: string[] = [];
  let failed = 0;
  const cpuBefore = meter.read();
  const t0 = performance.now();
  const deadline = t0 + durationMs;
  const atWindowEnd: { cpu?: CpuParts } = {};
  const windowEnd = setTimeout(() => (atWindowEnd.cpu = meter.read()), durationMs);
  const loop = async (): Promise<void> => {
    const client = new CleanroomClient({ url: cluster.url, apiKey: cluster.apiKey, ca: cluster.ca });
    try {
      while (performance.now() < deadline) {
        try {
          const s = await runTimedJob(client, { command: COMMAND, runtime: 'runc' }, 'hi\n');
          if (performance.now() <= deadline) done.push(s);
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
  const t = (k: string) => round(mean(done.map((s) => s.job.timings[k] ?? Number.NaN)));
  const stages = { agent_take: t('agent_take_ms'), agent_prepare: t('agent_prepare_ms'), agent_assign: t('agent_assign_ms'), agent_wipe: t('agent_wipe_ms') };
  // What is neither the agent's take, assign nor wipe: API round trips, exec of the workload, output relay, end report.
  const apiRunRelay = round(mean(done.map((s) => s.endMs - (s.job.timings.agent_take_ms ?? 0) - (s.job.timings.agent_assign_ms ?? 0) - (s.job.timings.agent_wipe_ms ?? 0))));
  const lifecycle = { agent_prepare: stages.agent_prepare, agent_assign: stages.agent_assign, agent_wipe: stages.agent_wipe, api_run_relay: apiRunRelay };
  const bottleneck = Object.entries(lifecycle).sort((a, b) => b[1] - a[1])[0]?.[0] ?? 'none';
  return {
    clients,
    duration_s: durationMs / 1000,
    completed: done.length,
    jobs_per_s: round(done.length / (durationMs / 1000)),
    failed,
    cold_fraction: round(done.filter((s) => s.job.timings.agent_cold === 1).length / Math.max(1, done.length)),
    mean_stage_ms: { client_first_byte: round(mean(done.map((s) => s.firstByteMs))), client_end: round(mean(done.map((s) => s.endMs))), ...stages, api_run_relay: apiRunRelay },
    cpu_cores: cpu,
    bottleneck_stage: bottleneck,
    errors,
  };
}
