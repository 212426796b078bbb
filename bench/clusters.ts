// bench/clusters.ts: starts and stops the bench's clusters and collects what a stopped cluster left behind (the checks
// are TestCluster.stop's: processes, nft, cgroups, loop devices, mounts): every cell is wiped on `down`, so a leftover
// means something is broken.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { TestCluster } from '../test/support/cluster.js';
import type { Runtime } from '../src/shared/wire.js';

/** PoolTarget is one entry of the agent's `pool` config. */
export interface PoolTarget {
  runtime: Runtime;
  class: string;
  warm: number;
  /** Demand may grow the pool up to this (absent: fixed at warm). */
  max?: number;
  /** The image (a digest) the pool's cells run on; absent: the cluster's default. */
  image?: string;
}

/** Clusters runs bench clusters one at a time and collects what any of them left behind. */
export class Clusters {
  /** Descriptions of host objects a stopped cluster left behind. */
  readonly leftovers: string[] = [];

  constructor(private readonly log: (msg: string) => void) {}

  /** with starts a cluster with `pool`, waits for the pool to be full, runs fn, stops it and checks the host. */
  async with<T>(pool: PoolTarget[], fn: (c: TestCluster) => Promise<T>, config: Record<string, unknown> = {}, store: 'sqlite' | 'postgres' = 'sqlite'): Promise<T> {
    const cluster = await TestCluster.start({ store, config: { ...config, agent: { ...((config.agent as object | undefined) ?? {}), pool } } });
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
    if (left.length > 0) this.log(`cluster ${agentId} left behind: ${left.join('; ')}`);
    this.leftovers.push(...left);
    if (!outcome.ok) throw outcome.error;
    return outcome.value;
  }
}

function readOr(path: string): string {
  try {
    return readFileSync(path, 'utf8');
  } catch {
    return '';
  }
}
