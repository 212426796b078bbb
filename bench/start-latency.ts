// bench/start-latency.ts: a series of sequential starts (warm or cold), each on a quiet host.
// Before every sample the pool is back at its target and the previous cell is wiped, so no sample finds an empty pool;
// the refill the sample's own take starts does run alongside it (that is the product's behaviour). The throughput
// stage measures the loaded case.
import type { TestCluster } from '../test/support/cluster.js';
import { COMMAND } from './baselines.js';
import { awaitWipe, runTimedJob, type TimedJob } from './timed-job.js';
import type { Runtime } from '../src/shared/wire.js';

/** StartSeries is the samples of one series, split by whether the agent found a warm cell. */
export interface StartSeries {
  /** Samples in the state asked for (warm: agent_cold 0; cold: agent_cold 1). */
  samples: TimedJob[];
  /** Samples that were not in that state; excluded from `samples` and reported. */
  mismatched: number;
  /** Samples whose wipe receipt never came (kept for their start latency; the run is reported broken). */
  wipeFailures: string[];
}

/** measureStarts runs `warmup` unrecorded jobs, then `n` recorded ones of `runtime`, one at a time (on `image`, if given). */
export async function measureStarts(cluster: TestCluster, runtime: Runtime, n: number, want: 'warm' | 'cold', warmup = 2, image?: string): Promise<StartSeries> {
  const samples: TimedJob[] = [];
  let mismatched = 0;
  const wipeFailures: string[] = [];
  for (let i = 0; i < warmup + n; i++) {
    await cluster.waitWarm(120_000);
    const ran = await runTimedJob(cluster.client, { command: COMMAND, runtime, ...(image ? { image } : {}) }, 'hi\n');
    const s = await awaitWipe(cluster.client, ran).catch((e: Error) => (wipeFailures.push(e.message), ran));
    if (i < warmup) continue;
    const found = { 0: 'warm', 1: 'cold' }[s.job.timings.agent_cold ?? -1];
    if (found === want) samples.push(s);
    else mismatched++;
  }
  return { samples, mismatched, wipeFailures };
}

/** measureAlternating runs warm starts on the host root and on `image` in turns, in one cluster (a fair comparison). */
export async function measureAlternating(cluster: TestCluster, runtime: Runtime, n: number, image: string): Promise<{ host: StartSeries; image: StartSeries }> {
  const host: StartSeries = { samples: [], mismatched: 0, wipeFailures: [] };
  const onImage: StartSeries = { samples: [], mismatched: 0, wipeFailures: [] };
  for (let i = 0; i < n; i++) {
    for (const [series, ref] of [[host, undefined], [onImage, image]] as const) {
      const one = await measureStarts(cluster, runtime, 1, 'warm', i === 0 ? 1 : 0, ref);
      series.samples.push(...one.samples);
      series.mismatched += one.mismatched;
      series.wipeFailures.push(...one.wipeFailures);
    }
  }
  return { host, image: onImage };
}
