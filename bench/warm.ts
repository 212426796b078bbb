// bench/warm.ts: `npm run bench:warm -- [samples] [runc|runsc]` — warm starts only, with the stage breakdown, in about
// a minute: the quick loop for work on the start path. Prints p50 / p95 / min per stage; writes nothing; not the benchmark.
import { Clusters } from './clusters.js';
import { measureStarts } from './start-latency.js';
import { stageBreakdown } from './stages.js';

const samples = Number(process.argv[2] ?? 40);
const runtime = process.argv[3] === 'runsc' ? 'runsc' : 'runc';
const clusters = new Clusters((msg) => process.stderr.write(`${msg}\n`));
const series = await clusters.with(
  [
    { runtime: 'runc', class: 'small', warm: 4 },
    { runtime: 'runsc', class: 'small', warm: runtime === 'runsc' ? 2 : 0 },
  ],
  (c) => measureStarts(c, runtime, samples, 'warm'),
);
process.stdout.write(`${runtime}: ${series.samples.length} warm samples (${series.mismatched} found the pool empty)\n${'stage'.padEnd(40)}    p50    p95    min\n`);
for (const [stage, s] of Object.entries(stageBreakdown(series.samples))) {
  process.stdout.write(`${stage.padEnd(40)} ${[s.p50, s.p95, s.min].map((x) => x.toFixed(2).padStart(6)).join(' ')}\n`);
}
process.exit(clusters.leftovers.length > 0 ? 1 : 0);
