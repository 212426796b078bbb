// Fault test: rounds of load with a SIGKILL of the agent (3 in 4) or the control plane (1 in 4) at a random moment,
// each followed by `up --detach`; the last kill is followed by `down` with the agent dead. Afterwards every job is in a
// final state with a reason, every job that had a cell has its wipe receipt, and the host holds nothing of Cleanroom's.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { TestCluster } from '../support/cluster.js';
import { waitFor } from '../support/host.js';
import type { Job } from '../../src/sdk/client.js';
import { seeded } from '../support/seeded.js';

/** ROUNDS: the issue asks for at least 50 (CLEANROOM_FAULT_ROUNDS changes it for a soak or a quick local run). */
const ROUNDS = Number(process.env.CLEANROOM_FAULT_ROUNDS ?? 50);
/** FINAL_WITHIN_MS bounds how long after the agent's return every caught job must be final (its grace is 3 s here). */
const FINAL_WITHIN_MS = 30_000;

let cluster: TestCluster;
before(async () => {
  cluster = await TestCluster.start({ config: { agent: { pool: [{ runtime: 'runc', class: 'small', warm: 1 }, { runtime: 'runsc', class: 'small', warm: 1 }] } } });
});
after(async () => {
  await cluster?.stop();
});

test(`${ROUNDS} rounds of SIGKILL under load (runc and gVisor jobs): up --detach always works, every job ends with a reason and a receipt, the host is left clean`, async () => {
  const jobIds: string[] = [];
  const rng = seeded(Number(process.env.CLEANROOM_FAULT_SEED ?? 20261204));
  const kills = { agent: 0, control: 0 };
  for (let round = 0; round < ROUNDS; round++) {
    const created = await Promise.all([
      // Writes 8 MiB to its encrypted volume, then sleeps: a crash catches it holding data.
      cluster.client.createJob({ command: ['sh', '-c', 'head -c 8388608 /dev/zero > /work/blob && echo wrote && sleep 5'], runtime: 'runc' }),
      cluster.client.createJob({ command: ['sh', '-c', 'echo up; sleep 5'], runtime: 'runsc' }),
    ]);
    jobIds.push(...created.map((j) => j.id));
    // Kill at a random moment: before assignment, mid-start, while running, or while the previous round's cells wipe.
    await new Promise((r) => setTimeout(r, Math.floor(rng() * 2500)));
    const victim = round % 4 === 2 ? 'control' : 'agent'; // 3 in 4 the agent; the last round kills the agent
    kills[victim]++;
    killNode(victim);
    if (round === ROUNDS - 1) break;
    const up = await cluster.cli(['up', '--detach', '--data-dir', cluster.dataDir]);
    assert.equal(up.code, 0, `round ${round}: up --detach after killing the ${victim} failed: ${up.stderr}\n${tail(cluster, 'agent')}`);
  }
  assert.ok(kills.agent > 0, `the agent was never killed (${JSON.stringify(kills)})`);
  assert.ok(kills.control > 0, `the control plane was never killed (${JSON.stringify(kills)})`);

  // The last kill is followed by `down` while a process is dead: it must still leave nothing on the host.
  const down = await cluster.cli(['down', '--data-dir', cluster.dataDir]);
  assert.equal(down.code, 0, `down after a kill: ${down.stdout}${down.stderr}`);
  assert.deepEqual(await hostObjects(cluster), [], 'down after a kill left host objects');

  // Back up: the agent reports the receipts down's reconcile spooled; every caught job reaches a final state.
  const up = await cluster.cli(['up', '--detach', '--data-dir', cluster.dataDir]);
  assert.equal(up.code, 0, up.stderr);
  const t0 = Date.now();
  let jobs: Job[] = [];
  await waitFor(async () => {
    jobs = await Promise.all(jobIds.map((id) => cluster.client.getJob(id)));
    return jobs.every((j) => final(j) && (!hadCell(j) || j.wipe !== null));
  }, FINAL_WITHIN_MS).catch(() => {
    const stuck = jobs.filter((j) => !final(j) || (hadCell(j) && j.wipe === null)).map((j) => `${j.id} ${j.status} cell=${j.cellId} wipe=${j.wipe !== null}`);
    assert.fail(`${stuck.length} jobs not final with a receipt ${FINAL_WITHIN_MS} ms after the agent came back: ${stuck.slice(0, 10).join('; ')}`);
  });
  const elapsed = Date.now() - t0;
  for (const j of jobs) {
    if (j.status === 'error') assert.match(j.message ?? '', /\S/, `job ${j.id} ended as error without a reason`);
    if (j.wipe) assert.equal(j.wipe.keyStateAfterRemoval, 'absent', `job ${j.id}: ${JSON.stringify(j.wipe)}`);
  }
  const byStatus: Record<string, number> = {};
  for (const j of jobs) byStatus[j.status] = (byStatus[j.status] ?? 0) + 1;
  process.stdout.write(`# fault: ${ROUNDS} rounds, kills ${JSON.stringify(kills)}, ${jobs.length} jobs ${JSON.stringify(byStatus)}, ${jobs.filter((j) => j.wipe).length} receipts, all final ${elapsed} ms after the last up\n`);

  // And the plane still runs jobs on both runtimes.
  for (const runtime of ['runc', 'runsc'] as const) {
    const r = await cluster.runJob({ command: ['echo', `alive on ${runtime}`], runtime });
    assert.equal(r.stdout, `alive on ${runtime}\n`);
  }
});

