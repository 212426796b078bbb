// Per-workspace egress policy through the API, SDK and CLI: default deny, validation with stable codes that keeps the
// previous policy, independence of workspaces, the snapshot a new job takes, and the denied-connections listing.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { CleanroomClient, type DeniedConnection, type EgressPolicy } from '../../src/sdk/client.js';
import { TestCluster } from '../support/cluster.js';
import { waitFor } from '../support/host.js';

let cluster: TestCluster;
before(async () => {
  cluster = await TestCluster.start({ config: { agent: { pool: [{ runtime: 'runc', class: 'small', warm: 1 }] } } });
});
after(async () => {
  await cluster?.stop();
});

const json = { 'content-type': 'application/json' };
const DENY_ALL = { allow: [], dryRun: false };
const put = (body: unknown, client = cluster.client) => client.raw('PUT', '/v1/network/policy', JSON.stringify(body), json);

test('a workspace starts with no egress at all', async () => {
  // A workspace of its own: the cluster's default workspace is changed by the tests below, whatever order they run in.
  const ws = await cluster.client.createWorkspace({ name: 'net-fresh' });
  const key = await cluster.client.createApiKey({ workspace: ws.id, name: 'fresh' });
  const fresh = new CleanroomClient({ url: cluster.url, ca: cluster.ca, apiKey: key.key });
  try {
    assert.deepEqual(await fresh.getNetworkPolicy(), DENY_ALL);
    const r = await cluster.cli(['network', 'policy', 'get'], { CLEANROOM_API_KEY: key.key });
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /all egress denied/);
    assert.match(r.stdout, /dry-run: off/);
  } finally {
    fresh.close();
  }
});

test('a valid policy is stored normalised and read back (SDK)', async () => {
  const set = await cluster.client.setNetworkPolicy({ allow: [{ cidr: '203.0.113.0/24', port: 443 }, { cidr: '198.51.100.7' }, { cidr: '192.0.2.0/24', protocol: 'udp', port: '5000-5010' }], dryRun: true });
  const expected: EgressPolicy = {
    allow: [
      { cidr: '203.0.113.0/24', protocol: 'tcp', port: 443 },
      { cidr: '198.51.100.7/32', protocol: 'any' },
      { cidr: '192.0.2.0/24', protocol: 'udp', port: '5000-5010' },
    ],
    dryRun: true,
  };
  assert.deepEqual(set, expected);
  assert.deepEqual(await cluster.client.getNetworkPolicy(), expected);
  // What GET returns is a valid PUT body: a policy can be fetched, edited and sent back.
  assert.deepEqual(await cluster.client.setNetworkPolicy(expected), expected);
});

