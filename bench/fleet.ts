// bench/fleet.ts: control-plane capacity with a simulated fleet (issue 15, Performance). A control plane started alone
// (TestCluster noAgent) and 1,000 fake agents in this process on its real mutual-TLS channel (test/support/fake-fleet.ts:
// each answers an assign with started, output, ended and a wipe receipt at once, in one job.report). Clients create `/bin/echo hi` jobs
// through the public HTTPS API back to back for a window; measured: jobs/s from create to placed to ended (the control
// plane's own createdAt/endedAt), placement latency (create request sent → the assign seen by the fake agent, same clock),
// loaded and quiet, and the CPU the control plane and this process (clients + fleet) spent per job. Then a second window
// of the same jobs created by batch creates (POST /v1/jobs/batch, `batched` in the result): the single-create figures stay
// the headline keys, so a batched rate is never mistaken for the per-request one.
// Standalone: `node dist/bench/fleet.js` (BENCH_SMOKE=1 for a short check; BENCH_FLEET_WINDOW_MS=<ms> for another window; BENCH_FLEET_STORE=postgres on a PostgreSQL
// it starts, =replicas on two replicas on one; BENCH_FLEET_PROF=<dir> writes a --cpu-prof of the control plane there;
// BENCH_FLEET_PROTOCOL=4 has the fakes speak the previous agent protocol; BENCH_FLEET_BATCH=<jobs per batch> (0: none) and
// BENCH_FLEET_BATCH_CLIENTS=<batches in flight> shape the batched window) prints the JSON and writes
// bench/results/fleet-<store>-latest.json; `npm run bench` runs it on SQLite and on PostgreSQL as one stage.
import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { loadavg } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { REPO_ROOT, TestCluster } from '../test/support/cluster.js';
import { FakeFleet } from '../test/support/fake-fleet.js';
import { createJobs, fetchJobs, type Created } from '../test/support/job-burst.js';
import type { CleanroomClient, Job } from '../src/sdk/client.js';
import { TestReplicas } from '../test/support/replicas.js';
import { round, summarize, type Stats } from './stats.js';
import { PROTOCOL_VERSION } from '../src/shared/wire.js';

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
  /** Jobs per batch create in the second window (POST /v1/jobs/batch); 0: no batched window. */
  batchSize: number;
  /** Batch creates in flight at once in the second window. */
  batchClients: number;
}

export const FLEET_FULL: FleetPlan = { agents: 1000, capacity: 4, clients: 64, warmup: 500, windowMs: 10_000, maxJobs: 15_000, quiet: 200, batchSize: 50, batchClients: 8 };
export const FLEET_SMOKE: FleetPlan = { agents: 100, capacity: 4, clients: 16, warmup: 50, windowMs: 2_000, maxJobs: 1000, quiet: 20, batchSize: 20, batchClients: 4 };

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
  /**
   * Read and write system calls of the control plane's processes per job in the window (/proc/<pid>/io syscr, syscw:
   * socket reads and writes, each a trip through the kernel's loopback TCP): a count, so steadier than CPU time on a host
   * others load too.
   */
  control_syscalls_per_job: { read: number; write: number };
  client_and_fleet_cpu_ms_per_job: number;
  /** CPU ms per job of the PostgreSQL server (postmaster and every backend, /proc/<pid>/stat); null on SQLite (in-process). */
  store_cpu_ms_per_job: number | null;
  /** replicas × 1000 / control_cpu_ms_per_job (CPU of every replica's process): the jobs/s the replicas would sustain
   *  with a core each (robust to other load on the host, unlike jobs_per_s; a control plane's event loop is one thread). */
  control_cpu_bound_jobs_per_s: number;
  /** Jobs placed twice or past an agent's capacity (must be 0). */
  duplicates: number;
  over_capacity: number;
  /** Fleet connect time (all agents welcomed). */
  connect_s: number;
  /** The protocol the fake agents spoke (PROTOCOL_VERSION unless BENCH_FLEET_PROTOCOL says otherwise). */
  agent_protocol: number;
  /** Messages the fake agents sent per job in the window (reports, load reports; protocol 5: one job.report per job). */
  agent_messages_per_job: number;
  /**
   * The same fleet and control plane(s), a second window of batch creates (POST /v1/jobs/batch, `batch_size` jobs each,
   * `batch_clients` in flight): the figures above (single creates) stay the stage's headline; null when not measured.
   */
  batched: BatchedFigures | null;
}

