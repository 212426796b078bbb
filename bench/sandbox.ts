// bench/sandbox.ts: the sandbox figures of `npm run bench` (issue 13's Performance section), measured on the bench's main
// cluster so that the ratios compare with the job and host figures of the same run: create → ready (warm pool); an
// `echo` exec round trip (exec request sent → exit seen by the client); a 1 MiB file write then read; N concurrent
// sandboxes each running 10 execs (p99 and failures); host memory per idle sandbox (MemAvailable with the N sandboxes
// idle against before they were made). Alone: `node dist/bench/sandbox.js [samples] [concurrent]` (writes nothing).
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { listCgroups } from '../src/agent/cells/cgroup.js';
import { fileURLToPath } from 'node:url';
import { Sandbox } from '../src/sdk/sandbox.js';
import type { TestCluster } from '../test/support/cluster.js';
import { Clusters } from './clusters.js';
import { round, summarize, type Stats } from './stats.js';

/** SandboxPlan is how many samples each sandbox series takes. */
export interface SandboxPlan {
  creates: number;
  execs: number;
  files: number;
  concurrent: number;
  execsEach: number;
}

/** SANDBOX_FULL and SANDBOX_SMOKE are the plans of a real run and of a smoke run. */
export const SANDBOX_FULL: SandboxPlan = { creates: 30, execs: 100, files: 20, concurrent: 100, execsEach: 10 };
export const SANDBOX_SMOKE: SandboxPlan = { creates: 2, execs: 5, files: 2, concurrent: 3, execsEach: 2 };

/**
 * sandboxConfig is what the cluster needs for `concurrent` sandboxes streaming at once: the workspace's running quota,
 * its live-stream quota (every exec streams until its exit) and the agent's capacity.
 */
export function sandboxConfig(plan: SandboxPlan): Record<string, unknown> {
  const room = plan.concurrent + 8;
  return { quotas: { maxRunningJobs: Math.max(32, room), maxStreams: Math.max(64, room) }, agent: { maxRunningJobs: Math.max(64, room) } };
}

/** SandboxBench is the sandbox section of latest.json. */
export interface SandboxBench {
  create_ready_ms: Stats;
  exec_echo_roundtrip_ms: Stats;
  file_1mib_write_read_ms: Stats;
  concurrent: { sandboxes: number; execs_each: number; failures: number; errors: string[]; exec_roundtrip_ms: Stats; wall_s: number };
  /**
   * Host memory per idle sandbox (MiB): what its cell's cgroups are charged (processes, tmpfs, page cache of its volume)
   * plus the growth of the agent's and control plane's resident memory, over the N idle sandboxes, divided by N.
   * (MemAvailable moves by the page cache of everything else running, so it is kept only as a note.)
   */
  idle_sandbox_memory_mib: number | null;
  idle_mem_available_drop_mib_per_sandbox: number | null;
}

/** accountedMiB is the memory charged to the agent's cell cgroups plus the agent's and control plane's resident memory. */
function accountedMiB(c: TestCluster): number {
  let bytes = 0;
  for (const name of listCgroups(`cr-${c.agentId}-`)) {
    try {
      bytes += Number(readFileSync(`/sys/fs/cgroup/memory/${name}/memory.usage_in_bytes`, 'utf8'));
    } catch {
      // gone meanwhile
    }
  }
  const rss = (pid: number) => Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1] ?? 0) * 1024;
  const control = Number(readFileSync(join(c.dataDir, 'run', 'control.pid'), 'utf8'));
  return (bytes + rss(control) + rss(agentProcess(c))) / 2 ** 20;
}

/** agentProcess is the agent's Node process (under tini when there is one). */
function agentProcess(c: TestCluster): number {
  const launched = c.agentPid();
  if (readFileSync(`/proc/${launched}/comm`, 'utf8').trim() !== 'tini') return launched;
  return Number(readFileSync(`/proc/${launched}/task/${launched}/children`, 'utf8').trim().split(/\s+/)[0]);
}

const memAvailableMiB = () => Number(/MemAvailable:\s+(\d+)/.exec(readFileSync('/proc/meminfo', 'utf8'))?.[1] ?? 0) / 1024;