/** killNode SIGKILLs the node process of the agent (under its subreaper) or of the control plane, and waits for it. */
function killNode(which: 'agent' | 'control'): void {
  const pidFile = join(cluster.dataDir, 'run', `${which}.pid`);
  let pid = Number(readFileSync(pidFile, 'utf8'));
  if (which === 'agent') {
    const children = readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim().split(/\s+/).map(Number);
    if (children[0]) pid = children[0];
  }
  process.kill(pid, 'SIGKILL');
  const deadline = Date.now() + 10_000;
  while (alive(pid) && Date.now() < deadline) Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 10);
}

/** hostObjects lists what the host still holds of this cluster's agent, in every place a cell leaves something. */
async function hostObjects(c: TestCluster): Promise<string[]> {
  const { execFileSync } = await import('node:child_process');
  const { readdirSync, existsSync } = await import('node:fs');
  const list = (d: string) => {
    try {
      return readdirSync(d);
    } catch {
      return [];
    }
  };
  const prefix = `cr${c.agentId}`;
  const found: string[] = [];
  for (const ns of list('/run/netns').filter((n) => n.startsWith(prefix))) found.push(`netns ${ns}`);
  for (const l of list('/sys/class/net').filter((n) => n.startsWith(prefix))) found.push(`link ${l}`);
  if (execFileSync('nft', ['list', 'tables'], { encoding: 'utf8' }).split('\n').includes(`table inet ${prefix}`)) found.push(`nft table ${prefix}`);
  for (const ctrl of list('/sys/fs/cgroup')) for (const g of list(`/sys/fs/cgroup/${ctrl}`).filter((n) => n.startsWith(`cr-${c.agentId}-`))) found.push(`cgroup ${ctrl}/${g}`);
  for (const dev of list('/sys/block').filter((d) => d.startsWith('loop'))) {
    try {
      if (readFileSync(`/sys/block/${dev}/loop/backing_file`, 'utf8').startsWith(`${c.dataDir}/`)) found.push(`loop ${dev}`);
    } catch {
      /* unbound */
    }
  }
  for (const line of readFileSync('/proc/self/mountinfo', 'utf8').split('\n')) {
    const mnt = line.split(' ')[4];
    if (mnt?.startsWith(`${c.dataDir}/`)) found.push(`mount ${mnt}`);
  }
  const runc = JSON.parse(execFileSync('runc', ['--root', join(c.dataDir, 'agent', 'runc'), 'list', '--format', 'json'], { encoding: 'utf8' }).trim() || 'null') as Array<{ id: string }> | null;
  for (const ct of runc ?? []) found.push(`runc container ${ct.id}`);
  if (existsSync(join(c.dataDir, 'agent', 'runsc'))) {
    const runsc = JSON.parse(execFileSync('runsc', ['--root', join(c.dataDir, 'agent', 'runsc'), 'list', '--format', 'json'], { encoding: 'utf8' }).trim() || 'null') as Array<{ id: string }> | null;
    for (const ct of runsc ?? []) found.push(`runsc container ${ct.id}`);
  }
  return found;
}

function final(j: Job): boolean {
  return !['queued', 'assigned', 'running'].includes(j.status);
}

/** hadCell: the job reached a cell (the control plane heard of its cell, or it ran to an exit of its own). */
function hadCell(j: Job): boolean {
  return j.cellId !== null || ['succeeded', 'failed', 'timeout', 'oom'].includes(j.status);
}

function alive(pid: number): boolean {
  try {
    return !/\) Z /.test(readFileSync(`/proc/${pid}/stat`, 'utf8'));
  } catch {
    return false;
  }
}

function tail(c: TestCluster, name: string): string {
  try {
    return readFileSync(join(c.dataDir, 'run', `${name}.log`), 'utf8').slice(-2000);
  } catch {
    return '';
  }
}

