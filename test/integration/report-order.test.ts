// The order in which a job's reports are published, when its store writes are slow or fail (JobService.onReport): a
// stream shows a job's output only once the start reported with it is stored, and a report whose start write fails
// holds the job's next report until its own output is stored, so the stream's end comes after that output. The store is
// a PostgreSQL started here; its writes are slowed or refused by triggers (the job rows and output of this cluster
// only), and the agent is a fake one (test/support/fake-fleet.ts) that reports start, output and end as a real one may.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { TestCluster } from '../support/cluster.js';
import { FakeFleet } from '../support/fake-fleet.js';

let cluster: TestCluster;
let fleet: FakeFleet | null = null;

before(async () => {
  cluster = await TestCluster.start({ noAgent: true, store: 'postgres' });
  fleet = await FakeFleet.start({ url: `wss://127.0.0.1:${cluster.agentPort}/v1/agent`, tls: cluster.agentTls(), agents: 1, capacity: 4, holdMs: 0, validate: true });
  // The fake reports a job only once its create's stream is open (the report must be published to a live follower).
  fleet.startDelayMs = 200;
});

after(async () => {
  fleet?.close();
  await cluster?.stop();
});

/** sql runs statements on the cluster's database (the triggers below). */
async function sql(text: string): Promise<void> {
  await cluster.postgres!.query('cleanroom', text);
}

/** run creates a job and follows it to its end, noting what the store said when the stream showed its first output. */
async function run(): Promise<{ chunks: string[]; status: string; atFirst: Promise<{ status: string; stored: number }> | null }> {
  let id = '';
  const chunks: string[] = [];
  let atFirst: Promise<{ status: string; stored: number }> | null = null;
  const job = await cluster.client.runJob(
    { command: ['true'] },
    (c) => {
      chunks.push(Buffer.from(c.data).toString());
      atFirst ??= Promise.all([cluster.client.getJob(id), cluster.client.logs(id)]).then(([j, l]) => ({ status: j.status, stored: l.chunks.length }));
    },
    (created) => (id = created.id),
  );
  return { chunks, status: job.status, atFirst };
}

test("a report of a job's start, output and end shows the output only once the start is stored", async () => {
  fleet!.holdMs = 0; // start, output, end and receipt in one job.report
  await sql(`CREATE FUNCTION test_slow_start() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN PERFORM pg_sleep(0.8); RETURN NEW; END $$;
    CREATE TRIGGER test_slow_start BEFORE UPDATE ON jobs FOR EACH ROW WHEN (OLD.status = 'assigned' AND NEW.status <> 'assigned') EXECUTE FUNCTION test_slow_start()`);
  try {
    for (let i = 0; i < 3; i++) {
      const r = await run();
      assert.equal(r.status, 'succeeded');
      assert.deepEqual(r.chunks, ['hi\n']);
      const seen = await r.atFirst!;
      assert.ok(!['queued', 'assigned'].includes(seen.status), `the output was shown while the store said ${seen.status}`);
      assert.equal(seen.stored, 1, 'the output was shown before it was stored');
    }
  } finally {
    await sql('DROP TRIGGER test_slow_start ON jobs; DROP FUNCTION test_slow_start()');
  }
});

test('a report whose start write fails holds the next report of its job until its output is stored', async () => {
  // The start (with output) is refused at once while its output's write takes long; the end comes in the next report.
  fleet!.holdMs = 200;
  await sql(`CREATE FUNCTION test_refuse_start() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'test: start refused'; END $$;
    CREATE TRIGGER test_refuse_start BEFORE UPDATE ON jobs FOR EACH ROW WHEN (NEW.status = 'running') EXECUTE FUNCTION test_refuse_start();
    CREATE FUNCTION test_slow_output() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN PERFORM pg_sleep(1.2); RETURN NEW; END $$;
    CREATE TRIGGER test_slow_output BEFORE INSERT ON job_output FOR EACH ROW EXECUTE FUNCTION test_slow_output()`);
  try {
    const r = await run();
    assert.equal(r.status, 'succeeded', 'the end was stored (from assigned: the start never was)');
    assert.deepEqual(r.chunks, ['hi\n'], 'the stream ended without the output reported before the end');
  } finally {
    await sql(`DROP TRIGGER test_refuse_start ON jobs; DROP FUNCTION test_refuse_start();
      DROP TRIGGER test_slow_output ON job_output; DROP FUNCTION test_slow_output()`);
  }
});

test("a job ended by the control plane before its agent's first report keeps the placement's timings", async () => {
  // Its agent never reports it and goes away: the job ends when the agent's grace runs out (TestCluster: 3 s).
  fleet!.startDelayMs = 600_000;
  const job = await cluster.client.createJob({ command: ['true'] });
  assert.equal(job.status, 'assigned');
  assert.equal(typeof job.timings.control_dispatch_ms, 'number', 'the create answers with the placement\'s timings');
  fleet!.close();
  const deadline = Date.now() + 20_000;
  let now = await cluster.client.getJob(job.id);
  while (now.status === 'assigned' && Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 100));
    now = await cluster.client.getJob(job.id);
  }
  assert.equal(now.status, 'error', 'the job ended with its lost agent');
  assert.equal(now.timings.control_dispatch_ms, job.timings.control_dispatch_ms);
  assert.equal(now.timings.control_token_ms, job.timings.control_token_ms);
});
