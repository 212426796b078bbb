// Smoke test of the benchmark (root): runs `bench/run` with a handful of samples into a temp directory and checks that
// every figure of issue 6 is in the JSON with samples behind it. It asserts nothing about speed.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { REPO_ROOT } from '../support/cluster.js';
import { LATENCY_FIELDS, type BenchResults } from '../../bench/results.js';

const run = promisify(execFile);

test('the benchmark runs end to end in smoke mode and reports every field', { timeout: 360_000 }, async (t) => {
  const out = mkdtempSync('/var/tmp/cleanroom-bench-smoke-test-');
  t.after(() => rmSync(out, { recursive: true, force: true }));
  await run(process.execPath, [join(REPO_ROOT, 'dist/bench/run.js')], { env: { ...process.env, BENCH_SMOKE: '1', BENCH_OUT: out }, timeout: 350_000, maxBuffer: 16 * 1024 * 1024 });
  const r = JSON.parse(readFileSync(join(out, 'latest.json'), 'utf8')) as BenchResults;
  for (const f of LATENCY_FIELDS) {
    const s = r[f];
    assert.equal(typeof s, 'object', `${f} is missing`);
    assert.ok(s.n > 0, `${f} has samples: ${JSON.stringify(s)}`);
    for (const k of ['p50', 'p95', 'p99', 'min', 'max'] as const) assert.ok(Number.isFinite(s[k]) && s[k] > 0, `${f}.${k} = ${s[k]}`);
  }
  assert.ok(Number.isFinite(r.ratio_warm_to_runc_run), `ratio_warm_to_runc_run = ${r.ratio_warm_to_runc_run}`);
  assert.ok(r.ratio_warm_to_runc_run > 0, `ratio_warm_to_runc_run = ${r.ratio_warm_to_runc_run}`);
  assert.ok(r.throughput_jobs_per_s.peak > 0, `peak throughput ${r.throughput_jobs_per_s.peak}`);
  assert.notEqual(r.throughput_jobs_per_s.levels.length, 0, 'no throughput levels');
  assert.ok(r.throughput_jobs_per_s.levels.every((l) => l.failed === 0 && l.completed > 0));
  // Start latency under load beside the quiet figure, and how every baseline was launched.
  assert.ok(r.start_under_load_ms.all.n > 0 && r.start_under_load_ms.all.p50 > 0, `start_under_load_ms: ${JSON.stringify(r.start_under_load_ms)}`);
  assert.equal(r.start_under_load_ms.clients, r.throughput_jobs_per_s.levels.find((l) => l.jobs_per_s === r.throughput_jobs_per_s.peak)?.clients);
  assert.deepEqual(Object.keys(r.baseline_launch).sort(), ['crun', 'fork_exec', 'fork_exec_node_spawn', 'podman', 'runc', 'runsc', 'spawn']);
  // Warm start against a host fork+exec by both definitions (the agent's posix_spawn; Node's child_process.spawn).
  assert.ok(r.ratio_warm_to_fork_exec.posix_spawn > 0 && r.ratio_warm_to_fork_exec.node_spawn > 0, JSON.stringify(r.ratio_warm_to_fork_exec));
  assert.match(r.baseline_launch.runc!, /sealed/);
  // Bare runtimes run in parallel beside Cleanroom's throughput with crun cells, and CPU per job by class of process.
  for (const rt of ['runc', 'crun'] as const) assert.ok((r.baseline_rate_per_s[rt]?.runs ?? 0) > 0, `baseline_rate_per_s.${rt}: ${JSON.stringify(r.baseline_rate_per_s[rt])}`);
  assert.ok(r.baseline_rate_per_s.podman === null || r.baseline_rate_per_s.podman.runs > 0, `podman: ${JSON.stringify(r.baseline_rate_per_s.podman)}`);
  assert.ok(r.throughput_jobs_per_s.levels.some((l) => l.runtime === 'crun' && l.completed > 0), 'no crun throughput level');
  assert.ok(Number.isFinite(r.ratio_throughput_to_bare_runc_rate.crun_cells));
  // The ratio stage: bare runc before and after the cells' windows (with the cluster's own CPU meanwhile), both runtimes' cells.
  const stage = r.ratio_throughput_to_bare_runc_rate.stage;
  for (const b of [stage.bare_runc.before, stage.bare_runc.after]) assert.ok(b.runs > 0 && Number.isFinite(b.cluster_cpu_ms_per_s) && b.cluster_cpu_ms_per_s >= 0, JSON.stringify(b));
  assert.deepEqual(stage.cells.map((c) => c.runtime).sort(), ['crun', 'runc']);
  assert.ok(stage.cells.every((c) => c.ratio_to_bare_runc > 0 && c.own_cpu_ms_per_job > 0), JSON.stringify(stage.cells));
  // Start latency under open-loop load and a burst on a demand-sized pool, beside the quiet figure.
  assert.equal(r.start_under_load.levels.length, 2);
  for (const l of r.start_under_load.levels) assert.ok(l.completed > 0 && l.failed === 0, JSON.stringify(l));
  assert.ok(r.start_under_load.burst.first_byte_ms.n > 0 && r.start_under_load.burst.failed === 0, JSON.stringify(r.start_under_load.burst));
  // Cells on the default image beside the host root and the bare runtime; imports beside skopeo; a shared base stored once.
  assert.ok(r.images.warm_start_ms.n > 0 && r.images.cold_start_ms.n > 0, JSON.stringify(r.images));
  assert.ok(Number.isFinite(r.images.ratio_warm_to_host_root_warm) && Number.isFinite(r.images.ratio_cold_to_bare_runc_run));
  assert.ok(r.images.imports.mb_per_s.api > 0 && r.images.imports.mb_per_s.skopeo > 0);
  assert.ok((r.images.imports.shared_base.storedBytes ?? 0) < (r.images.imports.shared_base.sumOfImages ?? 0), JSON.stringify(r.images.imports.shared_base));
  for (const l of r.throughput_jobs_per_s.levels) assert.ok(l.cpu_ms_per_job.host > 0 && l.cpu_ms_per_job.agent > 0, JSON.stringify(l.cpu_ms_per_job));
  assert.match(r.baseline_launch.runsc!, /--network=sandbox/);
  assert.deepEqual(r.noisy_neighbour.calm_failures, []);
  for (const s of [r.sandboxes.create_ready_ms, r.sandboxes.exec_echo_roundtrip_ms, r.sandboxes.file_1mib_write_read_ms, r.sandboxes.concurrent.exec_roundtrip_ms]) assert.ok(s.n > 0 && s.p50 > 0, `sandboxes: ${JSON.stringify(r.sandboxes)}`);
  assert.equal(r.sandboxes.concurrent.failures, 0, JSON.stringify(r.sandboxes.concurrent.errors));
  assert.ok(r.sandboxes.ratio_create_to_warm_start_p50 > 0 && r.sandboxes.ratio_exec_to_fork_exec_p50 > 0);
  assert.ok(r.noisy_neighbour.quiet_ms.n > 0 && r.noisy_neighbour.flooded_ms.n > 0, JSON.stringify(r.noisy_neighbour));
  assert.ok(r.noisy_neighbour.flood.requests > 0);
  assert.ok(Number.isFinite(r.idle_cell_memory_mib.per_cell));
  assert.ok(r.idle_cell_memory_mib.levels.some((l) => l.cells > 0 && l.warm_start_ms.n > 0));
  for (const series of ['warm_runc', 'warm_runsc', 'cold_runc', 'cold_runsc'] as const) {
    for (const stage of ['client_first_byte_ms', 'control_dispatch_ms', 'agent_take_ms', 'agent_assign_ms', 'wipe_ms']) {
      assert.ok((r.stages_ms[series][stage]?.n ?? 0) > 0, `stages_ms.${series}.${stage}`);
    }
  }
  // Control-plane capacity with a simulated fleet: every job placed once, within capacity, and succeeded.
  assert.ok(r.fleet.jobs > 0 && r.fleet.succeeded === r.fleet.jobs && r.fleet.jobs_per_s > 0, JSON.stringify(r.fleet));
  assert.equal(r.fleet.duplicates + r.fleet.over_capacity, 0);
  assert.ok(r.fleet.placement_ms.n > 0 && r.fleet.placement_quiet_ms.n > 0 && r.fleet.control_cpu_ms_per_job > 0, JSON.stringify(r.fleet));
  // The store on PostgreSQL: warm starts beside SQLite's, and the fleet stage on it.
  assert.ok(r.store_postgres.warm_start_ms.n > 0 && Number.isFinite(r.store_postgres.ratio_warm_p50_to_sqlite), JSON.stringify(r.store_postgres));
  assert.ok(r.store_postgres.sqlite_warm_start_ms.n > 0 && Number.isFinite(r.store_postgres.ratio_paired_median), 'the SQLite series taken in turns');
  assert.ok(r.store_postgres.fleet.store === 'postgres' && r.store_postgres.fleet.succeeded === r.store_postgres.fleet.jobs && r.store_postgres.fleet.jobs > 0);
  assert.ok(r.fleet_replicas.replicas === 2 && r.fleet_replicas.succeeded === r.fleet_replicas.jobs && r.fleet_replicas.jobs > 0, JSON.stringify(r.fleet_replicas));
  for (const k of ['cores', 'memory_mib', 'kernel', 'runc', 'runsc', 'node'] as const) assert.ok(r.machine[k], `machine.${k}`);
  assert.ok(!Number.isNaN(Date.parse(r.date)));
  assert.equal(r.notes.smoke, true);
  assert.match(readFileSync(join(out, 'latest.svg'), 'utf8'), /^<svg [^]*<\/svg>\n$/);
});
