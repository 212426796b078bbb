// bench/volume.ts measures prepare and wipe of per-cell encrypted volumes (median and p95 per phase and step).
// Usage: node dist/bench/volume.js [iterations=50] [sizeMiB=256]   (as root; writes bench/results/volume.json)
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describeMachine } from './machine.js';
import { summarize } from './stats.js';
import { REPO_ROOT } from '../test/support/cluster.js';
import { prepareVolume, wipeVolume, type Step } from '../src/agent/storage/volume.js';
import { reconcileVolumes } from '../src/agent/storage/reconcile.js';

// Returns the q-quantile (nearest rank) of the samples.
function quantile(samples: readonly number[], q: number): number {
  const sorted = [...samples].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.ceil(q * sorted.length) - 1)] ?? Number.NaN;
}

// Adds each step's duration to its series (steps repeated in one run are summed).
function collect(series: Map<string, number[]>, steps: readonly Step[]): void {
  const perRun = new Map<string, number>();
  for (const s of steps) perRun.set(s.step, (perRun.get(s.step) ?? 0) + s.ms);
  for (const [step, ms] of perRun) series.set(step, [...(series.get(step) ?? []), ms]);
}

// Prints one row: name, median, p95, max.
function row(name: string, samples: readonly number[]): void {
  const f = (n: number) => n.toFixed(2).padStart(8);
  console.log(`${name.padEnd(24)}${f(quantile(samples, 0.5))}${f(quantile(samples, 0.95))}${f(Math.max(...samples))}`);
}

const iterations = Number(process.argv[2] ?? 50);
const sizeBytes = Number(process.argv[3] ?? 256) * 1024 * 1024;
const root = mkdtempSync('/var/tmp/cleanroom-bench-volume-');
const prepareMs: number[] = [];
const wipeMs: number[] = [];
const prepareSteps = new Map<string, number[]>();
const wipeSteps = new Map<string, number[]>();
try {
  for (let i = 0; i < iterations + 3; i++) {
    const t0 = performance.now();
    const volume = await prepareVolume({ root, cellId: `bench-${i}`, uid: 100_000, gid: 100_000, sizeBytes });
    const t1 = performance.now();
    const receipt = await wipeVolume(volume);
    const t2 = performance.now();
    if (receipt.keyStateAfterRemoval !== 'absent') throw new Error(`key not absent after wipe of ${volume.id}`);
    if (i < 3) continue; // warm-up
    prepareMs.push(t1 - t0);
    wipeMs.push(t2 - t1);
    collect(prepareSteps, volume.steps);
    collect(wipeSteps, receipt.steps);
  }
  console.log(`${iterations} volumes of ${sizeBytes / 1024 / 1024} MiB, sequential, ms`);
  console.log(`${'phase / step'.padEnd(24)}${'median'.padStart(8)}${'p95'.padStart(8)}${'max'.padStart(8)}`);
  row('prepareVolume', prepareMs);
  for (const [step, samples] of prepareSteps) row(`  ${step}`, samples);
  row('wipeVolume', wipeMs);
  for (const [step, samples] of wipeSteps) row(`  ${step}`, samples);
  const steps = (m: Map<string, number[]>) => Object.fromEntries([...m].map(([k, v]) => [k, summarize(v)]));
  const out = { date: new Date().toISOString(), machine: describeMachine(), size_mib: sizeBytes / 1024 / 1024, prepare_ms: summarize(prepareMs), wipe_ms: summarize(wipeMs), prepare_steps_ms: steps(prepareSteps), wipe_steps_ms: steps(wipeSteps) };
  writeFileSync(join(REPO_ROOT, 'bench/results/volume.json'), JSON.stringify(out, null, 2) + '\n');
} finally {
  await reconcileVolumes(root, []);
  rmSync(root, { recursive: true, force: true });
}