test('the CLI sets a policy from --allow, --dry-run and --file and prints it', async () => {
  const set = await cluster.cli(['network', 'policy', 'set', '--allow', '203.0.113.0/24:443', '--allow', '198.51.100.0/24:8000-8100/udp', '--allow', '192.0.2.1/icmp']);
  assert.equal(set.code, 0, set.stderr);
  assert.match(set.stdout, /ALLOW CIDR\s+PROTO\s+PORT/);
  assert.match(set.stdout, /198\.51\.100\.0\/24\s+udp\s+8000-8100/);
  assert.match(set.stdout, /dry-run: off/);
  const got = await cluster.cli(['network', 'policy', 'get', '--json']);
  assert.equal(got.code, 0, got.stderr);
  const policy = JSON.parse(got.stdout) as unknown;
  assert.deepEqual(policy, {
    allow: [
      { cidr: '203.0.113.0/24', protocol: 'tcp', port: 443 },
      { cidr: '198.51.100.0/24', protocol: 'udp', port: '8000-8100' },
      { cidr: '192.0.2.1/32', protocol: 'icmp' },
    ],
    dryRun: false,
  });
  assert.deepEqual(await cluster.client.getNetworkPolicy(), policy);
  const dir = mkdtempSync('/tmp/cleanroom-policy-');
  try {
    const file = join(dir, 'policy.json');
    writeFileSync(file, JSON.stringify({ allow: [{ cidr: '203.0.113.0/24', protocol: 'tcp', port: 443 }] }));
    const fromFile = await cluster.cli(['network', 'policy', 'set', '--file', file, '--allow', '198.51.100.9:53/udp', '--dry-run', '--json']);
    assert.equal(fromFile.code, 0, fromFile.stderr);
    assert.deepEqual(JSON.parse(fromFile.stdout), { allow: [{ cidr: '203.0.113.0/24', protocol: 'tcp', port: 443 }, { cidr: '198.51.100.9/32', protocol: 'udp', port: 53 }], dryRun: true });
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('bad policies are 422 invalid_policy with the validator code and path, and the previous policy stays in force', async () => {
  const before = await cluster.client.setNetworkPolicy({ allow: [{ cidr: '203.0.113.0/24', port: 443 }] });
  const cases: Array<[unknown, string, string]> = [
    [{ allow: [{ cidr: '203.0.113.300/24' }] }, 'INVALID_CIDR', 'allow[0].cidr'],
    [{ allow: [{ cidr: '203.0.113.1/24' }] }, 'NON_CANONICAL_CIDR', 'allow[0].cidr'],
    [{ allow: [{ cidr: '203.0.113.0/24', port: 70000 }] }, 'INVALID_PORT', 'allow[0].port'],
    [{ allow: [{ cidr: '203.0.113.0/24', port: '90-80' }] }, 'INVALID_PORT', 'allow[0].port'],
    [{ allow: [{ cidr: '203.0.113.0/24' }, { cidr: '198.51.100.0/24', protocol: 'sctp' }] }, 'INVALID_PROTOCOL', 'allow[1].protocol'],
    [{ allow: [{ cidr: '203.0.113.0/24', protocol: 'icmp', port: 1 }] }, 'PORT_NOT_ALLOWED', 'allow[0].port'],
    [{ allow: [{ cidr: '169.254.169.254/32' }] }, 'FORBIDDEN_DESTINATION', 'allow[0].cidr'],
    [{ allow: [{ cidr: '169.254.0.0/16', port: 80 }] }, 'FORBIDDEN_DESTINATION', 'allow[0].cidr'],
    [{ allow: [{ cidr: '10.88.0.0/24' }] }, 'FORBIDDEN_DESTINATION', 'allow[0].cidr'],
    [{ allow: [{ cidr: '127.0.0.1' }] }, 'FORBIDDEN_DESTINATION', 'allow[0].cidr'],
  ];
  for (const [body, code, path] of cases) {
    const r = await put(body);
    assert.equal(r.status, 422, JSON.stringify(r.body));
    const err = (r.body as { error: { code: string; message: string; details: unknown } }).error;
    assert.equal(err.code, 'invalid_policy');
    assert.deepEqual(err.details, { code, path });
    assert.ok(err.message.includes(path), err.message);
    assert.deepEqual(await cluster.client.getNetworkPolicy(), before, `after ${JSON.stringify(body)}`);
  }
  // Shape errors (unknown fields, wrong types) are 400 invalid_request like every other body.
  for (const body of [{ allow: [{ cidr: '203.0.113.0/24', ports: 443 }] }, { allow: [], dryrun: true }, { allow: [{ cidr: 5 }] }, { dryRun: true }]) {
    const r = await put(body);
    assert.equal(r.status, 400, JSON.stringify(r.body));
    assert.equal((r.body as { error: { code: string } }).error.code, 'invalid_request');
  }
  assert.deepEqual(await cluster.client.getNetworkPolicy(), before);
  const cli = await cluster.cli(['network', 'policy', 'set', '--allow', '203.0.113.0/24:70000']);
  assert.equal(cli.code, 1);
  assert.match(cli.stderr, /^cleanroom: allow\[0\]\.port: .* \[invalid_policy\]\n$/);
  const cli2 = await cluster.cli(['network', 'policy', 'set', '--allow', '169.254.169.254']);
  assert.equal(cli2.code, 1);
  assert.match(cli2.stderr, /169\.254\.0\.0\/16.*\[invalid_policy\]/);
  assert.deepEqual(await cluster.client.getNetworkPolicy(), before);
});

test("each workspace has its own policy; any key sets its own workspace's", async () => {
  const mine = await cluster.client.setNetworkPolicy({ allow: [{ cidr: '203.0.113.0/24' }] });
  const ws = await cluster.client.createWorkspace({ name: 'net-other' });
  const key = await cluster.client.createApiKey({ workspace: ws.id, name: 'n' });
  const other = new CleanroomClient({ url: cluster.url, ca: cluster.ca, apiKey: key.key });
  try {
    assert.deepEqual(await other.getNetworkPolicy(), DENY_ALL);
    const theirs = await other.setNetworkPolicy({ allow: [{ cidr: '198.51.100.0/24', protocol: 'udp', port: 53 }], dryRun: true });
    assert.deepEqual(await other.getNetworkPolicy(), theirs);
    assert.deepEqual(await cluster.client.getNetworkPolicy(), mine);
    const job = await cluster.client.createJob({ command: ['true'] });
    const r = await other.raw('GET', `/v1/network/denied?jobId=${job.id}`);
    assert.equal(r.status, 404, "another workspace's job is not found");
    assert.deepEqual(await other.listDeniedConnections(), []);
  } finally {
    other.close();
  }
});

test('a job created after a change carries the new policy; earlier jobs keep theirs', async () => {
  const first = await cluster.client.setNetworkPolicy({ allow: [{ cidr: '203.0.113.0/24', port: 443 }] });
  const j1 = await cluster.client.createJob({ command: ['true'] });
  assert.deepEqual(j1.egress, first);
  const second = await cluster.client.setNetworkPolicy({ allow: [], dryRun: true });
  const j2 = await cluster.client.createJob({ command: ['true'] });
  assert.deepEqual(j2.egress, second);
  assert.deepEqual((await cluster.client.getJob(j1.id)).egress, first);
  const shown = await cluster.cli(['jobs', 'get', j2.id]);
  assert.equal(shown.code, 0, shown.stderr);
  assert.match(shown.stdout, /egress\s+deny all \(dry-run/);
});

// KNOCK tries a port of the cell's own gateway that no cell may reach: the host drops (and records) it whatever the policy,
// so nothing leaves the machine. Prints the gateway's address.
const KNOCK = String.raw`
import socket
gw = socket.gethostbyname('data.cleanroom.internal')
s = socket.socket()
s.settimeout(3)
try:
    s.connect((gw, 9))
    print('connected')
except OSError as e:
    print(gw)
`;

test('denied connections are listed per workspace (SDK and CLI), with limits checked', async () => {
  const knock = await cluster.runJob({ command: ['python3', '-c', KNOCK] });
  assert.equal(knock.job.status, 'succeeded', knock.stderr);
  const gateway = knock.stdout.trim();
  assert.match(gateway, /^\d+\.\d+\.\d+\.1$/, 'the knock on a closed gateway port got through');
  let denied: DeniedConnection[] = [];
  await waitFor(async () => (denied = await cluster.client.listDeniedConnections({ jobId: knock.job.id, limit: 5 })).length > 0, 20_000, () => 'no denial recorded');
  const distinct = new Set(denied.map(({ jobId, cellId, action, destination, protocol, port }) => JSON.stringify({ jobId, cellId, action, destination, protocol, port })));
  assert.deepEqual([...distinct].map((d) => JSON.parse(d) as unknown), [{ jobId: knock.job.id, cellId: knock.job.cellId, action: 'denied', destination: gateway, protocol: 'tcp', port: 9 }]);
  const bad = await cluster.client.raw('GET', '/v1/network/denied?limit=0');
  assert.equal(bad.status, 400);
  assert.equal((bad.body as { error: { code: string } }).error.code, 'invalid_request');
  const r = await cluster.cli(['network', 'denied', '--limit', '5']);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /^TIME\s+JOB\s+ACTION\s+DESTINATION\s+PROTO\s+PORT/);
  assert.match(r.stdout, new RegExp(`\\s${knock.job.id}\\s+denied\\s+${gateway.replace(/\./g, '\\.')}\\s+tcp\\s+9\\n`));
  const missing = await cluster.cli(['network', 'denied', '--job', 'job_nope']);
  assert.equal(missing.code, 1);
  assert.match(missing.stderr, /\[not_found\]/);
});

test('the OpenAPI document lists the network operations and invalid_policy', async () => {
  const doc = (await cluster.client.raw('GET', '/openapi.json')).body as { paths: Record<string, Record<string, { operationId: string; responses: Record<string, { description: string }> }>> };
  assert.equal(doc.paths['/v1/network/policy']?.get?.operationId, 'getNetworkPolicy');
  assert.equal(doc.paths['/v1/network/policy']?.put?.operationId, 'setNetworkPolicy');
  assert.equal(doc.paths['/v1/network/denied']?.get?.operationId, 'listDeniedConnections');
  assert.match(doc.paths['/v1/network/policy']?.put?.responses['422']?.description ?? '', /invalid_policy/);
});
