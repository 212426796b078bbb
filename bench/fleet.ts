// bench/fleet.ts: control-plane capacity with a simulated fleet (issue 15, Performance). A control plane started alone
// (TestCluster noAgent) and 1,000 fake agents in this process on its real mutual-TLS channel (test/support/fake-fleet.ts:
// each answers an assign with started, output, ended and a wipe receipt at once). Clients create `/bin/echo hi` jobs
// through the public HTTPS API back to back for a window; measured: jobs/s from create to placed to ended (the control
// plane's own createdAt/endedAt), placement latency (create request sent → the assign seen by the fake agent, same clock),
// loaded and quiet, and the CPU the control plane and this process (clients + fleet) spent per job.
// Standalone: `node dist/bench/fleet.js` (BENCH_SMOKE=1 for a short check; BENCH_FLEET_STORE=postgres on a PostgreSQL
// it starts; BENCH_FLEET_PROF=<dir> writes a --cpu-prof of the control plane there) prints the JSON and writes
// bench/results/fleet-<store>-latest.json; `npm run bench` runs it on SQLite and on PostgreSQL as one stage.
import { readFileSync, writeFileSync } from 'node:fs';
import { loadavg } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { REPO_ROOT, TestCluster } from '../test/support/cluster.js';
import { FakeFleet } from '../test/support/fake-fleet.js';
import { createJobs, fetchJobs } from '../test/support/job-burst.js';
import type { Job } from '../src/sdk/client.js';
import { round, summarize, type Stats } from './stats.js';

/** FleetPlan is the size of the fleet stage. */
export interface FleetPlan {
  agents: number;
  /** Jobs each fake agent runs at once. */
  capacity: number;
  /** Create requests in flight at once (closed loop). */
  clients: number;
  /** Jobs before the window, not counted. */
  warmup: number;
  /** The measured window of back-to-back creates (it ends early after maxJobs). */
  windowMs: number;
  maxJobs: number;
  /** Sequential single jobs on the idle fleet after the window (quiet placement latency). */
  quiet: number;
}

export const FLEET_FULL: FleetPlan = { agents: 1000, capacity: 4, clients: 64, warmup: 500, windowMs: 10_000, maxJobs: 15_000, quiet: 200 };
export const FLEET_SMOKE: FleetPlan = { agents: 100, capacity: 4, clients: 16, warmup: 50, windowMs: 2_000, maxJobs: 1000, quiet: 20 };

/** FleetBench is the stage's figures, with the goals they are held against. */
export interface FleetBench {
  store: 'sqlite' | 'postgres';
  replicas: number;
  agents: number;
  capacity_per_agent: number;
  clients: number;
  /** Jobs created in the window, and of them those that ended succeeded with a receipt. */
  jobs: number;
  succeeded: number;
  /** Jobs from create to placed to ended per second: window jobs / (last endedAt − first createdAt), the control plane's clock. */
  jobs_per_s: number;
  goal_jobs_per_s: number;
  /** Creates answered per second, client side (the API's rate for this load). */
  creates_per_s: number;
  /** Create request sent → assign seen by the fake agent, under the window's load. */
  placement_ms: Stats;
  /** The same, one job at a time on the idle fleet. */
  placement_quiet_ms: Stats;
  /** Create sent → its answer (the job is placed within the create call when an agent has room). */
  create_answer_ms: Stats;
  /** CPU ms per job in the window: the control plane's process, and this process (the API clients and the 1,000 fakes). */
  control_cpu_ms_per_job: number;
  client_and_fleet_cpu_ms_per_job: number;
  /** 1000 / control_cpu_ms_per_job: the jobs/s one control-plane process would sustain with a core to itself (robust to
   *  other load on the host, unlike jobs_per_s; the control plane's event loop is one thread). */
  control_cpu_bound_jobs_per_s: number;
  /** Jobs placed twice or past an agent's capacity (must be 0). */
  duplicates: number;
  over_capacity: number;
  /** Fleet connect time (all agents welcomed). */
  connect_s: number;
}

