// bench/sandbox.ts: `node dist/bench/sandbox.js [samples] [concurrent]` — sandboxes against jobs and the host, in one run:
// create → ready (warm pool) beside a warm job's start (create → first byte); an `echo` exec round trip beside a host
// fork+exec; a 1 MiB file write then read; `concurrent` sandboxes each running 10 execs at once (the issue asks 100:
// pass 100 on an otherwise idle host); host memory per idle sandbox (MemAvailable before and after, so only meaningful
// on an otherwise idle host). Writes bench/results/sandbox.json.
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { cpus } from 'node:os';
import { join } from 'node:path';
import { Sandbox } from '../src/sdk/sandbox.js';
import type { TestCluster } from '../test/support/cluster.js';
import { REPO_ROOT } from '../test/support/cluster.js';
import { forkExec } from './baselines.js';
import { Clusters } from './clusters.js';
import { measureStarts } from './start-latency.js';
import { round, summarize } from './stats.js';

const samples = Number(process.argv[2] ?? 30);
const concurrent = Number(process.argv[3] ?? 20);
const log = (msg: string) => process.stderr.write(`${msg}\n`);
const clusters = new Clusters(log);
const memAvailableMiB = () => Number(/MemAvailable:\s+(\d+)/.exec(readFileSync('/proc/meminfo', 'utf8'))?.[1] ?? 0) / 1024;

const results = await clusters.with(
  [{ runtime: 'runc', class: 'small', warm: 4 }, { runtime: 'runsc', class: 'small', warm: 0 }],
  async (c: TestCluster) => {
    const client = c.client;
    log('warm job starts');
    const jobs = await measureStarts(c, 'runc', samples, 'warm');
    log('sandbox create → ready');
    const creates: number[] = [];
    for (let i = 0; i < samples; i++) {
      await c.waitWarm(120_000);
      const t0 = performance.now();
      const sb = await Sandbox.create({}, client);
      creates.push(performance.now() - t0);
      await sb.kill();
    }
    log('exec round trips and host fork+exec');
    await c.waitWarm(120_000);
    const sb = await Sandbox.create({}, client);
    const execs: number[] = [];
    const forks: number[] = [];
    for (let i = 0; i < samples * 3; i++) {
      const t0 = performance.now();
      const r = await sb.exec(['/bin/echo', 'hi']);
      if (r.stdout !== 'hi\n') throw new Error(`echo gave ${JSON.stringify(r.stdout)}`);
      execs.push(performance.now() - t0);
      forks.push((await forkExec()).exitMs);
    }
    log('1 MiB write then read');
    const mib = Buffer.alloc(1024 * 1024, 7);
    const files: number[] = [];
    for (let i = 0; i < samples; i++) {
      const t0 = performance.now();
      await sb.files.write('/work/bench.bin', mib);
      const back = await sb.files.read('/work/bench.bin');
      if (!back.equals(mib)) throw new Error('the file came back different');
      files.push(performance.now() - t0);
    }
    await sb.kill();
    log(`${concurrent} concurrent sandboxes × 10 execs`);
    const memBefore = memAvailableMiB();
    const boxes = await Promise.all(Array.from({ length: concurrent }, () => Sandbox.create({}, client)));
    await new Promise((r) => setTimeout(r, 2000));
    const memIdle = memAvailableMiB();
    const rounds: number[] = [];
    let failures = 0;
    await Promise.all(
      boxes.map(async (b) => {
        for (let i = 0; i < 10; i++) {
          const t0 = performance.now();
          const r = await b.exec(['/bin/echo', 'hi']).catch(() => null);
          if (r?.stdout === 'hi\n') rounds.push(performance.now() - t0);
          else failures++;
        }
      }),
    );
    await Promise.all(boxes.map((b) => b.kill()));
    const exec = summarize(execs);
    const fork = summarize(forks);
    const create = summarize(creates);
    const job = summarize(jobs.samples.map((s) => s.firstByteMs));
    return {
      sandbox_create_ready_ms: create,
      warm_job_start_ms: job,
      create_vs_job_p50: round(create.p50 / job.p50),
      exec_echo_roundtrip_ms: exec,
      host_fork_exec_ms: fork,
      exec_vs_fork_p50: round(exec.p50 / fork.p50),
      file_1mib_write_read_ms: summarize(files),
      concurrent: { sandboxes: concurrent, execs_each: 10, failures, roundtrip_ms: summarize(rounds) },
      idle_sandbox_host_memory_mib: round((memBefore - memIdle) / concurrent),
    };
  },
  { quotas: { maxRunningJobs: Math.max(32, concurrent + 4) }, agent: { maxRunningJobs: Math.max(64, concurrent + 4) } },
);
const out = { at: new Date().toISOString(), cores: cpus().length, load1: readFileSync('/proc/loadavg', 'utf8').split(' ')[0], samples, ...results };
mkdirSync(join(REPO_ROOT, 'bench/results'), { recursive: true });
writeFileSync(join(REPO_ROOT, 'bench/results/sandbox.json'), JSON.stringify(out, null, 2) + '\n');
process.stdout.write(JSON.stringify(out, null, 2) + '\n');
process.exit(clusters.leftovers.length > 0 ? 1 : 0);
