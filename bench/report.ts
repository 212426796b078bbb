// bench/report.ts: the human-readable table printed at the end of a run.
import type { BenchResults } from './results.js';
import { STAGES } from './stages.js';
import type { Stats } from './stats.js';

/** formatReport renders the results as plain-text tables with ratios to the bare baselines. */
export function formatReport(r: BenchResults): string {
  const m = r.machine;
  const lines: string[] = [
    `Cleanroom benchmark ${r.date}${r.notes.smoke ? '  (SMOKE: a handful of samples, not a measurement)' : ''}`,
    `${m.cores} cores (${m.cpu_model}), ${m.memory_mib} MiB, Linux ${m.kernel}, ${m.runc}, ${m.runsc}, node ${m.node}; load ${m.load_avg_1m_at_start} → ${m.load_avg_1m_at_end}`,
    '',
    row(['latency (ms)', 'p50', 'p95', 'p99', 'min', 'max', 'n', '÷runc run', '÷runsc run', '÷fork+exec']),
  ];
  const base = { runc: r.baseline_runc_run_ms.p50, runsc: r.baseline_runsc_run_ms.p50, fork: r.baseline_fork_exec_ms.p50 };
  const latency = (label: string, s: Stats, ratios = true) =>
    row([label, ...[s.p50, s.p95, s.p99, s.min, s.max].map(f1), String(s.n), ...(ratios ? [base.runc, base.runsc, base.fork].map((b) => f2(s.p50 / b)) : ['', '', ''])]);
  lines.push(
    latency('warm start runc (API)', r.warm_start_ms),
    latency('warm start runsc (API)', r.warm_start_runsc_ms),
    latency('cold start runc (API)', r.cold_start_ms),
    latency('wipe (exit → storage gone)', r.wipe_ms),
    latency(`under load (${r.start_under_load_ms.clients} cl.), all`, r.start_under_load_ms.all),
    latency(`under load (${r.start_under_load_ms.clients} cl.), warm`, r.start_under_load_ms.warm_only),
    latency('bare runc run, 1st byte', r.baseline_runc_run_ms, false),
    latency('bare runsc run, 1st byte', r.baseline_runsc_run_ms, false),
    latency('bare crun run, 1st byte', r.baseline_crun_run_ms, false),
    latency('host fork+exec, 1st byte', r.baseline_fork_exec_ms, false),
    latency('fork+exec (Node spawn), 1st', r.baseline_fork_exec_node_spawn_ms, false),
    latency('bare runc run, exit', r.notes.baseline_exit_ms.runc_run, false),
    latency('bare runsc run, exit', r.notes.baseline_exit_ms.runsc_run, false),
    latency('host fork+exec, exit', r.notes.baseline_exit_ms.fork_exec, false),
    '',
    `ratio warm start / bare runc run (p50, both to first byte): ${f2(r.ratio_warm_to_runc_run)}`,
    `ratio warm start / host fork+exec (p50, first byte; goal ≤ 2): posix_spawn from the agent's addon ${f2(r.ratio_warm_to_fork_exec.posix_spawn)}, Node child_process.spawn ${f2(r.ratio_warm_to_fork_exec.node_spawn)}`,
    `warm samples that found no warm cell: runc ${r.notes.warm_runc_samples_found_cold}, runsc ${r.notes.warm_runsc_samples_found_cold}; cold samples that found a warm cell: ${r.notes.cold_samples_found_warm}`,
    '',
    'stage breakdown (ms, p50 / p95)   warm runc        warm runsc       cold runc       cold runsc',
  );
  const st = r.stages_ms;
  for (const k of new Set([...Object.keys(STAGES), ...Object.keys(st.warm_runc), ...Object.keys(st.warm_runsc), ...Object.keys(st.cold_runc), ...Object.keys(st.cold_runsc)])) {
    const cell = (s: Record<string, Stats>) => (s[k] ? `${f1(s[k].p50)} / ${f1(s[k].p95)}` : '-').padStart(16);
    lines.push(`  ${k.padEnd(38)}${cell(st.warm_runc)} ${cell(st.warm_runsc)} ${cell(st.cold_runc)} ${cell(st.cold_runsc)}`);
  }
  lines.push('', row(['throughput', 'jobs/s', 'done', 'failed', 'cold', 'end ms', 'prep ms', 'wipe ms', 'api+run', 'bottleneck']));
  for (const t of r.throughput_jobs_per_s.levels) {
    const s = t.mean_stage_ms;
    lines.push(row([`${t.runtime}, ${t.clients} client(s), ${t.duration_s} s`, f2(t.jobs_per_s), String(t.completed), String(t.failed), `${Math.round(t.cold_fraction * 100)}%`, f1(s.client_end), f1(s.agent_prepare), f1(s.wipe), f1(s.api_run_relay), t.bottleneck_stage]));
    const c = t.cpu_cores;
    lines.push(`    cores used: host ${c.host}, control ${c.control}, agent ${c.agent}, runtime CLIs ${c.agent_children}, cells ${c.cells}, bench clients ${c.bench_clients}`);
    const j = t.cpu_ms_per_job;
    lines.push(`    CPU per job (ms): host ${f1(j.host)}, control ${f1(j.control)}, agent ${f1(j.agent)}, runtime and tools ${f1(j.agent_children)}, cells ${f1(j.cells)}`);
  }
  const rate = (name: string, b: { lanes: number; runs_per_s: number; host_cpu_ms_per_run: number; failed: number } | null) =>
    b ? `  bare ${name}: ${f2(b.runs_per_s)} runs/s with ${b.lanes} loops, ${f1(b.host_cpu_ms_per_run)} ms host CPU per run${b.failed ? `, ${b.failed} failed` : ''}` : `  bare ${name}: not measured`;
  const br = r.baseline_rate_per_s;
  lines.push(rate('runc run', br.runc), rate('crun run', br.crun), rate('podman run --rm', br.podman));
  const q = r.ratio_throughput_to_bare_runc_rate;
  const b = q.stage.bare_runc;
  lines.push(`  bare runc run beside the cells' windows: ${f2(b.before.runs_per_s)} runs/s before, ${f2(b.after.runs_per_s)} after (mean ${f2(b.mean_runs_per_s)}); own CPU ${f1(b.mean_own_cpu_ms_per_run)} ms per run; the cluster's own CPU meanwhile ${f1(b.before.cluster_cpu_ms_per_s)} / ${f1(b.after.cluster_cpu_ms_per_s)} ms/s`);
  lines.push(`  Cleanroom ÷ that bare runc rate at ${q.lanes} in parallel: runc cells ${f2(q.runc_cells)}, crun cells ${f2(q.crun_cells)} (goal ≥ 1); ÷ the rate at the bench's start: runc ${f2(q.at_bench_start.runc_cells)}, crun ${f2(q.at_bench_start.crun_cells)}`);
  for (const c of q.stage.cells) lines.push(`    ${c.runtime} cells: own CPU ${f1(c.own_cpu_ms_per_job)} ms per job; bare run's own CPU ÷ a job's ${f2(c.cpu_ratio_bare_runc_to_job)}`);
  lines.push(`  peak ${f2(r.throughput_jobs_per_s.peak)} jobs/s; bottleneck: ${r.throughput_jobs_per_s.bottleneck_stage}`, '');
  const u = r.start_under_load;
  lines.push(`under load (open loop, demand-sized pool): quiet p50 ${f1(u.quiet_p50_ms)} / p99 ${f1(u.quiet_p99_ms)} ms`);
  for (const l of u.levels) lines.push(`  ${Math.round(l.share * 100)} % of peak (${f2(l.offered_jobs_per_s)} jobs/s): p50 ${f1(l.first_byte_ms.p50)} / p99 ${f1(l.first_byte_ms.p99)} ms, ${Math.round(l.warm_fraction * 100)} % warm, ${l.completed} done, ${l.failed} failed`);
  lines.push(`  ratios at 50 %: p50 ×${f2(u.ratio_p50_at_50pct_to_quiet)} (goal ≤ 1.5), p99 ×${f2(u.ratio_p99_at_50pct_to_quiet)} (goal ≤ 3)`);
  lines.push(`  burst of ${u.burst.jobs} after ${u.burst.idle_s} s idle (${u.burst.pool_warm_before} warm): ${Math.round(u.burst.warm_fraction * 100)} % warm (goal ≥ 90 %), p50 ${f1(u.burst.first_byte_ms.p50)} / p99 ${f1(u.burst.first_byte_ms.p99)} ms, ${u.burst.failed} failed`, '');
  const im = r.images;
  lines.push(
    `images: warm start on the base image p50 ${f1(im.warm_start_ms.p50)} ms (÷ host-root warm ${f2(im.ratio_warm_to_host_root_warm)}, goal ≤ 1.10); cold p50 ${f1(im.cold_start_ms.p50)} ms (÷ bare runc run ${f2(im.ratio_cold_to_bare_runc_run)}, goal ≤ 1.5)`,
    `  import of ${f1(im.imports.image_blob_bytes / 1e6)} MB: API ${f1(im.imports.mb_per_s.api)} MB/s, skopeo copy ${f1(im.imports.mb_per_s.skopeo)} MB/s (${f2(im.imports.ratio_api_to_skopeo)}×); two images sharing a base: ${im.imports.shared_base.sumOfImages} B of images, ${im.imports.shared_base.storedBytes} B stored`,
    '',
  );
  lines.push(row(['density (runc)', 'up+fill s', 'ΔMemAvail', 'cgroups', 'warm p50', 'warm p95', 'n']));
  for (const d of r.idle_cell_memory_mib.levels) {
    lines.push(row([`${d.cells} idle cells`, f1(d.up_and_fill_s), `${f1(d.mem_available_delta_mib)} MiB`, `${f1(d.cgroup_usage_mib)} MiB`, f1(d.warm_start_ms.p50), f1(d.warm_start_ms.p95), String(d.warm_start_ms.n)]));
  }
  lines.push(`  memory per idle warm cell (slope of ΔMemAvailable over cells): ${f2(r.idle_cell_memory_mib.per_cell)} MiB`);
  const sb = r.sandboxes;
  lines.push(
    '',
    latency('sandbox create → ready', sb.create_ready_ms, false),
    latency('sandbox exec echo, round trip', sb.exec_echo_roundtrip_ms, false),
    latency('sandbox 1 MiB write + read', sb.file_1mib_write_read_ms, false),
    latency(`${sb.concurrent.sandboxes} sandboxes × ${sb.concurrent.execs_each} execs`, sb.concurrent.exec_roundtrip_ms, false),
    `  create / warm job start (p50): ${f2(sb.ratio_create_to_warm_start_p50)} (goal ≤ 1.2); exec / host fork+exec to exit (p50): ${f2(sb.ratio_exec_to_fork_exec_p50)} (goal ≤ 1.5); concurrent failures ${sb.concurrent.failures} in ${f1(sb.concurrent.wall_s)} s; memory per idle sandbox ${sb.idle_sandbox_memory_mib === null ? '-' : `${f2(sb.idle_sandbox_memory_mib)} MiB`} (goal ≤ 8)`,
  );
  const pgs = r.store_postgres;
  lines.push('', `PostgreSQL store: warm start p50 ${f1(pgs.warm_start_ms.p50)} / p99 ${f1(pgs.warm_start_ms.p99)} ms, ÷ SQLite's in turns (p50 ${f1(pgs.sqlite_warm_start_ms.p50)} ms) ${f2(pgs.ratio_warm_p50_to_sqlite)} (goal ≤ ${pgs.goal_ratio_warm_p50_to_sqlite}); median pair ratio ${f2(pgs.ratio_paired_median)}`);
  for (const fl of [r.fleet, pgs.fleet, r.fleet_replicas]) {
    lines.push(
      `fleet (${fl.agents} simulated agents × ${fl.capacity_per_agent}, ${fl.replicas} replica(s), ${fl.store}, ${fl.clients} clients): ${f1(fl.jobs_per_s)} jobs/s create → placed → ended (goal ≥ ${fl.goal_jobs_per_s}); ${fl.succeeded}/${fl.jobs} succeeded; control plane ${f2(fl.control_cpu_ms_per_job)} CPU ms/job (= ${f1(fl.control_cpu_bound_jobs_per_s)} jobs/s on a core of its own), clients + fleet ${f2(fl.client_and_fleet_cpu_ms_per_job)}`,
      `  placement (create → assign at the agent): loaded p50 ${f1(fl.placement_ms.p50)} / p99 ${f1(fl.placement_ms.p99)} ms, quiet p50 ${f1(fl.placement_quiet_ms.p50)} / p99 ${f1(fl.placement_quiet_ms.p99)} ms; duplicates ${fl.duplicates}, over capacity ${fl.over_capacity}`,
    );
    const b = fl.batched;
    if (b) {
      lines.push(
        `  batch creates (${b.batch_size} jobs each, ${b.batch_clients} in flight; not the headline): ${f1(b.jobs_per_s)} jobs/s; ${b.succeeded}/${b.jobs} succeeded; control plane ${f2(b.control_cpu_ms_per_job)} CPU ms/job, store ${b.store_cpu_ms_per_job === null ? '-' : f2(b.store_cpu_ms_per_job)}, clients + fleet ${f2(b.client_and_fleet_cpu_ms_per_job)}; placement p50 ${f1(b.placement_ms.p50)} / p99 ${f1(b.placement_ms.p99)} ms; duplicates ${b.duplicates}, over capacity ${b.over_capacity}`,
      );
    }
  }
  const n = r.noisy_neighbour;
  lines.push('', `noisy neighbour: calm warm start quiet p50 ${f1(n.quiet_ms.p50)} / p99 ${f1(n.quiet_ms.p99)} ms; during the flood p50 ${f1(n.flooded_ms.p50)} / p99 ${f1(n.flooded_ms.p99)} ms (p99 ×${f2(n.ratio_p99)}, goal ≤ 2); calm failures ${n.calm_failures.length}; flood ${n.flood.requests} requests ${JSON.stringify(n.flood.answers)}`);
  lines.push('', `left behind by stopped clusters: ${r.notes.leftovers.length === 0 ? 'nothing' : r.notes.leftovers.join('; ')}`);
  lines.push(`wipe receipts that never came: ${r.notes.wipe_failures.length === 0 ? 'none' : r.notes.wipe_failures.join('; ')}`);
  return lines.join('\n');
}

function row(cells: string[]): string {
  return cells.map((c, i) => (i === 0 ? c.padEnd(28) : c.padStart(i === cells.length - 1 ? 11 : 9))).join(' ');
}

function f1(x: number): string {
  return Number.isFinite(x) ? x.toFixed(1) : '-';
}

function f2(x: number): string {
  return Number.isFinite(x) ? x.toFixed(2) : '-';
}
