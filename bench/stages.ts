// bench/stages.ts: where the time of a start goes, from the platform's own timings plus what the client measured.
import { wipeMs, type TimedJob } from './timed-job.js';
import { summarize, type Stats } from './stats.js';

/**
 * STAGES names each stage in path order and says where its number comes from.
 * `agent_*` and `control_*` are the product's own timings (job.timings); `client_*` are measured in the bench process;
 * `wall_*` place the control plane's ISO timestamps (createdAt, startedAt: 1 ms resolution) on the client's clock.
 */
export const STAGES: Record<string, string> = {
  client_create_rtt_ms: 'request sent → `created` event at the client (TLS, auth, validation, insert, dispatch, update)',
  wall_sent_to_created_ms: 'client sends create → control plane stamps createdAt (transport, parse, auth, validation)',
  control_dispatch_ms: 'control plane: dispatch to an agent + record the assignment (after the insert)',
  wall_created_to_started_ms: 'createdAt → startedAt: dispatch, agent take+assign, job.started back, record',
  agent_take_ms: 'agent: take a cell from the pool (a full prepare when cold)',
  agent_assign_ms: 'agent: cgroup limits + write the command to cell init',
  wall_started_to_first_byte_ms: 'startedAt → first byte at the client (exec in the cell, output relay, store, SSE)',
  client_after_create_to_first_byte_ms: '`created` event → first output byte at the client (same response)',
  client_first_byte_ms: 'total: create sent → first output byte (the start latency)',
  client_end_ms: 'create sent → end event at the client (sent at exit, before the wipe)',
  wipe_ms: 'after the end: endedAt → wipe receipt finishedAt (container, network, then volume: key removed, storage gone)',
  wipe_volume_ms: 'the volume part of the wipe (wipe receipt totalMs)',
  agent_prepare_ms: 'agent: preparing the cell (in the background, before the job, when warm)',
  agent_prepare_volume_ms: 'agent: the encrypted volume part of the prepare',
};

/** NOT_DURATIONS are job timings that are not durations. */
const NOT_DURATIONS = new Set(['agent_cold', 'agent_started_at']);

/** stageBreakdown summarises every stage of STAGES, then every other duration in job.timings; absent stages are left out. */
export function stageBreakdown(samples: readonly TimedJob[]): Record<string, Stats> {
  const series = (f: (s: TimedJob) => number | undefined): number[] => samples.map(f).filter((x): x is number => x !== undefined && Number.isFinite(x));
  const wall = (iso: string | null): number => (iso ? Date.parse(iso) : Number.NaN);
  const values: Record<string, number[]> = {
    client_create_rtt_ms: series((s) => s.createMs),
    wall_sent_to_created_ms: series((s) => wall(s.job.createdAt) - s.sentAtEpochMs),
    control_dispatch_ms: series((s) => s.job.timings.control_dispatch_ms),
    wall_created_to_started_ms: series((s) => wall(s.job.startedAt) - wall(s.job.createdAt)),
    agent_take_ms: series((s) => s.job.timings.agent_take_ms),
    agent_assign_ms: series((s) => s.job.timings.agent_assign_ms),
    wall_started_to_first_byte_ms: series((s) => s.firstByteAtEpochMs - wall(s.job.startedAt)),
    client_after_create_to_first_byte_ms: series((s) => s.firstByteMs - s.createMs),
    client_first_byte_ms: series((s) => s.firstByteMs),
    client_end_ms: series((s) => s.endMs),
    wipe_ms: series((s) => wipeMs(s.job)),
    wipe_volume_ms: series((s) => s.job.wipe?.totalMs),
    agent_prepare_ms: series((s) => s.job.timings.agent_prepare_ms),
    agent_prepare_volume_ms: series((s) => s.job.timings.agent_prepare_volume_ms),
  };
  for (const k of new Set(samples.flatMap((s) => Object.keys(s.job.timings)))) {
    if (!(k in values) && !NOT_DURATIONS.has(k)) values[k] = series((s) => s.job.timings[k]);
  }
  return Object.fromEntries(Object.entries(values).filter(([, v]) => v.length > 0).map(([k, v]) => [k, summarize(v)]));
}
