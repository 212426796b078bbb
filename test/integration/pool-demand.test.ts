// A demand-sized warm pool: a burst teaches the pool the size of the next burst, which then starts warm; once the
// demand window passes with no starts, the pool shrinks back to its minimum and its surplus cells are wiped.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { TestCluster } from '../support/cluster.js';

const BURST = 12;
const WINDOW_S = 20;
let cluster: TestCluster;

before(async () => {
  cluster = await TestCluster.start({
    config: { agent: { pool: [{ runtime: 'runc', class: 'small', warm: 1, max: 24 }], poolDemandWindowSeconds: WINDOW_S, maxRunningJobs: 64 } },
  });
  await cluster.waitWarm();
});
after(async () => {
  await cluster?.stop();
});

async function runcPool(): Promise<{ target: number; warm: number; preparing: number; min?: number; max?: number; reason?: string }> {
  const p = await cluster.client.pool();
  return p.agents[cluster.agentId]!['runc/small']!;
}

async function burst(): Promise<number> {
  const jobs = await Promise.all(Array.from({ length: BURST }, () => cluster.runJob({ command: ['echo', 'burst'], runtime: 'runc' })));
  for (const j of jobs) assert.equal(j.job.status, 'succeeded', j.stderr);
  return jobs.filter((j) => j.job.timings.agent_cold === 0).length;
}

async function until<T>(what: string, fn: () => Promise<T>, ok: (v: T) => boolean, timeoutMs: number): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (ok(v)) return v;
    if (Date.now() > deadline) throw new Error(`${what}: still ${JSON.stringify(v)}`);
    await new Promise((r) => setTimeout(r, 250));
  }
}

test('a burst sizes the pool for the next one, which starts warm; idle, the pool shrinks back to its minimum', async () => {
  const quiet = await runcPool();
  assert.equal(quiet.target, 1);
  assert.equal(quiet.min, 1);
  assert.equal(quiet.max, 24);
  assert.match(quiet.reason ?? '', /minimum 1/);

  await burst(); // mostly cold: the pool held one cell
  const grown = await until('the pool grows to the burst', runcPool, (p) => p.target >= BURST && p.warm >= BURST, 90_000);
  assert.match(grown.reason ?? '', /peak \d+ starts within/);

  const warm = await burst();
  assert.ok(warm >= Math.ceil(BURST * 0.9), `only ${warm} of ${BURST} jobs of the second burst started warm`);

  // No starts for the demand window: back to the minimum, the surplus wiped (never handed out).
  const shrunk = await until('the pool shrinks', runcPool, (p) => p.target === 1 && p.warm <= 1 && p.preparing === 0, (WINDOW_S + 30) * 1000);
  assert.match(shrunk.reason ?? '', /minimum 1/);
  const after = await cluster.runJob({ command: ['echo', 'after'], runtime: 'runc' });
  assert.equal(after.job.status, 'succeeded');
});
