// bench/store-warm.ts: warm-start latency with the store on SQLite and on PostgreSQL, measured the same way (issue 15:
// goal p50 on PostgreSQL ≤ 1.2 × SQLite's). `npm run bench` measures the same inside its run (store_postgres in
// latest.json, with measureStoresInterleaved); this runs only that comparison: `node dist/bench/store-warm.js [pairs]`
// (BENCH_SMOKE=1: a few samples) prints the JSON and writes bench/results/store-warm-latest.json.
//
// Method: both clusters are up at once, with the same pool, and samples alternate between them one at a time (ABBA: the
// store that went second goes first next), so load from anything else on the host, and its drift, falls on both alike:
// series taken one after the other, minutes apart, compare two different hosts' worth of load.
import { writeFileSync } from 'node:fs';
import { loadavg } from 'node:os';
import { join } from 'node:path';
import { REPO_ROOT, unusedPool, type TestCluster } from '../test/support/cluster.js';
import { Clusters, type PoolTarget } from './clusters.js';
import { measureStarts, type StartSeries } from './start-latency.js';
import { round, summarize, type Stats } from './stats.js';

/** StoreComparison is one interleaved run: each store's warm series and what their ratio is. */
export interface StoreComparison {
  sqlite: StartSeries;
  postgres: StartSeries;
  /** PostgreSQL p50 ÷ SQLite p50 (first byte): the figure. */
  ratio_p50: number;
  /** The median of pair-by-pair ratios (sample i on PostgreSQL ÷ sample i on SQLite, taken back to back): robust to drift. */
  ratio_paired_median: number;
}

/** measureStoresInterleaved runs `pairs` warm runc starts on each store in turns, on two clusters with `pool` up at once. */
export async function measureStoresInterleaved(clusters: Clusters, pool: PoolTarget[], pairs: number, warmup = 2): Promise<StoreComparison> {
  // Address pools of their own, chosen here: a cluster's addresses appear on the host only once it runs a job, so two
  // started back to back could pick the same one.
  const sqlitePool = unusedPool();
  let postgresPool = unusedPool();
  while (postgresPool === sqlitePool) postgresPool = unusedPool();
  return clusters.with(
    pool,
    (sqlite) => clusters.with(pool, (postgres) => interleave(sqlite, postgres, pairs, warmup), { network: { pool: postgresPool } }, 'postgres'),
    { network: { pool: sqlitePool } },
    'sqlite',
  );
}

async function interleave(sqlite: TestCluster, postgres: TestCluster, pairs: number, warmup: number): Promise<StoreComparison> {
  const series = { sqlite: empty(), postgres: empty() };
  const ratios: number[] = [];
  for (let i = 0; i < warmup + pairs; i++) {
    const order = i % 2 === 0 ? (['sqlite', 'postgres'] as const) : (['postgres', 'sqlite'] as const);
    const got: Partial<Record<'sqlite' | 'postgres', number>> = {};
    for (const store of order) {
      const one = await measureStarts(store === 'sqlite' ? sqlite : postgres, 'runc', 1, 'warm', 0);
      if (i < warmup) continue;
      const s = series[store];
      s.samples.push(...one.samples);
      s.mismatched += one.mismatched;
      s.wipeFailures.push(...one.wipeFailures);
      got[store] = one.samples[0]?.firstByteMs;
    }
    if (got.sqlite !== undefined && got.postgres !== undefined) ratios.push(got.postgres / got.sqlite);
  }
  const p50 = (s: StartSeries) => summarize(s.samples.map((x) => x.firstByteMs)).p50;
  return { ...series, ratio_p50: round(p50(series.postgres) / p50(series.sqlite)), ratio_paired_median: summarize(ratios).p50 };
}

function empty(): StartSeries {
  return { samples: [], mismatched: 0, wipeFailures: [] };
}

const log = (m: string) => process.stderr.write(`[store-warm ${new Date().toISOString().slice(11, 19)}] ${m}\n`);

async function main(): Promise<void> {
  const smoke = process.env.BENCH_SMOKE === '1';
  const pairs = Number(process.argv[2] ?? (smoke ? 5 : 50));
  const date = new Date().toISOString();
  const load0 = round(loadavg()[0] ?? Number.NaN);
  const clusters = new Clusters(log);
  log(`${pairs} pairs of warm runc starts, SQLite and PostgreSQL in turns`);
  const c = await measureStoresInterleaved(clusters, [{ runtime: 'runc', class: 'small', warm: 4 }], pairs);
  const stats = (s: StartSeries): Stats => summarize(s.samples.map((x) => x.firstByteMs));
  const out = {
    date,
    smoke,
    load_avg_1m: load0,
    load_avg_1m_at_end: round(loadavg()[0] ?? Number.NaN),
    warm_start_sqlite_ms: stats(c.sqlite),
    warm_start_postgres_ms: stats(c.postgres),
    ratio_p50_postgres_to_sqlite: c.ratio_p50,
    ratio_paired_median: c.ratio_paired_median,
    goal_ratio: 1.2,
    samples_found_cold: c.sqlite.mismatched + c.postgres.mismatched,
    wipe_failures: [...c.sqlite.wipeFailures, ...c.postgres.wipeFailures],
    method: 'both clusters up at once with the same pool (runc ×4); one warm runc start at a time, alternating stores (ABBA); first byte at the client (SDK runJob)',
    leftovers: clusters.leftovers,
  };
  const text = JSON.stringify(out, null, 2) + '\n';
  process.stdout.write(text);
  if (!smoke) writeFileSync(join(REPO_ROOT, 'bench/results/store-warm-latest.json'), text);
  if (clusters.leftovers.length > 0 || out.wipe_failures.length > 0) process.exitCode = 1;
}

// Run as a script only (run.ts imports measureStoresInterleaved).
if (process.argv[1]?.endsWith('store-warm.js')) {
  main().catch((e: Error) => {
    process.stderr.write(`bench store-warm: ${e.stack ?? e.message}\n`);
    process.exit(1);
  });
}
