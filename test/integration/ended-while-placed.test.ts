// A job that ends elsewhere while it is being placed (another replica ends it between its row being written and its agent
// reporting it) does not run on: the placing replica writes nothing after the dispatch, so it is the agent's first
// report that finds the job ended, tells the agent to stop it and revokes its token (one stored after that end
// revoked the job's others stays usable otherwise). A fake agent (test/support/fake-fleet.ts) reports the start late,
// and the end elsewhere is written straight to the shared PostgreSQL database, as another replica's write would be.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { TestCluster } from '../support/cluster.js';
import { FakeFleet } from '../support/fake-fleet.js';

let cluster: TestCluster;
let fleet: FakeFleet | null = null;

before(async () => {
  cluster = await TestCluster.start({ noAgent: true, store: 'postgres' });
  fleet = await FakeFleet.start({ url: `wss://127.0.0.1:${cluster.agentPort}/v1/agent`, tls: cluster.agentTls(), agents: 1, capacity: 2, holdMs: 600_000, validate: true });
});

after(async () => {
  fleet?.close();
  await cluster?.stop();
});

test('a start reported for a job that ended meanwhile has the agent stop it, and revokes its token', async () => {
  const f = fleet!;
  const pg = cluster.postgres!;
  f.startDelayMs = 1000;
  const job = await cluster.client.createJob({ command: ['sleep', '60'] });
  assert.equal(job.status, 'assigned');
  const endedAt = new Date().toISOString();
  const changed = await pg.query('cleanroom', `UPDATE jobs SET status = 'error', ended_at = $2, version = version + 1,
      doc = (doc::jsonb || jsonb_build_object('status', 'error', 'endedAt', $2::text))::text
    WHERE id = $1 AND status = 'assigned' RETURNING id`, [job.id, endedAt]);
  assert.equal(changed.length, 1, 'the job was still assigned when it was ended elsewhere');
  const tokens = await pg.query<{ revoked_at: string | null }>('cleanroom', 'SELECT revoked_at FROM tokens WHERE job_id = $1', [job.id]);
  assert.equal(tokens.length, 1);
  assert.equal(tokens[0]!.revoked_at, null, 'its token was stored after anything could revoke it');

  const deadline = Date.now() + 15_000;
  while (f.received.cancel === 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
  assert.equal(f.received.cancel, 1, 'the agent was told to stop the job');
  for (;;) {
    const [t] = await pg.query<{ revoked_at: string | null }>('cleanroom', 'SELECT revoked_at FROM tokens WHERE job_id = $1', [job.id]);
    if (t!.revoked_at !== null) break;
    assert.ok(Date.now() < deadline, 'the token was never revoked');
    await new Promise((r) => setTimeout(r, 50));
  }
  const now = await cluster.client.getJob(job.id);
  assert.equal(now.status, 'error', 'the end stands: the late start did not revive the job');
  const verdict = await cluster.client.verifyAudit();
  assert.equal(verdict.ok, true, JSON.stringify(verdict));
});
