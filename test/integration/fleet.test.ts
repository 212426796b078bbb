// A simulated fleet against a real control plane: 1,000 fake agents (test/support/fake-fleet.ts) on the real mutual-TLS
// channel of a control plane started without its local agent. Jobs created through the API are each placed exactly once,
// on an agent with room, and end succeeded with their wipe receipts recorded; agents that drop off mid-run have their
// jobs ended as error after the grace period, and the work still queued is placed on the agents that remain. Agents of
// the previous protocol (4: one message per report) work beside those of this build (5: one job.report per job).
// Performance is measured by bench/fleet.ts, never asserted here.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { TestCluster } from '../support/cluster.js';
import { FakeFleet } from '../support/fake-fleet.js';
import { MIN_PROTOCOL_VERSION, PROTOCOL_VERSION } from '../../src/shared/wire.js';
import { createJobs, waitEnded } from '../support/job-burst.js';

const AGENTS = 1000;
const CAPACITY = 2;
const GRACE_MS = 1500;

let cluster: TestCluster;
let fleet: FakeFleet | null = null;
let oldFleet: FakeFleet | null = null;

before(async () => {
  cluster = await TestCluster.start({
    noAgent: true,
    config: { control: { agentGraceMs: GRACE_MS }, quotas: { maxRunningJobs: 10_000, maxQueuedJobs: 100_000 } },
  });
  fleet = await FakeFleet.start({ url: `wss://127.0.0.1:${cluster.agentPort}/v1/agent`, tls: cluster.agentTls(), agents: AGENTS, capacity: CAPACITY, validate: true });
});

after(async () => {
  oldFleet?.close();
  fleet?.close();
  await cluster?.stop();
});

test('1,000 fake agents connect over mutual TLS and the control plane counts them', async () => {
  assert.equal(fleet!.ids().length, AGENTS);
  assert.equal((await cluster.client.health()).agents, AGENTS);
  // The pool view asks every agent and gets every answer.
  const pool = await cluster.client.pool();
  assert.equal(Object.keys(pool.agents).length, AGENTS);
  assert.equal(fleet!.received.poolGet, AGENTS);
});

test('every job is placed exactly once, within its agent\'s capacity, and ends succeeded with its receipt', async () => {
  const f = fleet!;
  const n = 3000;
  const created = await createJobs(cluster.client, n, 64);
  assert.equal(created.length, n);
  const ended = await waitEnded(cluster.client, created.map((c) => c.id), 120_000);
  const ids = new Set(f.ids());
  for (const c of created) {
    const job = ended.get(c.id)!;
    assert.equal(job.status, 'succeeded', JSON.stringify(job));
    assert.equal(job.exitCode, 0);
    assert.ok(job.wipe && job.wipe.keyStateAfterRemoval === 'absent', `no receipt on ${job.id}`);
    const seen = f.assigned.get(c.id);
    assert.ok(seen, `the fleet never saw ${c.id} assigned`);
    assert.ok(ids.has(seen.agentId));
  }
  assert.deepEqual(f.duplicates, [], 'no job assigned twice');
  assert.deepEqual(f.overCapacity, [], 'no agent assigned past its capacity');
  assert.deepEqual(f.schemaProblems, [], 'every message on the channel matched its schema');
  // More than one agent took work (how widely a burst spreads is placement's concern, see placement tests).
  assert.ok(new Set([...f.assigned.values()].map((a) => a.agentId)).size > 1);
  // The output the fake sent was stored.
  const out = await cluster.client.logs(created[0]!.id);
  assert.equal(Buffer.concat(out.chunks.map((c) => c.data)).toString(), 'hi\n');
});

