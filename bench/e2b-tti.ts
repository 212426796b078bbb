// bench/e2b-tti.ts: "time to interactive" as public sandbox benchmarks measure it — create a sandbox, then run
// `node -v` in it until the answer is back — through the unmodified e2b SDK (e2b-tti-client.ts, in a child process)
// and through Cleanroom's own SDK, against the same cluster in the same run, sequentially and as one burst.
import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { Sandbox } from '../src/sdk/sandbox.js';
import type { TestCluster } from '../test/support/cluster.js';
import { summarize, type Stats } from './stats.js';

const run = promisify(execFile);
const CLIENT = join(fileURLToPath(new URL('.', import.meta.url)), 'e2b-tti-client.js');

/** TtiResult is one SDK's time to interactive, sequential and in a burst (ms). */
export interface TtiResult {
  sequential: Stats;
  burst: Stats;
}

/** measureTti measures both SDKs: `sequential` one after another, then `burst` at once. */
export async function measureTti(c: TestCluster, sequential: number, burst: number): Promise<{ e2b: TtiResult; cleanroom: TtiResult }> {
  const caPath = (JSON.parse(readFileSync(join(c.dataDir, 'client.json'), 'utf8')) as { caPath: string }).caPath;
  const env = { PATH: process.env.PATH, E2B_API_URL: c.url, E2B_SANDBOX_URL: c.url, E2B_API_KEY: c.apiKey, NODE_EXTRA_CA_CERTS: caPath };
  const e2b = async (mode: 'seq' | 'burst', n: number): Promise<number[]> => {
    const r = await run(process.execPath, [CLIENT, mode, String(n)], { env, timeout: 1_800_000, maxBuffer: 1 << 20 });
    return JSON.parse(r.stdout) as number[];
  };
  const own = async (): Promise<number> => {
    const t0 = performance.now();
    const sb = await Sandbox.create({}, c.client);
    const r = await sb.exec(['node', '-v']);
    const ms = performance.now() - t0;
    if (r.exitCode !== 0) throw new Error(`node -v exited ${r.exitCode}`);
    await sb.kill();
    return ms;
  };
  // Each phase starts from a full warm pool, so that neither SDK inherits the other's cold starts.
  const ownSeq: number[] = [];
  await c.waitWarm(600_000);
  for (let i = 0; i < sequential; i++) ownSeq.push(await own());
  await c.waitWarm(600_000);
  const e2bSeq = await e2b('seq', sequential);
  await c.waitWarm(600_000);
  const ownBurst = await Promise.all(Array.from({ length: burst }, own));
  await c.waitWarm(600_000);
  const e2bBurst = await e2b('burst', burst);
  return {
    e2b: { sequential: summarize(e2bSeq), burst: summarize(e2bBurst) },
    cleanroom: { sequential: summarize(ownSeq), burst: summarize(ownBurst) },
  };
}