/** BatchedFigures are the second window's: jobs created by batch creates, with the single-create window's figures. */
export type BatchedFigures = { batch_size: number; batch_clients: number } & Pick<
  FleetBench,
  | 'jobs'
  | 'succeeded'
  | 'jobs_per_s'
  | 'creates_per_s'
  | 'placement_ms'
  | 'create_answer_ms'
  | 'control_cpu_ms_per_job'
  | 'client_and_fleet_cpu_ms_per_job'
  | 'store_cpu_ms_per_job'
  | 'control_cpu_bound_jobs_per_s'
  | 'duplicates'
  | 'over_capacity'
  | 'agent_messages_per_job'
>;

/** FleetTopology is where the stage runs: one control plane on SQLite or on PostgreSQL, or two replicas on PostgreSQL. */
export type FleetTopology = 'sqlite' | 'postgres' | 'replicas';

/** Plane is the control plane(s) under test: API clients, agent channels and processes, one entry per replica. */
interface Plane {
  clients: CleanroomClient[];
  channels: string[];
  tls: { ca: string; cert: string; key: string };
  pids: number[];
  /** The PostgreSQL server's data dir (its postmaster and backends are counted as the store's CPU), if any. */
  pgData: string | null;
  stop(): Promise<void>;
}

async function startPlane(topology: FleetTopology, config: Record<string, unknown>): Promise<Plane> {
  const channel = (port: number) => `wss://127.0.0.1:${port}/v1/agent`;
  if (topology !== 'replicas') {
    const c = await TestCluster.start({ noAgent: true, store: topology, config });
    return { clients: [c.client], channels: [channel(c.agentPort)], tls: c.agentTls(), pids: [c.controlPid()], pgData: c.postgres ? join(c.postgres.dir, 'data') : null, stop: () => c.stop() };
  }
  // Two replicas on one PostgreSQL (test/support/replicas.ts), both without a local agent: half the fleet on each channel,
  // the clients take turns between the two APIs, so a job created on one replica is often placed on the other's agent.
  const r = await TestReplicas.start({ noAgent: true, config });
  const pidA = readdirSync('/proc').find((e) => /^\d+$/.test(e) && readOr(`/proc/${e}/cmdline`).includes(r.aDir));
  return {
    clients: [r.clientB, r.clientA],
    channels: [channel(r.b.agentPort), channel(r.aPorts.agentPort)],
    tls: r.b.agentTls(),
    pids: [r.controlPidB(), ...(pidA ? [Number(pidA)] : [])],
    pgData: r.b.postgres ? join(r.b.postgres.dir, 'data') : null,
    stop: () => r.stop(),
  };
}

