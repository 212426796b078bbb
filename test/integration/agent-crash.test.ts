// An agent killed with SIGKILL mid-job and started again reconciles: its jobs end as `error`, volumes are shredded with receipts, nothing is left behind.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { TestCluster } from '../support/cluster.js';
import { leftovers, waitFor } from '../support/host.js';

let cluster: TestCluster;
before(async () => {
  cluster = await TestCluster.start();
});
after(async () => {
  await cluster?.stop();
});

test('SIGKILL the agent while jobs run, start it again: jobs end as error and nothing remains', async () => {
  const jobs = await Promise.all(['runc', 'runsc'].map((runtime) => cluster.client.createJob({ command: ['sh', '-c', 'echo up; sleep 120'], runtime })));
  await waitFor(async () => (await Promise.all(jobs.map((j) => cluster.client.getJob(j.id)))).every((j) => j.status === 'running'));
  const running = await Promise.all(jobs.map((j) => cluster.client.getJob(j.id)));
  const cellIds = running.map((j) => j.cellId!);
  const pool = await cluster.client.pool();
  assert.equal(Object.keys(pool.agents).length, 1);

  await cluster.killAgent();

  const restarted = await cluster.cli(['up', '--detach', '--data-dir', cluster.dataDir]);
  assert.equal(restarted.code, 0, restarted.stderr);
  const ended = await Promise.all(jobs.map((j) => waitForEnd(j.id)));
  for (const j of ended) {
    assert.equal(j.status, 'error');
    assert.match(j.message ?? '', /agent/);
  }
  assert.deepEqual(leftovers(cluster, cellIds), []);
  // Every volume of those jobs was crypto-shredded by the restarted agent's reconcile, with a receipt.
  await waitFor(async () => (await Promise.all(jobs.map((j) => cluster.client.getJob(j.id)))).every((j) => j.wipe !== null), 20_000);
  for (const j of await Promise.all(jobs.map((x) => cluster.client.getJob(x.id)))) {
    assert.equal(j.wipe!.cellId, j.cellId);
    assert.equal(j.wipe!.keyStateAfterRemoval, 'absent', JSON.stringify(j.wipe));
  }
  // And the restarted agent serves new jobs.
  const next = await cluster.runJob({ command: ['echo', 'after restart'] });
  assert.equal(next.stdout, 'after restart\n');
});

async function waitForEnd(id: string) {
  let job = await cluster.client.getJob(id);
  await waitFor(async () => {
    job = await cluster.client.getJob(id);
    return !['queued', 'assigned', 'running'].includes(job.status);
  }, 30_000);
  return job;
}
