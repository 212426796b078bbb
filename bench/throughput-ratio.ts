// bench/throughput-ratio.ts: issue 16's ratio alone, in one run — sustained jobs/s with every layer on (crun cells, then
// runc cells) against bare `runc run` of the same command at the same parallelism, the bare rate measured before and
// after the cluster's windows so that a change in other load on the host shows as a gap between the two (ratio-stage.ts;
// the full bench's ratio stage measures the same way, on its main cluster).
//   node dist/bench/throughput-ratio.js [parallel=3] [windowSeconds=20]
import { readFileSync } from 'node:fs';
import { BareBundles } from './baselines.js';
import { Clusters } from './clusters.js';
import { measureBareRunc, ratioStage } from './ratio-stage.js';
import { measureThroughput } from './throughput.js';

async function main(): Promise<void> {
  const lanes = Number(process.argv[2] ?? 3);
  const ms = Number(process.argv[3] ?? 20) * 1000;
  const log = (m: string) => process.stderr.write(`[ratio ${new Date().toISOString().slice(11, 19)}] ${m}\n`);
  const bundles = BareBundles.create();
  try {
    log(`bare runc run, ${lanes} loops`);
    const before = await measureBareRunc(bundles, lanes, ms);
    const clusters = new Clusters(log);
    const levels = await clusters.with(
      [{ runtime: 'crun', class: 'small', warm: 4, max: 64 }, { runtime: 'runc', class: 'small', warm: 4, max: 64 }],
      async (c) => [await measureThroughput(c, lanes, ms, 'crun'), await measureThroughput(c, lanes, ms, 'runc')],
    );
    log(`bare runc run again, ${lanes} loops`);
    const after = await measureBareRunc(bundles, lanes, ms);
    const stage = ratioStage(lanes, before, after, levels);
    const out = {
      date: new Date().toISOString(),
      loadavg: readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(' '),
      ...stage,
      cpu_ms_per_job: Object.fromEntries(levels.map((l) => [l.runtime, l.cpu_ms_per_job])),
      leftovers: clusters.leftovers,
    };
    process.stdout.write(`${JSON.stringify(out, null, 2)}\n`);
  } finally {
    bundles.close();
  }
}

await main();
