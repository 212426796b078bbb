// bench/e2b.ts: the last stage of `npm run bench` (alone: `npm run bench:e2b`) — time to interactive through the unmodified e2b SDK beside Cleanroom's own SDK, in
// one run on one cluster (issue 14). Env: E2B_TTI_SEQ (default 100), E2B_TTI_BURST (default 100; BENCH_SMOKE=1: 3 and
// 3); BENCH_OUT=<dir> writes e2b-latest.json there (default bench/results). Context only, not a same-run comparison: the ComputeSDK
// benchmark of 2026 reports a hosted sequential median of 491 ms for E2B and 186 ms for Daytona.
import { mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { loadavg } from 'node:os';
import { join } from 'node:path';
import { REPO_ROOT } from '../test/support/cluster.js';
import { Clusters } from './clusters.js';
import { measureTti } from './e2b-tti.js';
import { SANDBOX_FULL, sandboxConfig } from './sandbox.js';

const smoke = process.env.BENCH_SMOKE === '1';
const sequential = Number(process.env.E2B_TTI_SEQ ?? (smoke ? '3' : '100'));
const burst = Number(process.env.E2B_TTI_BURST ?? (smoke ? '3' : '100'));
const outDir = process.env.BENCH_OUT ?? (smoke ? mkdtempSync('/var/tmp/cleanroom-bench-smoke-') : join(REPO_ROOT, 'bench/results'));
const log = (m: string) => process.stderr.write(`${new Date().toISOString()} ${m}\n`);

const clusters = new Clusters(log);
// The burst needs room for all its sandboxes at once (running quota, live streams, agent capacity), as the sandbox stage has.
const config = sandboxConfig({ ...SANDBOX_FULL, concurrent: burst }) as { quotas: Record<string, unknown> };
config.quotas = { ...config.quotas, requestsPerSecond: 100_000, requestBurst: 100_000 };
const result = await clusters.with([{ runtime: 'runc', class: 'small', warm: 4 }], (c) => measureTti(c, sequential, burst), config);
const out = { date: new Date().toISOString(), loadavg: loadavg(), sequential, burst, ...result, leftovers: clusters.leftovers };
mkdirSync(outDir, { recursive: true });
writeFileSync(join(outDir, 'e2b-latest.json'), `${JSON.stringify(out, null, 2)}\n`);
process.stdout.write(`time to interactive (create → first node -v), ms p50 / p95:\n`);
for (const sdk of ['e2b', 'cleanroom'] as const) {
  const r = result[sdk];
  process.stdout.write(`  ${sdk.padEnd(9)} sequential ×${sequential}: ${r.sequential.p50} / ${r.sequential.p95}   burst ×${burst}: ${r.burst.p50} / ${r.burst.p95}\n`);
}
if (clusters.leftovers.length > 0) process.exit(1);
