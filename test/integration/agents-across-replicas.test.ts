// The fleet as every replica sees it (PostgreSQL, two replicas: test/support/replicas.ts; the agent is on B's channel):
// `GET /v1/agents` through A shows the agent's figures as fresh as B's (B stores them with its heartbeat, every 2 s,
// never per job), with what it offers; and a workload no agent offers is refused through A too, which holds no agent
// and reads the offers from the store.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { CleanroomError, type AgentInfo } from '../../src/sdk/client.js';
import { TestReplicas } from '../support/replicas.js';
import { waitFor } from '../support/host.js';

let r: TestReplicas;
before(async () => {
  // The agent offers runc and crun only (no runsc): its runsc pool is left out.
  r = await TestReplicas.start({ config: { agent: { runtimes: ['runc', 'crun'], pool: [{ runtime: 'runc', class: 'small', warm: 1 }], maxRunningJobs: 8 } } });
  await r.b.waitWarm();
});
after(async () => {
  await r?.stop();
});

const only = async (c: typeof r.clientA): Promise<AgentInfo> => {
  const list = await c.listAgents();
  assert.equal(list.length, 1, JSON.stringify(list));
  return list[0]!;
};
/** figures are what must agree between replicas (times aside). */
const figures = (a: AgentInfo) => ({ id: a.id, state: a.state, connected: a.connected, capacity: a.capacity, running: a.running, warmCells: a.warmCells, offers: a.offers });

test('A lists the agent on B with what it offers, and with its running jobs as they change (within a heartbeat or two)', async () => {
  assert.equal((await r.clientA.health()).agents, 0);
  const onB = await only(r.clientB);
  assert.deepEqual(onB.offers?.runtimes, ['runc', 'crun']);
  assert.equal(onB.capacity, 8);
  let pair: AgentInfo[] = [];
  await waitFor(
    async () => {
      pair = [await only(r.clientA), await only(r.clientB)];
      return JSON.stringify(figures(pair[0]!)) === JSON.stringify(figures(pair[1]!));
    },
    10_000,
    () => JSON.stringify(pair),
  );

  // Three long jobs through A (they run on B's agent): A's list shows them running, then none once they are cancelled.
  const jobs = await Promise.all([1, 2, 3].map(() => r.clientA.createJob({ command: ['sleep', '60'] })));
  for (const j of jobs) await waitFor(async () => (await r.clientA.getJob(j.id)).status === 'running', 30_000);
  assert.equal((await only(r.clientB)).running, 3);
  let seen: AgentInfo | undefined;
  await waitFor(async () => (seen = await only(r.clientA)).running === 3, 6_000, () => JSON.stringify(seen));
  // Its warm cells as B knows them (B's view is the agent's last report; A's the one B stored last).
  await waitFor(async () => (await only(r.clientA)).warmCells === (await only(r.clientB)).warmCells, 10_000);
  for (const j of jobs) await r.clientA.cancelJob(j.id);
  for (const j of jobs) assert.equal((await r.clientA.followLogs(j.id, () => {})).status, 'cancelled');
  await waitFor(async () => (seen = await only(r.clientA)).running === 0, 6_000, () => JSON.stringify(seen));
  assert.ok(Date.now() - Date.parse(seen!.lastSeenAt) < 5_000, `last seen ${seen!.lastSeenAt}`);
});

test('a runtime no agent offers is refused through either replica (A reads the offers from the store); one offered runs', async () => {
  for (const c of [r.clientA, r.clientB]) {
    await assert.rejects(c.createJob({ command: ['true'], runtime: 'runsc' }), (e: CleanroomError) => {
      assert.equal(e.code, 'runtime_not_offered');
      assert.deepEqual(e.details, { runtime: 'runsc', offered: ['crun', 'runc'] });
      return true;
    });
  }
  const job = await r.clientA.runJob({ command: ['echo', 'crun-via-a'], runtime: 'crun' }, () => {});
  assert.equal(job.status, 'succeeded', job.message ?? '');
});