/** measureFleet runs the stage on a control plane (or two replicas) it starts, and stops them. */
export async function measureFleet(plan: FleetPlan, log: (msg: string) => void, topology: FleetTopology = 'sqlite', config: Record<string, unknown> = {}): Promise<FleetBench> {
  const prof = process.env.BENCH_FLEET_PROF;
  // BENCH_FLEET_PROTOCOL=4: the fakes speak the previous protocol (a report per message), for an A/B on one build.
  const protocol = Number(process.env.BENCH_FLEET_PROTOCOL) || PROTOCOL_VERSION;
  const nodeArgs = process.env.CLEANROOM_CONTROL_NODE_ARGS;
  if (prof) process.env.CLEANROOM_CONTROL_NODE_ARGS = `${nodeArgs ?? ''} --cpu-prof --cpu-prof-dir=${prof}`;
  const plane = await startPlane(topology, { quotas: { maxRunningJobs: 10_000, maxQueuedJobs: 100_000 }, ...config });
  if (nodeArgs === undefined) delete process.env.CLEANROOM_CONTROL_NODE_ARGS;
  else process.env.CLEANROOM_CONTROL_NODE_ARGS = nodeArgs;
  const fleets: FakeFleet[] = [];
  const assignOf = (id: string) => {
    for (const f of fleets) {
      const a = f.assigned.get(id);
      if (a) return a;
    }
    return undefined;
  };
  /** create sends n jobs (or until untilMs) spread over the replicas' APIs, clients in flight in all. */
  const create = async (n: number, clients: number, untilMs = Number.POSITIVE_INFINITY) => {
    const k = plane.clients.length;
    const parts = await Promise.all(plane.clients.map((c) => createJobs(c, Math.ceil(n / k), Math.max(1, Math.round(clients / k)), undefined, untilMs)));
    return parts.flat();
  };
  try {
    const t0 = performance.now();
    const per = Math.ceil(plan.agents / plane.channels.length);
    for (const [i, url] of plane.channels.entries()) {
      fleets.push(await FakeFleet.start({ url, tls: plane.tls, agents: Math.min(per, plan.agents - per * i), capacity: plan.capacity, firstId: 0xa00000 + per * i, protocol }));
    }
    const connectS = (performance.now() - t0) / 1000;
    log(`fleet (${topology}): ${plan.agents} fake agents connected in ${round(connectS)} s; warm-up ${plan.warmup} jobs`);
    await create(plan.warmup, plan.clients);

    const cpu0 = { control: plane.pids.reduce((t, p) => t + processCpuMs(p), 0), self: selfCpuMs(), store: storeCpuMs(plane.pgData) };
    const io0 = syscalls(plane.pids);
    const sent0 = fleets.reduce((t, f) => t + f.sent.messages, 0);
    const t1 = performance.now();
    const created = await create(plan.maxJobs, plan.clients, t1 + plan.windowMs);
    const windowEnd = performance.now();
    // The reports of the last jobs are on their way: the CPU is read once every job was assigned (a fake reports its whole
    // job at once) and the control plane has gone quiet, before reading every job back through the API (its cost is the
    // bench's, not the jobs').
    const cpu1 = await settledCpu(plane, created.map((c) => c.id), assignOf);
    const io1 = syscalls(plane.pids);
    const sent1 = fleets.reduce((t, f) => t + f.sent.messages, 0);
    const jobs = await endedJobs(plane.clients[0]!, created.map((c) => c.id));
    const n = created.length;
    const succeeded = jobs.filter((j) => j.status === 'succeeded' && j.wipe !== null).length;
    const firstCreated = Math.min(...jobs.map((j) => Date.parse(j.createdAt)));
    const lastEnded = Math.max(...jobs.map((j) => Date.parse(j.endedAt ?? '')));
    const placement = created.map((c) => (assignOf(c.id)?.atMs ?? Number.NaN) - c.sentMs);
    log(`fleet (${topology}): ${n} jobs in ${round((windowEnd - t1) / 1000)} s; quiet placement ×${plan.quiet}`);

    const quiet: number[] = [];
    for (let i = 0; i < plan.quiet; i++) {
      const [c] = await createJobs(plane.clients[i % plane.clients.length]!, 1, 1);
      // The create's answer and the assign travel on different connections: the answer may come first.
      const until = performance.now() + 5000;
      while (!assignOf(c!.id) && performance.now() < until) await new Promise((r) => setTimeout(r, 1));
      quiet.push((assignOf(c!.id)?.atMs ?? Number.NaN) - c!.sentMs);
    }
    const controlMs = (cpu1.control - cpu0.control) / n;

    /** batchedWindow is the second window: the same load of jobs, created by batch creates. */
    const batchedWindow = async (): Promise<BatchedFigures> => {
      log(`fleet (${topology}): batched window, ${plan.batchClients} batch creates of ${plan.batchSize} in flight`);
      const c0 = { control: plane.pids.reduce((t, p) => t + processCpuMs(p), 0), self: selfCpuMs(), store: storeCpuMs(plane.pgData) };
      const s0 = fleets.reduce((t, f) => t + f.sent.messages, 0);
      const tb = performance.now();
      const k = plane.clients.length;
      const inFlight = Math.max(1, Math.round(plan.batchClients / k));
      const made = (await Promise.all(plane.clients.map((c) => createBatches(c, Math.ceil(plan.maxJobs / k), plan.batchSize, inFlight, tb + plan.windowMs)))).flat();
      const end = performance.now();
      const ids = made.map((c) => c.id);
      const c1 = await settledCpu(plane, ids, assignOf);
      const s1 = fleets.reduce((t, f) => t + f.sent.messages, 0);
      const done = await endedJobs(plane.clients[0]!, ids);
      const m = made.length;
      const ms = (c1.control - c0.control) / m;
      return {
        batch_size: plan.batchSize,
        batch_clients: plan.batchClients,
        jobs: m,
        succeeded: done.filter((j) => j.status === 'succeeded' && j.wipe !== null).length,
        jobs_per_s: round(m / ((Math.max(...done.map((j) => Date.parse(j.endedAt ?? ''))) - Math.min(...done.map((j) => Date.parse(j.createdAt)))) / 1000)),
        creates_per_s: round(m / ((end - Math.min(...made.map((c) => c.sentMs))) / 1000)),
        placement_ms: summarize(made.map((c) => (assignOf(c.id)?.atMs ?? Number.NaN) - c.sentMs)),
        create_answer_ms: summarize(made.map((c) => c.answeredMs - c.sentMs)),
        control_cpu_ms_per_job: round(ms),
        client_and_fleet_cpu_ms_per_job: round((c1.self - c0.self) / m),
        store_cpu_ms_per_job: plane.pgData ? round((c1.store - c0.store) / m) : null,
        control_cpu_bound_jobs_per_s: round((1000 / ms) * plane.pids.length),
        duplicates: made.filter((c) => fleets.filter((f) => f.assigned.has(c.id)).length > 1).length,
        over_capacity: fleets.reduce((t, f) => t + f.overCapacity.length, 0),
        agent_messages_per_job: round((s1 - s0) / m),
      };
    };
    const batched = plan.batchSize > 0 ? await batchedWindow() : null;
    if (batched) log(`fleet (${topology}): batched ${batched.jobs} jobs, ${batched.jobs_per_s} jobs/s`);
    return {
      store: topology === 'sqlite' ? 'sqlite' : 'postgres',
      replicas: plane.pids.length,
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
      control_cpu_ms_per_job: round(controlMs),
      control_syscalls_per_job: { read: round((io1.read - io0.read) / n), write: round((io1.write - io0.write) / n) },
      client_and_fleet_cpu_ms_per_job: round((cpu1.self - cpu0.self) / n),
      store_cpu_ms_per_job: plane.pgData ? round((cpu1.store - cpu0.store) / n) : null,
      control_cpu_bound_jobs_per_s: round((1000 / controlMs) * plane.pids.length),
      duplicates: fleets.reduce((t, f) => t + f.duplicates.length, 0) + created.filter((c) => fleets.filter((f) => f.assigned.has(c.id)).length > 1).length,
      over_capacity: fleets.reduce((t, f) => t + f.overCapacity.length, 0),
      connect_s: round(connectS),
      agent_protocol: protocol,
      agent_messages_per_job: round((sent1 - sent0) / n),
      batched,
    };
  } finally {
    for (const f of fleets) f.close();
    await plane.stop();
  }
}

