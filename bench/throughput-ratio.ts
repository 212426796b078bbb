// bench/throughput-ratio.ts: issue 16's ratio stage alone (bench/ratio-stage.ts, as the full bench runs it on its main
// cluster) — sustained jobs/s with every layer on (crun cells, then runc cells) against bare `runc run` of the same
// command at the same parallelism, the bare rate measured right before and right after the cells' windows with the
// cluster up, so that a change in other load on the host shows as a gap between the two.
//   node dist/bench/throughput-ratio.js [parallel=3] [windowSeconds=20] [bareSeconds=windowSeconds]
import { readFileSync } from 'node:fs';
import { BareBundles } from './baselines.js';
import { Clusters } from './clusters.js';
import { measureRatioStage } from './ratio-stage.js';
import { measureThroughput } from './throughput.js';

async function main(): Promise<void> {
  const lanes = Number(process.argv[2] ?? 3);
  const ms = Number(process.argv[3] ?? 20) * 1000;
  const bareMs = Number(process.argv[4] ?? ms / 1000) * 1000;
  const log = (m: string) => process.stderr.write(`[ratio ${new Date().toISOString().slice(11, 19)}] ${m}\n`);
  const bundles = BareBundles.create();
  try {
    const clusters = new Clusters(log);
    const { stage, levels } = await clusters.with(
      [{ runtime: 'crun', class: 'small', warm: 4, max: 64 }, { runtime: 'runc', class: 'small', warm: 4, max: 64 }],
      (c) => measureRatioStage(c, bundles, lanes, bareMs, (['crun', 'runc'] as const).map((rt) => () => measureThroughput(c, lanes, ms, rt)), log),
    );
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
