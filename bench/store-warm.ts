// bench/store-warm.ts: warm-start latency with the store on SQLite and on PostgreSQL, back to back (issue 15: goal p50 on
// PostgreSQL ≤ 1.2 × SQLite's). `npm run bench` measures the same inside its run (store_postgres in latest.json); this runs
// only that comparison: `node dist/bench/store-warm.js` (BENCH_SMOKE=1: a few samples) prints the JSON and writes
// bench/results/store-warm-latest.json. Rounds alternate SQLite and PostgreSQL clusters so drift on the host hits both.
import { writeFileSync } from 'node:fs';
import { loadavg } from 'node:os';
import { join } from 'node:path';
import { REPO_ROOT } from '../test/support/cluster.js';
import { Clusters } from './clusters.js';
import { measureStarts } from './start-latency.js';
import { round, summarize } from './stats.js';

const smoke = process.env.BENCH_SMOKE === '1';
const perRound = smoke ? 5 : 25;
const rounds = smoke ? 1 : 2;
const log = (m: string) => process.stderr.write(`[store-warm ${new Date().toISOString().slice(11, 19)}] ${m}\n`);

async function main(): Promise<void> {
  const date = new Date().toISOString();
  const load0 = round(loadavg()[0] ?? Number.NaN);
  const clusters = new Clusters(log);
  const ms: Record<'sqlite' | 'postgres', number[]> = { sqlite: [], postgres: [] };
  for (let r = 0; r < rounds; r++) {
    for (const store of ['sqlite', 'postgres'] as const) {
      log(`round ${r + 1}: ${perRound} warm runc starts on ${store}`);
      const s = await clusters.with([{ runtime: 'runc', class: 'small', warm: 4 }], (c) => measureStarts(c, 'runc', perRound, 'warm'), {}, store);
      ms[store].push(...s.samples.map((x) => x.firstByteMs));
    }
  }
  const sqlite = summarize(ms.sqlite);
  const postgres = summarize(ms.postgres);
  const out = { date, smoke, load_avg_1m: load0, load_avg_1m_at_end: round(loadavg()[0] ?? Number.NaN), warm_start_sqlite_ms: sqlite, warm_start_postgres_ms: postgres, ratio_p50_postgres_to_sqlite: round(postgres.p50 / sqlite.p50), goal_ratio: 1.2, leftovers: clusters.leftovers };
  const text = JSON.stringify(out, null, 2) + '\n';
  process.stdout.write(text);
  if (!smoke) writeFileSync(join(REPO_ROOT, 'bench/results/store-warm-latest.json'), text);
  if (clusters.leftovers.length > 0) process.exitCode = 1;
}

main().catch((e: Error) => {
  process.stderr.write(`bench store-warm: ${e.stack ?? e.message}\n`);
  process.exit(1);
});