/** measureFleet runs the stage on one control plane (on SQLite, or on a PostgreSQL it starts) and stops it. */
export async function measureFleet(plan: FleetPlan, log: (msg: string) => void, store: 'sqlite' | 'postgres' = 'sqlite', config: Record<string, unknown> = {}): Promise<FleetBench> {
  const prof = process.env.BENCH_FLEET_PROF;
  if (prof) process.env.CLEANROOM_CONTROL_NODE_ARGS = `--cpu-prof --cpu-prof-dir=${prof}`;
  const cluster = await TestCluster.start({
    noAgent: true,
    store,
    config: { quotas: { maxRunningJobs: 10_000, maxQueuedJobs: 100_000 }, ...config },
  });
  delete process.env.CLEANROOM_CONTROL_NODE_ARGS;
  let fleet: FakeFleet | null = null;
  try {
    const t0 = performance.now();
    fleet = await FakeFleet.start({ url: `wss://127.0.0.1:${cluster.agentPort}/v1/agent`, tls: cluster.agentTls(), agents: plan.agents, capacity: plan.capacity });
    const connectS = (performance.now() - t0) / 1000;
    log(`fleet: ${plan.agents} fake agents connected in ${round(connectS)} s; warm-up ${plan.warmup} jobs`);
    await createJobs(cluster.client, plan.warmup, plan.clients);

    const controlPid = cluster.controlPid();
    const cpu0 = { control: processCpuMs(controlPid), self: selfCpuMs() };
    const t1 = performance.now();
    const deadline = t1 + plan.windowMs;
    const created = await createJobs(cluster.client, plan.maxJobs, plan.clients, undefined, deadline);
    const windowEnd = performance.now();
    // The reports of the last jobs are on their way: wait for them before reading the CPU, then read every job.
    const jobs = await endedJobs(cluster, created.map((c) => c.id));
    const cpu1 = { control: processCpuMs(controlPid), self: selfCpuMs() };
    const n = created.length;
    const succeeded = jobs.filter((j) => j.status === 'succeeded' && j.wipe !== null).length;
    const firstCreated = Math.min(...jobs.map((j) => Date.parse(j.createdAt)));
    const lastEnded = Math.max(...jobs.map((j) => Date.parse(j.endedAt ?? '')));
    const placement = created.map((c) => (fleet!.assigned.get(c.id)?.atMs ?? Number.NaN) - c.sentMs);
    log(`fleet: ${n} jobs in ${round((windowEnd - t1) / 1000)} s; quiet placement ×${plan.quiet}`);

    const quiet: number[] = [];
    for (let i = 0; i < plan.quiet; i++) {
      const [c] = await createJobs(cluster.client, 1, 1);
      // The create's answer and the assign travel on different connections: the answer may come first.
      const until = performance.now() + 5000;
      while (!fleet.assigned.has(c!.id) && performance.now() < until) await new Promise((r) => setTimeout(r, 1));
      quiet.push((fleet.assigned.get(c!.id)?.atMs ?? Number.NaN) - c!.sentMs);
    }
    return {
      store,
      replicas: 1,
      agents: plan.agents,
      capacity_per_agent: plan.capacity,
      clients: plan.clients,
      jobs: n,
      succeeded,
      jobs_per_s: round(n / ((lastEnded - firstCreated) / 1000)),
      goal_jobs_per_s: 1000,
      creates_per_s: round(n / ((windowEnd - Math.min(...created.map((c) => c.sentMs))) / 1000)),
      placement_ms: summarize(placement),
      placement_quiet_ms: summarize(quiet),
      create_answer_ms: summarize(created.map((c) => c.answeredMs - c.sentMs)),
      control_cpu_ms_per_job: round((cpu1.control - cpu0.control) / n),
      client_and_fleet_cpu_ms_per_job: round((cpu1.self - cpu0.self) / n),
      control_cpu_bound_jobs_per_s: round(1000 / ((cpu1.control - cpu0.control) / n)),
      duplicates: fleet.duplicates.length,
      over_capacity: fleet.overCapacity.length,
      connect_s: round(connectS),
    };
  } finally {
    fleet?.close();
    await cluster.stop();
  }
}

/** endedJobs waits until every job has ended with its receipt (a fake reports both at once) and returns them. */
async function endedJobs(cluster: TestCluster, ids: string[]): Promise<Job[]> {
  const done = new Map<string, Job>();
  let open = ids;
  const deadline = Date.now() + 60_000;
  for (;;) {
    for (const j of await fetchJobs(cluster.client, open, 16)) if (j.endedAt !== null && (j.wipe !== null || j.status !== 'succeeded')) done.set(j.id, j);
    open = open.filter((id) => !done.has(id));
    if (open.length === 0) return ids.map((id) => done.get(id)!);
    if (Date.now() > deadline) throw new Error(`${open.length} fleet jobs did not end within 60 s`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

/** processCpuMs is a process's user + system CPU time so far (ms), from /proc/<pid>/stat. */
function processCpuMs(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  // Fields 14 and 15 of stat (utime, stime) are the 12th and 13th after the command; clock ticks of 10 ms.
  return (Number(fields[11]) + Number(fields[12])) * 10;
}

function selfCpuMs(): number {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1000;
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  const smoke = process.env.BENCH_SMOKE === '1';
  const store = process.env.BENCH_FLEET_STORE === 'postgres' ? 'postgres' : 'sqlite';
  const started = { date: new Date().toISOString(), load_avg_1m: round(loadavg()[0] ?? Number.NaN) };
  measureFleet(smoke ? FLEET_SMOKE : FLEET_FULL, (m) => process.stderr.write(`[fleet ${new Date().toISOString().slice(11, 19)}] ${m}\n`), store).then(
    (r) => {
      const out = { ...started, load_avg_1m_at_end: round(loadavg()[0] ?? Number.NaN), smoke, fleet: r };
      const text = JSON.stringify(out, null, 2) + '\n';
      process.stdout.write(text);
      // Beside e2b-latest.json: the stage run alone (npm run bench puts the same figures under `fleet` in latest.json).
      if (!smoke) writeFileSync(join(REPO_ROOT, `bench/results/fleet-${store}-latest.json`), text);
    },
    (e: Error) => {
      process.stderr.write(`bench fleet: ${e.stack ?? e.message}\n`);
      process.exit(1);
    },
  );
}