/**
 * createBatches sends `n` jobs as batch creates of `size` (SDK createJobs), `inFlight` batches at a time, until
 * performance.now() passes `untilMs`; each job carries its batch's send and answer times.
 */
async function createBatches(client: CleanroomClient, n: number, size: number, inFlight: number, untilMs: number): Promise<Created[]> {
  const out: Created[] = [];
  let sent = 0;
  await Promise.all(
    Array.from({ length: inFlight }, async () => {
      while (sent < n && performance.now() < untilMs) {
        const k = Math.min(size, n - sent);
        sent += k;
        const sentMs = performance.now();
        const jobs = await client.createJobs(Array.from({ length: k }, () => ({ command: ['/bin/echo', 'hi'] })));
        const answeredMs = performance.now();
        for (const j of jobs) out.push({ id: j.id, status: j.status, sentMs, answeredMs });
      }
    }),
  );
  return out;
}

/** CPU_QUIET_MS is the most CPU (ms, all replicas) the control plane may spend in a QUIET_STEP_MS to count as done. */
const CPU_QUIET_MS = 20;
const QUIET_STEP_MS = 100;

/**
 * settledCpu waits until every job was assigned, then until the control plane's CPU use drops to its background (heartbeats,
 * agent load reports), at most 5 s, and reads the CPU counters.
 */
async function settledCpu(plane: Plane, ids: string[], assignOf: (id: string) => unknown): Promise<{ control: number; self: number; store: number }> {
  const control = () => plane.pids.reduce((t, p) => t + processCpuMs(p), 0);
  const deadline = performance.now() + 5000;
  while (ids.some((id) => !assignOf(id)) && performance.now() < deadline) await new Promise((r) => setTimeout(r, 20));
  let last = { control: control(), self: selfCpuMs(), store: storeCpuMs(plane.pgData) };
  while (performance.now() < deadline) {
    await new Promise((r) => setTimeout(r, QUIET_STEP_MS));
    const now = { control: control(), self: selfCpuMs(), store: storeCpuMs(plane.pgData) };
    const quiet = now.control - last.control <= CPU_QUIET_MS;
    if (quiet) return last;
    last = now;
  }
  return last;
}

function readOr(path: string): string {
  try {
    return readFileSync(path, 'utf8');
  } catch {
    return '';
  }
}