test('agents that drop off mid-run: their jobs end as error, and the queued work is placed on the others', async () => {
  const f = fleet!;
  // Fakes hold their jobs (until released): 3,000 jobs on 2,000 slots fill every agent and leave 1,000 queued in the
  // control plane.
  f.holdMs = 600_000;
  const before = f.assigned.size;
  const created = await createJobs(cluster.client, 3000, 64);
  const deadline = Date.now() + 30_000;
  while (f.assigned.size < before + AGENTS * CAPACITY && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
  assert.equal(f.assigned.size, before + AGENTS * CAPACITY, 'every slot is taken, the rest waits');
  const dropped = f.holding().slice(0, 100);
  const droppedAt = performance.now();
  const lostJobs = new Set(f.disconnect(dropped));
  assert.ok(lostJobs.size >= 100, `the dropped agents held ${lostJobs.size} jobs`);
  f.holdMs = 0;
  f.release();
  const ended = await waitEnded(cluster.client, created.map((c) => c.id), 120_000);
  const droppedSet = new Set(dropped);
  let errors = 0;
  let placedAfter = 0;
  for (const c of created) {
    const job = ended.get(c.id)!;
    if (lostJobs.has(c.id)) {
      errors++;
      assert.equal(job.status, 'error', JSON.stringify(job));
      assert.match(job.message ?? '', /disconnected/);
    } else {
      assert.equal(job.status, 'succeeded', JSON.stringify(job));
      // Before the drop a dropped agent may have run (and finished) jobs; after it, none is placed there.
      const seen = f.assigned.get(c.id);
      assert.ok(seen, `the fleet never saw ${c.id} assigned`);
      if (seen.atMs > droppedAt) placedAfter++;
      assert.ok(seen.atMs < droppedAt || !droppedSet.has(seen.agentId), `${job.id} was placed on ${seen.agentId} after it dropped off`);
    }
  }
  assert.equal(errors, lostJobs.size);
  assert.ok(placedAfter > 0, 'queued work was placed after the drop');
  assert.deepEqual(f.duplicates, []);
  assert.deepEqual(f.overCapacity, []);
  assert.deepEqual(f.schemaProblems, []);
  assert.equal((await cluster.client.health()).agents, AGENTS - dropped.length);
});

test(`agents of protocol ${MIN_PROTOCOL_VERSION} (the previous build) and ${PROTOCOL_VERSION} side by side: every job ends succeeded with its output and receipt`, async () => {
  const f = fleet!;
  // Ten agents of this build stay, beside ten that report one message at a time.
  const stay = new Set(f.connected().slice(0, 10));
  f.disconnect(f.ids().filter((id) => !stay.has(id)));
  oldFleet = await FakeFleet.start({ url: `wss://127.0.0.1:${cluster.agentPort}/v1/agent`, tls: cluster.agentTls(), agents: 10, capacity: CAPACITY, validate: true, firstId: 0xb00000, protocol: MIN_PROTOCOL_VERSION });
  assert.deepEqual([...oldFleet.welcomedWith], [MIN_PROTOCOL_VERSION], 'welcomed with their own version');
  assert.deepEqual([...f.welcomedWith], [PROTOCOL_VERSION]);
  const created = await createJobs(cluster.client, 200, 16);
  const ended = await waitEnded(cluster.client, created.map((c) => c.id), 60_000);
  const by = { old: 0, new: 0 };
  for (const c of created) {
    const job = ended.get(c.id)!;
    assert.equal(job.status, 'succeeded', JSON.stringify(job));
    assert.ok(job.startedAt && job.cellId, `no start on ${job.id}`);
    assert.ok(job.wipe && job.wipe.keyStateAfterRemoval === 'absent', `no receipt on ${job.id}`);
    if (oldFleet.assigned.has(c.id)) by.old++;
    else if (f.assigned.has(c.id)) by.new++;
  }
  assert.ok(by.old > 0 && by.new > 0, `both kinds ran jobs: ${JSON.stringify(by)}`);
  for (const c of [created.find((x) => oldFleet!.assigned.has(x.id))!, created.find((x) => f.assigned.has(x.id))!]) {
    const out = await cluster.client.logs(c.id);
    assert.equal(Buffer.concat(out.chunks.map((x) => x.data)).toString(), 'hi\n');
  }
  assert.deepEqual(oldFleet.duplicates, []);
  assert.deepEqual(oldFleet.overCapacity, []);
  assert.deepEqual(oldFleet.schemaProblems, []);
  assert.deepEqual(f.schemaProblems, []);
});
