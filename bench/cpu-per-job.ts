// bench/cpu-per-job.ts: CPU-seconds per job by process class, robust to other load on the host (it counts only the
// cluster's own processes, from /proc, never wall-clock rates). One cluster with a warm pool of one runtime; jobs run
// one after another through the public API, and after the last one the pool is let refill and every wipe finish, so the
// window holds exactly N prepares, N assignments, N runs and N wipes.
//   node dist/bench/cpu-per-job.js [runtime=runc] [jobs=60]
// Classes: control (control plane process), agent (its Node process), tools (helpers it spawned and reaped: runtime
// command lines, mkfs, …), coprocs (its long-lived helpers: `ip -batch`, `nft -i`), cells (reaped by its subreaper:
// container inits, workloads), kthreads (every kernel thread on the host: loop and ext4 workers, netns cleanup — other
// load on the host leaks into this one, so it is reported apart and not in `ours`).
import { spawn } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { TestCluster } from '../test/support/cluster.js';
import type { Runtime } from '../src/shared/wire.js';
import { COMMAND } from './baselines.js';
import { runTimedJob, awaitWipe } from './timed-job.js';

const TICKS_PER_S = 100;

interface Times { self: number; children: number }

function procTimes(pid: number): Times {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ').map(Number);
    const at = (field: number): number => f[field - 3] ?? 0;
    return { self: (at(14) + at(15)) / TICKS_PER_S, children: (at(16) + at(17)) / TICKS_PER_S };
  } catch {
    return { self: 0, children: 0 };
  }
}

function childrenOf(pid: number): number[] {
  const out: number[] = [];
  try {
    for (const tid of readdirSync(`/proc/${pid}/task`)) {
      out.push(...readFileSync(`/proc/${pid}/task/${tid}/children`, 'utf8').trim().split(/\s+/).filter(Boolean).map(Number));
    }
  } catch {
    // gone
  }
  return out;
}

function kthreadSeconds(): number {
  let sum = 0;
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const stat = readFileSync(`/proc/${name}/stat`, 'utf8');
      const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      const flags = Number(f[9 - 3]);
      if ((flags & 0x00200000) === 0) continue; // PF_KTHREAD
      sum += (Number(f[14 - 3]) + Number(f[15 - 3])) / TICKS_PER_S;
    } catch {
      // gone
    }
  }
  return sum;
}

type Parts = Record<'control' | 'agent' | 'tools' | 'coprocs' | 'cells' | 'kthreads', number>;

function read(controlPid: number, agentPid: number, reaperPid: number | null): Parts {
  const agent = procTimes(agentPid);
  // Long-lived children (co-processes) are counted live; cells live under the subreaper, not the agent.
  const coprocs = childrenOf(agentPid).reduce((s, p) => s + procTimes(p).self, 0);
  return {
    control: procTimes(controlPid).self,
    agent: agent.self,
    tools: agent.children,
    coprocs,
    cells: reaperPid === null ? 0 : procTimes(reaperPid).children,
    kthreads: kthreadSeconds(),
  };
}

async function main(): Promise<void> {
  const runtime = (process.argv[2] ?? 'runc') as Runtime;
  const jobs = Number(process.argv[3] ?? 60);
  const cluster = await TestCluster.start({ config: { agent: { pool: [{ runtime, class: 'small', warm: 2 }] } } });
  try {
    await cluster.waitWarm(120_000);
    const controlPid = Number(readFileSync(join(cluster.dataDir, 'run', 'control.pid'), 'utf8'));
    const launched = cluster.agentPid();
    const wrapped = readFileSync(`/proc/${launched}/comm`, 'utf8').trim() === 'tini';
    const agentPid = wrapped ? Number(readFileSync(`/proc/${launched}/task/${launched}/children`, 'utf8').trim().split(/\s+/)[0]) : launched;
    const reaperPid = wrapped ? launched : null;
    // Warm-up: two jobs, not counted.
    for (let i = 0; i < 2; i++) await awaitWipe(cluster.client, await runTimedJob(cluster.client, { command: COMMAND, runtime }, 'hi\n'));
    await cluster.waitWarm(60_000);
    // PERF=<file>: record the agent (with kernel stacks) during the window, for `perf report -i <file>`; PERF_ALL=1
    // records every CPU instead (kernel threads included; other load on the host too: filter by pid or comm).
    const target = process.env.PERF_ALL ? ['-a'] : ['-p', String(agentPid)];
    const perf = process.env.PERF ? spawn('perf', ['record', '-q', '-g', '-F', '999', ...target, '-o', process.env.PERF], { stdio: 'inherit' }) : null;
    if (perf) await new Promise((r) => setTimeout(r, 500));
    const t0 = performance.now();
    const before = read(controlPid, agentPid, reaperPid);
    const samples = [];
    for (let i = 0; i < jobs; i++) samples.push(await runTimedJob(cluster.client, { command: COMMAND, runtime }, 'hi\n'));
    for (const s of samples) await awaitWipe(cluster.client, s);
    await cluster.waitWarm(60_000);
    await new Promise((r) => setTimeout(r, 300)); // the last refill's cell is warm; let its helpers be reaped
    const after = read(controlPid, agentPid, reaperPid);
    if (perf) {
      perf.kill('SIGINT');
      await new Promise((r) => perf.once('exit', r));
    }
    const wallS = (performance.now() - t0) / 1000;
    const perJob: Record<string, number> = {};
    let ours = 0;
    for (const k of Object.keys(before) as (keyof Parts)[]) {
      const ms = ((after[k] - before[k]) * 1000) / jobs;
      perJob[k] = Math.round(ms * 10) / 10;
      if (k !== 'kthreads') ours += ms;
    }
    perJob.ours = Math.round(ours * 10) / 10;
    const loadavg = readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(' ');
    console.log(JSON.stringify({ runtime, jobs, pids: { control: controlPid, agent: agentPid, reaper: reaperPid }, wall_s: Math.round(wallS * 10) / 10, loadavg, cpu_ms_per_job: perJob }));
  } finally {
    await cluster.stop();
  }
}

await main();
