// The replica set's plumbing on a real PostgreSQL: the PgBus (LISTEN/NOTIFY) delivers to every replica, drops what is
// not one of its messages (foreign payloads, extra fields such as a token), and the registry sees live and dead replicas.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { PgBus } from '../../src/control/cluster/pg-bus.js';
import type { BusMessage } from '../../src/control/cluster/bus-messages.js';
import { BUS_CHANNEL } from '../../src/control/cluster/bus-messages.js';
import { ReplicaRegistry } from '../../src/control/cluster/replica-registry.js';
import { openStore } from '../../src/control/store/open-store.js';
import type { Store } from '../../src/control/store/store.js';
import { TestPostgres } from '../support/postgres.js';

let pg: TestPostgres;
before(async () => {
  pg = await TestPostgres.start();
});
after(async () => {
  await pg?.stop();
});

const until = async (cond: () => boolean, ms = 5000) => {
  const deadline = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error('timed out');
    await new Promise((r) => setTimeout(r, 20));
  }
};

test('PgBus: a message reaches every replica (the sender too), in order; foreign or over-full payloads are dropped', async () => {
  const [a, b] = [await PgBus.open(pg.url(), () => {}), await PgBus.open(pg.url(), () => {})];
  try {
    const got: Record<'a' | 'b', BusMessage[]> = { a: [], b: [] };
    a.subscribe((m) => got.a.push(m));
    b.subscribe((m) => got.b.push(m));
    // Not ours: garbage, an unknown type, a known type with an extra field (a token must never ride along).
    await pg.query('cleanroom', 'SELECT pg_notify($1, $2)', [BUS_CHANNEL, 'not json']);
    await pg.query('cleanroom', 'SELECT pg_notify($1, $2)', [BUS_CHANNEL, JSON.stringify({ type: 'job.nuke', from: 'x', jobId: 'j' })]);
    await pg.query('cleanroom', 'SELECT pg_notify($1, $2)', [BUS_CHANNEL, JSON.stringify({ type: 'job.ended', from: 'x', jobId: 'j', token: 'eyJ…' })]);
    for (let seq = 1; seq <= 50; seq++) a.publish({ type: 'job.output', from: 'rep_a', jobId: 'job_1', seq });
    b.publish({ type: 'job.ended', from: 'rep_b', jobId: 'job_1' });
    await until(() => got.a.length === 51 && got.b.length === 51);
    for (const seen of [got.a, got.b]) {
      assert.deepEqual(seen.filter((m) => m.type === 'job.output').map((m) => (m as { seq: number }).seq), Array.from({ length: 50 }, (_, i) => i + 1));
      assert.ok(seen.some((m) => m.type === 'job.ended' && m.from === 'rep_b'));
      assert.ok(!seen.some((m) => m.from === 'x'), 'foreign payloads dropped');
    }
  } finally {
    await a.close();
    await b.close();
  }
});

test('ReplicaRegistry: replicas see each other live; the lowest id sweeps; a clean stop leaves the set, a silent one ages out', async () => {
  const [s1, s2] = [await openStore({ kind: 'postgres', url: pg.url(), poolSize: 2 }, ''), await openStore({ kind: 'postgres', url: pg.url(), poolSize: 2 }, '')] as Store[];
  const r1 = new ReplicaRegistry(s1!, 'rep_1', 'https://127.0.0.1:1', () => {});
  const r2 = new ReplicaRegistry(s2!, 'rep_2', 'https://127.0.0.1:2', () => {});
  try {
    await r1.start();
    await r2.start();
    await until(() => r1.live().length === 2, 5000);
    assert.deepEqual(r1.live().map((r) => r.id), ['rep_1', 'rep_2']);
    assert.equal(r1.isSweeper(), true);
    assert.equal(r2.isSweeper(), false);
    assert.equal(r2.apiUrlOf('rep_1'), 'https://127.0.0.1:1');
    // A replica whose heartbeat is 11 s old is dead to the others.
    await s1!.upsertReplica({ id: 'rep_0', apiUrl: 'https://127.0.0.1:0', startedAt: new Date(Date.now() - 60_000).toISOString(), heartbeatAt: new Date(Date.now() - 11_000).toISOString() });
    await until(() => r2.live().length === 2 && !r2.isLive('rep_0'), 5000);
    await r1.stop();
    await until(() => r2.live().length === 1, 5000);
    assert.equal(r2.isSweeper(), true);
  } finally {
    await r1.stop();
    await r2.stop();
    await s1!.close();
    await s2!.close();
  }
});
