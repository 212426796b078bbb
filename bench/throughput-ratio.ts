// bench/throughput-ratio.ts: issue 16's ratio alone, in one run — sustained jobs/s with every layer on (crun cells, then
// runc cells) against bare `runc run` of the same command at the same parallelism, the bare rate measured before and
// after the cluster's windows so that a change in other load on the host shows as a gap between the two.
//   node dist/bench/throughput-ratio.js [parallel=3] [windowSeconds=20]
import { readFileSync } from 'node:fs';
import { BareBundles, bareRate } from './baselines.js';
import { Clusters } from './clusters.js';
import { measureThroughput } from './throughput.js';

async function main(): Promise<void> {
  const lanes = Number(process.argv[2] ?? 3);
  const ms = Number(process.argv[3] ?? 20) * 1000;
  const log = (m: string) => process.stderr.write(`[ratio ${new Date().toISOString().slice(11, 19)}] ${m}\n`);
  const bundles = BareBundles.create();
  // What the bare runs themselves cost, robust to other load: CPU of the runc processes this process reaped (each
  // `runc run` reaps its container's init, so its children's time is inside).
  const reapedSeconds = () => {
    const f = readFileSync('/proc/self/stat', 'utf8').split(') ')[1]!.split(' ').map(Number);
    return ((f[13] ?? 0) + (f[14] ?? 0)) / 100;
  };
  const bare = async () => {
    for (let i = 0; i < 3; i++) await bundles.run('runc'); // warm-up
    const c0 = reapedSeconds();
    const rate = await bareRate(lanes, ms, (lane) => bundles.run('runc', lane));
    return { ...rate, own_cpu_ms_per_run: Math.round(((reapedSeconds() - c0) * 1000 * 10) / Math.max(1, rate.runs)) / 10 };
  };
  try {
    log(`bare runc run, ${lanes} loops`);
    const before = await bare();
    const clusters = new Clusters(log);
    const levels = await clusters.with(
      [{ runtime: 'crun', class: 'small', warm: 4, max: 64 }, { runtime: 'runc', class: 'small', warm: 4, max: 64 }],
      async (c) => [await measureThroughput(c, lanes, ms, 'crun'), await measureThroughput(c, lanes, ms, 'runc')],
    );
    log(`bare runc run again, ${lanes} loops`);
    const after = await bare();
    const bareMean = (before.runs_per_s + after.runs_per_s) / 2;
    const round = (x: number) => Math.round(x * 1000) / 1000;
    const out = {
      date: new Date().toISOString(),
      loadavg: readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(' '),
      parallel: lanes,
      bare_runc: { before, after },
      cells: levels.map((l) => {
        const c = l.cpu_ms_per_job;
        // The cluster's own processes (not the host total, which other load inflates).
        const own = round(c.control + c.agent + c.agent_children + c.cells);
        return { runtime: l.runtime, jobs_per_s: l.jobs_per_s, failed: l.failed, cold_fraction: l.cold_fraction, cpu_ms_per_job: c, own_cpu_ms_per_job: own };
      }),
      // Own CPU of a bare runc run ÷ own CPU of a job: the throughput ratio a CPU-bound host would give.
      cpu_ratio_bare_runc_to_job: Object.fromEntries(levels.map((l) => {
        const c = l.cpu_ms_per_job;
        return [l.runtime, round(((before.own_cpu_ms_per_run + after.own_cpu_ms_per_run) / 2) / (c.control + c.agent + c.agent_children + c.cells))];
      })),
      ratio_to_bare_runc: Object.fromEntries(levels.map((l) => [l.runtime, round(l.jobs_per_s / bareMean)])),
      leftovers: clusters.leftovers,
    };
    process.stdout.write(`${JSON.stringify(out, null, 2)}\n`);
  } finally {
    bundles.close();
  }
}

await main();
