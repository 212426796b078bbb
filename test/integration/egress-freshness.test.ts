// A job starts under the egress policy in force when it is created, even when the replica that creates it last read
// another one: a replica uses the policy it last read of a workspace without waiting for the store, and checks it against
// the store's before the job is sent (src/control/jobs/job-service.ts admit, NetworkPolicyService.policyNow). Two
// replicas on one PostgreSQL (test/support/replicas.ts): the policy changes through A, the job is created on B.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { TestReplicas } from '../support/replicas.js';

let r: TestReplicas;
before(async () => {
  r = await TestReplicas.start();
  await r.b.waitWarm();
});
after(async () => {
  await r?.stop();
});

test('a policy set through another replica holds for the next job created on this one', async () => {
  // B reads the workspace's policy (its default) with a first job, and so holds it as its last read.
  const first = await r.clientB.runJob({ command: ['/bin/true'] }, () => {});
  assert.equal(first.status, 'succeeded');
  assert.deepEqual(first.egress.allow, []);
  // Changed through A: B does not hear of it.
  await r.clientA.setNetworkPolicy({ allow: [{ cidr: '203.0.113.0/24', port: 443 }] });
  let created: { egress: { allow: unknown[] } } | null = null;
  const job = await r.clientB.runJob({ command: ['/bin/true'] }, () => {}, (j) => (created = j));
  assert.equal(job.status, 'succeeded');
  const want = (await r.clientA.getNetworkPolicy()).allow;
  assert.equal(want.length, 1);
  assert.deepEqual(created!.egress.allow, want, 'the created event shows the policy in force');
  assert.deepEqual((await r.clientA.getJob(job.id)).egress.allow, want, 'the record holds it');
  // And back: B's last read is now the changed one; the next change through A holds too.
  await r.clientA.setNetworkPolicy({ allow: [] });
  const third = await r.clientB.runJob({ command: ['/bin/true'] }, () => {});
  assert.deepEqual((await r.clientB.getJob(third.id)).egress.allow, []);
});