/** measureSandboxes runs the sandbox series on a running cluster with a warm runc pool. */
export async function measureSandboxes(c: TestCluster, plan: SandboxPlan, log: (msg: string) => void = () => {}): Promise<SandboxBench> {
  const client = c.client;
  log(`sandboxes: create → ready ×${plan.creates}`);
  const creates: number[] = [];
  for (let i = 0; i < plan.creates; i++) {
    await c.waitWarm(120_000);
    const t0 = performance.now();
    const sb = await Sandbox.create({}, client);
    creates.push(performance.now() - t0);
    await sb.kill();
  }
  log(`sandboxes: echo exec round trip ×${plan.execs}, 1 MiB write + read ×${plan.files}`);
  await c.waitWarm(120_000);
  const sb = await Sandbox.create({}, client);
  const execs: number[] = [];
  for (let i = 0; i < plan.execs + 3; i++) {
    const t0 = performance.now();
    const r = await sb.exec(['/bin/echo', 'hi']);
    if (r.stdout !== 'hi\n') throw new Error(`echo in a sandbox gave ${JSON.stringify(r.stdout)}`);
    if (i >= 3) execs.push(performance.now() - t0);
  }
  const mib = Buffer.alloc(1024 * 1024, 7);
  const files: number[] = [];
  for (let i = 0; i < plan.files; i++) {
    const t0 = performance.now();
    await sb.files.write('/work/bench.bin', mib);
    if (!(await sb.files.read('/work/bench.bin')).equals(mib)) throw new Error('a 1 MiB file came back different');
    files.push(performance.now() - t0);
  }
  await sb.kill();
  log(`sandboxes: ${plan.concurrent} at once × ${plan.execsEach} execs`);
  const memBefore = memAvailableMiB();
  const accountedBefore = accountedMiB(c);
  const t0 = performance.now();
  const boxes = await Promise.all(Array.from({ length: plan.concurrent }, () => Sandbox.create({}, client)));
  await new Promise((r) => setTimeout(r, 1000));
  const memIdle = memAvailableMiB();
  const accountedIdle = accountedMiB(c);
  const rounds: number[] = [];
  const errors: string[] = [];
  await Promise.all(
    boxes.map(async (b) => {
      for (let i = 0; i < plan.execsEach; i++) {
        const s = performance.now();
        const r = await b.exec(['/bin/echo', 'hi']).catch((e: Error) => (errors.push(e.message), null));
        if (r?.stdout === 'hi\n') rounds.push(performance.now() - s);
        else if (r) errors.push(`echo gave ${JSON.stringify(r.stdout)}`);
      }
    }),
  );
  const wall = (performance.now() - t0) / 1000;
  await Promise.all(boxes.map((b) => b.kill()));
  const drop = memBefore - memIdle;
  return {
    create_ready_ms: summarize(creates),
    exec_echo_roundtrip_ms: summarize(execs),
    file_1mib_write_read_ms: summarize(files),
    concurrent: { sandboxes: plan.concurrent, execs_each: plan.execsEach, failures: errors.length, errors: errors.slice(0, 5), exec_roundtrip_ms: summarize(rounds), wall_s: round(wall) },
    idle_sandbox_memory_mib: plan.concurrent > 0 ? round((accountedIdle - accountedBefore) / plan.concurrent) : null,
    idle_mem_available_drop_mib_per_sandbox: drop > 0 && plan.concurrent > 0 ? round(drop / plan.concurrent) : null,
  };
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const samples = Number(process.argv[2] ?? 20);
  const concurrent = Number(process.argv[3] ?? 20);
  const plan: SandboxPlan = { creates: samples, execs: samples * 3, files: samples, concurrent, execsEach: 10 };
  const clusters = new Clusters((m) => process.stderr.write(`${m}\n`));
  const r = await clusters.with([{ runtime: 'runc', class: 'small', warm: 4 }, { runtime: 'runsc', class: 'small', warm: 0 }], (c) => measureSandboxes(c, plan, (m) => process.stderr.write(`${m}\n`)), sandboxConfig(plan));
  process.stdout.write(JSON.stringify(r, null, 2) + '\n');
  process.exit(clusters.leftovers.length > 0 ? 1 : 0);
}
