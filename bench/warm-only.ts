// scratch: warm starts only, with stage breakdown
import { Clusters } from './clusters.js';
import { measureStarts } from './start-latency.js';
import { stageBreakdown } from './stages.js';
const n = Number(process.argv[2] ?? 40);
const rt = (process.argv[3] ?? 'runc') as 'runc' | 'runsc';
const clusters = new Clusters((m) => process.stderr.write(m + '\n'));
const s = await clusters.with([{ runtime: 'runc', class: 'small', warm: 4 }, { runtime: 'runsc', class: 'small', warm: rt === 'runsc' ? 2 : 0 }], (c) => measureStarts(c, rt, n, 'warm'));
const b = stageBreakdown(s.samples);
for (const [k, v] of Object.entries(b)) console.log(k.padEnd(40), v.p50, v.p95, v.min);
process.exit(0);