/** endedJobs waits until every job has ended with its receipt (a fake reports both at once) and returns them. */
async function endedJobs(client: CleanroomClient, ids: string[]): Promise<Job[]> {
  const done = new Map<string, Job>();
  let open = ids;
  // Generous: on two replicas jobs wait for cross-replica placement, far slower than one replica (the figures say so).
  const deadline = Date.now() + 180_000;
  for (;;) {
    const read = await fetchJobs(client, open, 16);
    for (const j of read) if (j.endedAt !== null && (j.wipe !== null || j.status !== 'succeeded')) done.set(j.id, j);
    open = open.filter((id) => !done.has(id));
    if (open.length === 0) return ids.map((id) => done.get(id)!);
    if (Date.now() > deadline) {
      const states = new Map<string, number>();
      for (const j of read.filter((x) => !done.has(x.id))) states.set(`${j.status}${j.wipe ? '+receipt' : ''}`, (states.get(`${j.status}${j.wipe ? '+receipt' : ''}`) ?? 0) + 1);
      throw new Error(`${open.length} of ${ids.length} fleet jobs did not end with a receipt within 180 s: ${JSON.stringify(Object.fromEntries(states))}, e.g. ${JSON.stringify(read.find((x) => !done.has(x.id)))}`);
    }
    await new Promise((r) => setTimeout(r, 200));
  }
}

/** syscalls sums the read and write system calls of processes so far (/proc/<pid>/io; this bench runs as root). */
function syscalls(pids: readonly number[]): { read: number; write: number } {
  let read = 0;
  let write = 0;
  for (const pid of pids) {
    const io = readOr(`/proc/${pid}/io`);
    read += Number(/^syscr: (\d+)$/m.exec(io)?.[1] ?? 0);
    write += Number(/^syscw: (\d+)$/m.exec(io)?.[1] ?? 0);
  }
  return { read, write };
}

/** processCpuMs is a process's user + system CPU time so far (ms), from /proc/<pid>/stat. */
function processCpuMs(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  // Fields 14 and 15 of stat (utime, stime) are the 12th and 13th after the command; clock ticks of 10 ms.
  return (Number(fields[11]) + Number(fields[12])) * 10;
}

/**
 * storeCpuMs is the CPU time so far of a PostgreSQL server: its postmaster (first line of postmaster.pid) and every
 * process whose parent it is (backends, walwriter, ...), and the children it reaped.
 */
function storeCpuMs(pgData: string | null): number {
  if (!pgData) return 0;
  const postmaster = Number(readOr(join(pgData, 'postmaster.pid')).split('\n')[0]);
  if (!postmaster) return 0;
  let ms = 0;
  for (const e of readdirSync('/proc')) {
    if (!/^\d+$/.test(e)) continue;
    const stat = readOr(`/proc/${e}/stat`);
    if (!stat) continue;
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    // The 4th field of stat (ppid) is the 2nd after the command; the postmaster's cutime and cstime hold the backends
    // that exited (the pool closes idle connections), so nothing is lost between the two readings.
    if (Number(e) === postmaster) ms += (Number(fields[11]) + Number(fields[12]) + Number(fields[13]) + Number(fields[14])) * 10;
    else if (Number(fields[1]) === postmaster) ms += (Number(fields[11]) + Number(fields[12])) * 10;
  }
  return ms;
}

function selfCpuMs(): number {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1000;
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  const smoke = process.env.BENCH_SMOKE === '1';
  const store: FleetTopology = process.env.BENCH_FLEET_STORE === 'postgres' ? 'postgres' : process.env.BENCH_FLEET_STORE === 'replicas' ? 'replicas' : 'sqlite';
  const started = { date: new Date().toISOString(), load_avg_1m: round(loadavg()[0] ?? Number.NaN) };
  // BENCH_FLEET_WINDOW_MS shortens (or lengthens) the measured window, e.g. for an A/B on a busy host.
  const window = Number(process.env.BENCH_FLEET_WINDOW_MS) || 0;
  // BENCH_FLEET_BATCH=<jobs per batch create> (0: no batched window), BENCH_FLEET_BATCH_CLIENTS=<batches in flight>.
  const base = smoke ? FLEET_SMOKE : FLEET_FULL;
  const batchEnv = process.env.BENCH_FLEET_BATCH;
  const plan: FleetPlan = {
    ...base,
    ...(window > 0 ? { windowMs: window } : {}),
    ...(batchEnv !== undefined && batchEnv !== '' ? { batchSize: Number(batchEnv) } : {}),
    ...(Number(process.env.BENCH_FLEET_BATCH_CLIENTS) > 0 ? { batchClients: Number(process.env.BENCH_FLEET_BATCH_CLIENTS) } : {}),
  };
  measureFleet(plan, (m) => process.stderr.write(`[fleet ${new Date().toISOString().slice(11, 19)}] ${m}\n`), store).then(
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
