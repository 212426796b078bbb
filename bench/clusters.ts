// bench/clusters.ts: starts and stops the bench's clusters, and checks that a stopped cluster left nothing behind
// (cgroups, loop devices, mounts, processes): every cell is wiped on `down`, so a leftover means something is broken.
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { listCgroups } from '../src/agent/cells/cgroup.js';
import { TestCluster } from '../test/support/cluster.js';

/** PoolTarget is one entry of the agent's `pool` config. */
export interface PoolTarget {
  runtime: 'runc' | 'runsc';
  class: string;
  warm: number;
}

/** Clusters runs bench clusters one at a time and collects what any of them left behind. */
export class Clusters {
  /** Descriptions of host objects a stopped cluster left behind. */
  readonly leftovers: string[] = [];

  constructor(private readonly log: (msg: string) => void) {}

  /** with starts a cluster with `pool`, waits for the pool to be full, runs fn, stops it and checks the host. */
  async with<T>(pool: PoolTarget[], fn: (c: TestCluster) => Promise<T>): Promise<T> {
    const cluster = await TestCluster.start({ config: { agent: { pool } } });
    const agentId = cluster.agentId;
    this.log(`cluster up: agent ${agentId}, data ${cluster.dataDir}, pool ${pool.map((p) => `${p.runtime}×${p.warm}`).join(' ')}`);
    let outcome: { ok: true; value: T } | { ok: false; error: unknown };
    try {
      await cluster.waitWarm(600_000);
      outcome = { ok: true, value: await fn(cluster) };
    } catch (error) {
      outcome = { ok: false, error };
    }
    // A failing stop (TestCluster reports leaked processes and mounts) must not hide why the measurement failed;
    // if `down` left the control plane or agent running, they get SIGTERM by pid (the agent wipes its cells on it).
    const pids = [Number(readOr(join(cluster.dataDir, 'run', 'control.pid'))), cluster.agentPid()];
    const left: string[] = await cluster.stop().then(() => [], (e: Error) => [`stop: ${e.message}`]);
    for (const pid of pids) if (readOr(`/proc/${pid}/cmdline`).includes(cluster.dataDir)) process.kill(pid, 'SIGTERM');
    left.push(...leftovers(agentId, cluster.dataDir));
    if (left.length > 0) this.log(`cluster ${agentId} left behind: ${left.join('; ')}`);
    this.leftovers.push(...left);
    if (!outcome.ok) throw outcome.error;
    return outcome.value;
  }
}

function leftovers(agentId: string, dataDir: string): string[] {
  const out = listCgroups(`cr-${agentId}-`).map((n) => `cgroup ${n}`);
  for (const dev of readdirSync('/sys/block').filter((d) => d.startsWith('loop'))) {
    const backing = readOr(`/sys/block/${dev}/loop/backing_file`);
    if (backing.startsWith(dataDir)) out.push(`/dev/${dev} → ${backing.trim()}`);
  }
  for (const line of readOr('/proc/mounts').split('\n')) if (line.includes(dataDir)) out.push(`mount ${line.split(' ')[1]}`);
  for (const pid of readdirSync('/proc').filter((p) => /^\d+$/.test(p))) {
    const cmdline = readOr(`/proc/${pid}/cmdline`).replace(/\0/g, ' ');
    if (cmdline.includes(dataDir)) out.push(`process ${pid}: ${cmdline.slice(0, 120)}`);
  }
  return out;
}

function readOr(path: string): string {
  try {
    return readFileSync(path, 'utf8');
  } catch {
    return '';
  }
}
