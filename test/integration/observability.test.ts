// Operators see the plane: Prometheus metrics for platform admins only, and one structured JSON log line per request
// that never carries a key, a token, a workload's env or its output.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { request } from 'node:https';
import { parseApiKey } from '../../src/control/auth/api-keys.js';
import { TestCluster } from '../support/cluster.js';

let cluster: TestCluster;
before(async () => {
  cluster = await TestCluster.start();
});
after(async () => {
  await cluster?.stop();
});

function get(path: string, apiKey: string): Promise<{ status: number; type: string; body: string; requestId: string }> {
  return new Promise((resolve, reject) => {
    const req = request(new URL(path, cluster.url), { ca: cluster.ca, headers: { authorization: `Bearer ${apiKey}` } }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, type: String(res.headers['content-type']), body: Buffer.concat(chunks).toString('utf8'), requestId: String(res.headers['x-request-id']) }));
    });
    req.on('error', reject);
    req.end();
  });
}

/** sample returns the value of one series of the exposition text, or null. */
function sample(text: string, name: string, labels: Record<string, string> = {}): number | null {
  for (const line of text.split('\n')) {
    if (!line.startsWith(name)) continue;
    const m = /^([a-z_:]+)(\{(.*)\})? (\S+)$/.exec(line);
    if (!m || m[1] !== name) continue;
    const have = Object.fromEntries([...(m[3] ?? '').matchAll(/([a-z_]+)="([^"]*)"/g)].map((x) => [x[1], x[2]]));
    if (Object.entries(labels).every(([k, v]) => have[k] === v)) return Number(m[4]);
  }
  return null;
}

test('metrics: jobs, starts, wipes, tokens and pools, for platform admins only', async () => {
  const r = await cluster.runJob({ command: ['sh', '-c', 'echo metrics-job'] });
  assert.equal(r.job.status, 'succeeded', r.stderr);
  // The wipe receipt arrives after the end.
  for (let i = 0; i < 100 && !(await cluster.client.getJob(r.job.id)).wipe; i++) await new Promise((res) => setTimeout(res, 100));

  const m = await get('/metrics', cluster.apiKey);
  assert.equal(m.status, 200, m.body);
  assert.match(m.type, /^text\/plain/);
  const ws = r.job.workspaceId;
  assert.ok((sample(m.body, 'cleanroom_jobs_ended_total', { status: 'succeeded', runtime: 'runc', workspace: ws }) ?? 0) >= 1, 'ended jobs counted');
  assert.ok((sample(m.body, 'cleanroom_job_start_seconds_count', { runtime: 'runc' }) ?? 0) >= 1, 'start latency observed');
  assert.ok((sample(m.body, 'cleanroom_wipe_seconds_count') ?? 0) >= 1, 'wipe duration observed');
  assert.ok((sample(m.body, 'cleanroom_tokens_total', { event: 'minted' }) ?? 0) >= 1, 'tokens minted');
  assert.ok((sample(m.body, 'cleanroom_tokens_total', { event: 'revoked' }) ?? 0) >= 1, 'tokens revoked');
  assert.ok((sample(m.body, 'cleanroom_cells_assigned_total', { workspace: ws, runtime: 'runc' }) ?? 0) >= 1, 'cells assigned');
  assert.equal(sample(m.body, 'cleanroom_agents_connected'), 1);
  assert.ok(sample(m.body, 'cleanroom_pool_cells', { agent: cluster.agentId, pool: 'runc/small', state: 'target' }) === 2, m.body.split('\n').filter((l) => l.startsWith('cleanroom_pool')).join('\n'));
  assert.notEqual(sample(m.body, 'cleanroom_volumes', { agent: cluster.agentId, state: 'warm' }), null);
  assert.notEqual(sample(m.body, 'cleanroom_control_process_resident_memory_bytes'), null, 'process metrics');

  // A member of a workspace may not read the plane's metrics.
  assert.equal((await cluster.cli(['workspaces', 'create', 'metrics-team'])).code, 0);
  const created = await cluster.cli(['keys', 'create', '--workspace', 'metrics-team', '--name', 'viewer', '--json']);
  assert.equal(created.code, 0, created.stderr);
  const memberKey = (JSON.parse(created.stdout) as { key: string }).key;
  const refused = await get('/metrics', memberKey);
  assert.equal(refused.status, 403);
  assert.equal((JSON.parse(refused.body) as { error: { code: string } }).error.code, 'forbidden');
});

test('logs: one JSON line per request with its id; no key, token, env value or output', async () => {
  const secretEnv = 'env-value-7f3a9c-never-logged';
  const secretOut = 'output-5be21d-never-logged';
  const r = await cluster.runJob({ command: ['sh', '-c', `echo ${secretOut}; cat "$CLEANROOM_TOKEN_FILE" > /dev/null`], env: { SECRET_THING: secretEnv } });
  assert.equal(r.job.status, 'succeeded', r.stderr);
  const answered = await get(`/v1/jobs/${r.job.id}`, cluster.apiKey);
  assert.equal(answered.status, 200);
  assert.match(answered.requestId, /^[0-9a-f-]{36}$/);
  await new Promise((res) => setTimeout(res, 300)); // the log line is written after the response

  const lines = ['control', 'agent'].flatMap((n) => readFileSync(join(cluster.dataDir, 'run', `${n}.log`), 'utf8').split('\n').filter(Boolean));
  const records = lines.filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as Record<string, unknown>);
  const line = records.find((x) => x.requestId === answered.requestId);
  assert.ok(line, 'the request is logged under the id it was answered with');
  assert.equal(line.msg, 'request');
  assert.equal(line.route, '/v1/jobs/:id');
  assert.deepEqual(line.ids, { id: r.job.id });
  assert.equal(line.status, 200);
  assert.equal(line.workspaceId, r.job.workspaceId);
  assert.equal(typeof line.keyId, 'string');

  const all = lines.join('\n');
  // The whole secret (base64url: it may itself contain '_', so the key is parsed, never split on '_').
  const apiSecret = parseApiKey(cluster.apiKey)!.secret;
  for (const [what, secret] of [['env value', secretEnv], ['output', secretOut], ['API key secret', apiSecret], ['API key', cluster.apiKey]] as const) {
    assert.ok(!all.includes(secret), `the ${what} appears in a log`);
  }
  assert.ok(!/eyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}\./.test(all), 'a JWT appears in a log');
});
