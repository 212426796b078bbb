// bench/cpu.ts: CPU time per part of a running cluster, to name the bottleneck of the throughput stage.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { TestCluster } from '../test/support/cluster.js';

/** Clock ticks per second of /proc times (USER_HZ; 100 on Linux). */
const TICKS_PER_S = 100;

/** CpuParts are CPU seconds consumed, split by who consumed them. */
export interface CpuParts {
  /** The control plane process. */
  control: number;
  /** The agent's own Node.js process. */
  agent: number;
  /** Helpers the agent spawned and reaped: runc/runsc command lines, mkfifo. */
  agent_children: number;
  /** Processes reaped by the agent's subreaper (tini): container inits, workloads, runsc sandboxes. */
  cells: number;
  /** This bench process (the clients). */
  bench_clients: number;
  /** Every CPU of the host (all processes, kernel included). */
  host: number;
}

/** CpuMeter reads the cluster's processes' CPU counters; `since` gives the usage in cores between two readings. */
export class CpuMeter {
  private constructor(
    private readonly controlPid: number,
    private readonly agentPid: number,
    private readonly reaperPid: number | null,
  ) {}

  /** of finds the control plane, the agent and its subreaper (when there is one) of a cluster. */
  static of(cluster: TestCluster): CpuMeter {
    const controlPid = Number(readFileSync(join(cluster.dataDir, 'run', 'control.pid'), 'utf8'));
    const launched = cluster.agentPid();
    const comm = readFileSync(`/proc/${launched}/comm`, 'utf8').trim();
    if (comm !== 'tini') return new CpuMeter(controlPid, launched, null);
    const child = Number(readFileSync(`/proc/${launched}/task/${launched}/children`, 'utf8').trim().split(/\s+/)[0]);
    return new CpuMeter(controlPid, child, launched);
  }

  /** read returns cumulative CPU seconds. */
  read(): CpuParts {
    const agent = procTimes(this.agentPid);
    const bench = process.cpuUsage();
    return {
      control: procTimes(this.controlPid).self,
      agent: agent.self,
      agent_children: agent.children,
      cells: this.reaperPid === null ? 0 : procTimes(this.reaperPid).children,
      bench_clients: (bench.user + bench.system) / 1e6,
      host: hostBusySeconds(),
    };
  }
}

/** coresUsed turns two readings `seconds` apart into average cores used per part. */
export function coresUsed(before: CpuParts, after: CpuParts, seconds: number): CpuParts {
  const out = {} as CpuParts;
  for (const k of Object.keys(before) as (keyof CpuParts)[]) out[k] = Math.round(((after[k] - before[k]) / seconds) * 100) / 100;
  return out;
}

/** procTimes is a process's CPU seconds: its own, and its reaped children's. */
export function procTimes(pid: number): { self: number; children: number } {
  // Fields after the command name (which may contain spaces): state is field 3, utime 14, stime 15, cutime 16, cstime 17.
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ').map(Number);
  const at = (field: number): number => f[field - 3] ?? 0;
  return { self: (at(14) + at(15)) / TICKS_PER_S, children: (at(16) + at(17)) / TICKS_PER_S };
}

function hostBusySeconds(): number {
  const cpu = readFileSync('/proc/stat', 'utf8').split('\n')[0]!.trim().split(/\s+/).slice(1).map(Number);
  const idle = (cpu[3] ?? 0) + (cpu[4] ?? 0);
  // user nice system idle iowait irq softirq steal (guest time is already inside user).
  return (cpu.slice(0, 8).reduce((a, b) => a + b, 0) - idle) / TICKS_PER_S;
}
