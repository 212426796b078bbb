// Job records are sealed at rest: argv, env values, cwd, output and messages never appear in clear in the control
// plane's files; an authorised reader gets them back; after retention the output is gone and the job key destroyed.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { TestCluster } from '../support/cluster.js';
import { waitFor } from '../support/host.js';

let cluster: TestCluster;
before(async () => {
  // Retention of about 4 s, so that the test can watch it end.
  cluster = await TestCluster.start({ config: { limits: { retentionDays: 4 / 86_400 } } });
});
after(async () => {
  await cluster?.stop();
});

/** controlFiles returns the bytes of every file of the control plane's state (database, WAL, shared memory). */
function controlFiles(): Buffer {
  const dir = join(cluster.dataDir, 'control');
  return Buffer.concat(readdirSync(dir).filter((f) => f.startsWith('cleanroom.db')).map((f) => readFileSync(join(dir, f))));
}

test('argv, env values, cwd, output and the message are sealed at rest and readable through the API; retention shreds them', async () => {
  const argvMarker = `ARGV${randomBytes(8).toString('hex')}`;
  const envMarker = `ENV${randomBytes(8).toString('hex')}`;
  const outMarker = `OUT${randomBytes(8).toString('hex')}`;
  const dirMarker = `DIR${randomBytes(6).toString('hex')}`;
  const r = await cluster.runJob({ command: ['sh', '-c', `echo ${outMarker}$0; echo "$SECRET" >&2; exit 3`, argvMarker], env: { SECRET: envMarker }, cwd: `/work/${dirMarker}` });
  assert.equal(r.job.status, 'failed');
  assert.equal(r.stdout, `${outMarker}${argvMarker}\n`);
  assert.equal(r.stderr, `${envMarker}\n`);
  // A job whose cell refuses its working directory ends with a message carrying workload-chosen text.
  const msgMarker = `MSG${randomBytes(6).toString('hex')}`;
  const bad = await cluster.runJob({ command: ['true'], cwd: `/tmp/${msgMarker}/x`, env: { X: '1' } });
  // An authorised reader sees everything (the API unseals it).
  const got = await cluster.client.getJob(r.job.id);
  assert.deepEqual(got.command, ['sh', '-c', `echo ${outMarker}$0; echo "$SECRET" >&2; exit 3`, argvMarker]);
  assert.equal(got.cwd, `/work/${dirMarker}`);
  const logs = await cluster.client.logs(r.job.id);
  assert.equal(Buffer.concat(logs.chunks.filter((c) => c.stream === 'stdout').map((c) => c.data)).toString(), `${outMarker}${argvMarker}\n`);

  // Nothing of it in clear in the database files (WAL included), nor in the logs of the platform.
  const files = controlFiles();
  for (const m of [argvMarker, envMarker, outMarker, dirMarker, msgMarker]) {
    assert.equal(files.includes(m), false, `${m} found in clear in the control plane's database files`);
    assert.equal(files.includes(Buffer.from(m).toString('base64').slice(0, 16)), false, `${m} found base64-encoded in the database files`);
  }
  for (const name of ['control.log', 'agent.log']) {
    const text = readFileSync(join(cluster.dataDir, 'run', name), 'utf8');
    for (const m of [argvMarker, envMarker, outMarker]) assert.equal(text.includes(m), false, `${m} in ${name}`);
  }
  void bad;

  // Retention: output deleted, command, env, cwd and message shredded; ids, statuses, times and receipts stay.
  await waitFor(async () => (await cluster.client.getJob(r.job.id)).expiredAt !== null, 30_000);
  const expired = await cluster.client.getJob(r.job.id);
  assert.deepEqual(expired.command, []);
  assert.equal(expired.cwd, '');
  assert.equal(expired.message, null);
  assert.equal(expired.status, 'failed');
  assert.equal(expired.exitCode, 3);
  assert.ok(expired.wipe, 'the wipe receipt stays');
  assert.deepEqual((await cluster.client.logs(r.job.id)).chunks, []);
});
