// bench/clusters.ts: starts and stops the bench's clusters, and checks that a stopped cluster left nothing behind
// (cgroups, loop devices, mounts, processes): every cell is wiped on `down`, so a leftover means something is broken.
import { readdirSync, readFileSync } from 'node:fs';
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
    try {
      await cluster.waitWarm(600_000);
      return await fn(cluster);
    } finally {
      await cluster.stop();
      const left = leftovers(agentId, cluster.dataDir);
      if (left.length > 0) this.log(`cluster ${agentId} left behind: ${left.join('; ')}`);
      this.leftovers.push(...left);
    }
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
