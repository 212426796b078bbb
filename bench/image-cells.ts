// bench/image-cells.ts compares runc cells on the default image with cells on the host root, in one run, through the
// agent's own cell code (no control plane): prepare (the cold path's cell part) and assign → first output byte at the
// agent (the warm path's cell part), median and p95. Usage: node dist/bench/image-cells.js [cells per kind=20]
// (as root, after build-base-image; writes bench/results/image-cells.json).
import { execFileSync } from 'node:child_process';
import { cpSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describeMachine } from './machine.js';
import { round, summarize } from './stats.js';
import { AgentCells } from '../test/support/agent-cells.js';
import { REPO_ROOT } from '../test/support/cluster.js';
import { manifestFromBlobs } from '../src/agent/images/oci-manifest.js';

const n = Number(process.argv[2] ?? 20);
const cells = await AgentCells.start();
try {
  const layout = join(cells.dir, 'base');
  execFileSync('node', [join(REPO_ROOT, 'dist/scripts/build-base-image.js'), layout]);
  mkdirSync(join(cells.dir, 'images/blobs'), { recursive: true });
  cpSync(join(layout, 'blobs/sha256'), join(cells.dir, 'images/blobs/sha256'), { recursive: true });
  const digest = (JSON.parse(readFileSync(join(layout, 'index.json'), 'utf8')) as { manifests: Array<{ digest: string }> }).manifests[0]!.digest;
  const image = await cells.images.prepare(await manifestFromBlobs(cells.images.blobsDirectory, digest), 1 << 30);
  const series = { image: { prepare: [] as number[], root: [] as number[], first_output: [] as number[] }, host: { prepare: [] as number[], root: [] as number[], first_output: [] as number[] } };
  for (let i = 0; i < n + 2; i++) {
    // Alternating, so that both kinds see the same moments of a shared host.
    for (const kind of ['image', 'host'] as const) {
      const cell = await cells.prepare('runc', kind === 'image' ? image : null);
      const run = await cells.run(cell, { command: ['/bin/sh', '-c', 'echo x'] });
      if (run.end.reason !== 'succeeded') throw new Error(`${kind} cell: ${JSON.stringify(run.end)} ${run.stderr}`);
      if (i < 2) continue; // warm-up
      series[kind].prepare.push(cell.timings.prepare_ms ?? NaN);
      series[kind].root.push(cell.timings.prepare_root_ms ?? 0);
      series[kind].first_output.push(cell.timings.first_output_ms ?? NaN);
    }
  }
  const s = (k: 'image' | 'host') => ({ prepare_ms: summarize(series[k].prepare), root_mount_ms: summarize(series[k].root), first_output_ms: summarize(series[k].first_output) });
  const out = { date: new Date().toISOString(), machine: describeMachine(), load_avg_1m: Number(readFileSync('/proc/loadavg', 'utf8').split(' ')[0]), cells_per_kind: n, image: s('image'), host: s('host') };
  const ratio = { prepare_p50: round(out.image.prepare_ms.p50 / out.host.prepare_ms.p50), first_output_p50: round(out.image.first_output_ms.p50 / out.host.first_output_ms.p50) };
  console.log(JSON.stringify({ ...out, image_over_host: ratio }, null, 2));
  writeFileSync(join(REPO_ROOT, 'bench/results/image-cells.json'), JSON.stringify({ ...out, image_over_host: ratio }, null, 2) + '\n');
} finally {
  await cells.close();
}
