// Least privilege, for real: a job's token as the job sees it (file, mode, claims, absent from every environment), what it
// may and may not do at the data service through the cell's gateway, revocation when the job ends, forged tokens, refresh,
// the encrypted object store, the hash-chained audit log, and the gateway's DNS resolver.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { createSocket, type Socket } from 'node:dgram';
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import dnsPacket from 'dns-packet';
import { SignJWT, decodeJwt, decodeProtectedHeader } from 'jose';
import { CleanroomClient } from '../../src/sdk/client.js';
import { TestCluster } from '../support/cluster.js';

const TTL_S = 20;
let cluster: TestCluster;
let upstream: Socket;
let other: CleanroomClient;

// A stand-in for "the internet's" DNS, on loopback: the gateway resolver forwards names it does not own here.
const UPSTREAM_RECORDS: Record<string, string[]> = { 'allowed.test': ['203.0.113.5', '198.51.100.9'], 'blocked.test': ['198.51.100.10'] };

before(async () => {
  upstream = createSocket('udp4');
  upstream.on('message', (msg, rinfo) => {
    const q = dnsPacket.decode(msg);
    const name = q.questions?.[0]?.name ?? '';
    const answers = (UPSTREAM_RECORDS[name] ?? []).map((data) => ({ type: 'A' as const, name, ttl: 30, data }));
    upstream.send(dnsPacket.encode({ id: q.id, type: 'response', flags: dnsPacket.RECURSION_DESIRED | dnsPacket.RECURSION_AVAILABLE, questions: q.questions, answers }), rinfo.port, rinfo.address);
  });
  await new Promise<void>((r) => upstream.bind(0, '127.0.0.1', r));
  cluster = await TestCluster.start({
    config: {
      tokens: { ttlSeconds: TTL_S, refreshAt: 0.5 },
      data: { maxObjectMiB: 1 },
      network: { dnsUpstream: `127.0.0.1:${upstream.address().port}` },
      agent: { pool: [{ runtime: 'runc', class: 'small', warm: 2 }] },
    },
  });
  await cluster.client.setNetworkPolicy({ allow: [{ cidr: '203.0.113.0/24', port: 443 }] });
  await cluster.client.putObject('in/data.txt', 'A-input');
  await cluster.client.putObject('other/secret.txt', 'A-other');
  // A second workspace with an object at the same key: a workload of the first must never see it.
  await cluster.client.createWorkspace({ name: 'tenant-b' });
  const bKey = await cluster.client.createApiKey({ workspace: 'tenant-b', name: 'b' });
  other = new CleanroomClient({ url: cluster.url, apiKey: bKey.key, ca: cluster.ca });
  await other.putObject('in/data.txt', 'B-secret');
});

after(async () => {
  other?.close();
  await cluster?.stop();
  upstream?.close();
});

/** PROBE runs inside the cell: reports its token file, scans every process's environment and argv for the token, then makes the requested calls. */
const PROBE = String.raw`
const fs = require('fs'), https = require('https'), dns = require('dns').promises;
const P = JSON.parse(process.env.PROBE);
const ca = fs.readFileSync(process.env.CLEANROOM_CA_FILE);
const file = process.env.CLEANROOM_TOKEN_FILE;
const token = () => fs.readFileSync(file, 'utf8');
const call = (m, path, body) => new Promise((res) => {
  const r = https.request(process.env.CLEANROOM_DATA_URL + path, { method: m, ca, headers: { authorization: 'Bearer ' + token() } }, (s) => {
    let d = ''; s.on('data', (c) => (d += c)); s.on('end', () => { let b = d; try { b = JSON.parse(d); } catch {} res({ status: s.statusCode, body: b }); });
  });
  r.on('error', (e) => res({ status: 0, body: e.message }));
  r.end(body);
});
(async () => {
  const st = fs.statSync(file), t = token(), sig = t.split('.')[2];
  const out = { mode: st.mode & 0o777, uid: st.uid, token: t, url: process.env.CLEANROOM_DATA_URL, exposed: [], steps: [], dns: {} };
  for (const p of fs.readdirSync('/proc').filter((x) => /^\d+$/.test(x)))
    for (const f of ['environ', 'cmdline']) { try { if (fs.readFileSync('/proc/' + p + '/' + f, 'latin1').includes(sig)) out.exposed.push(p + '/' + f); } catch {} }
  for (const v of Object.values(process.env)) if (v.includes(sig)) out.exposed.push('own env');
  for (const [m, path, body] of P.steps || []) { const r = await call(m, path, body); out.steps.push({ status: r.status, code: r.body && r.body.error && r.body.error.code, body: typeof r.body === 'string' ? r.body : undefined }); }
  for (const name of P.resolve || []) out.dns[name] = await dns.resolve4(name).catch((e) => e.code);
  if (P.waitMs) { await new Promise((r) => setTimeout(r, P.waitMs)); out.token2 = token(); out.after = (await call('GET', '/v1/data/objects?prefix=in/')).status; }
  console.log(JSON.stringify(out));
})();
`;

interface ProbeResult {
  mode: number;
  uid: number;
  token: string;
  url: string;
  exposed: string[];
  steps: Array<{ status: number; code?: string; body?: string }>;
  dns: Record<string, string[] | string>;
  token2?: string;
  after?: number;
}

type Step = [method: string, path: string, body?: string];

async function probe(data: Array<{ prefix: string; access: 'read' | 'read-write' }>, p: { steps?: Step[]; resolve?: string[]; waitMs?: number }): Promise<{ jobId: string; r: ProbeResult }> {
  const res = await cluster.runJob({ command: ['node', '-e', PROBE], env: { PROBE: JSON.stringify(p) }, data, memoryMiB: 256, timeoutSeconds: 60 });
  assert.equal(res.job.status, 'succeeded', `probe failed: ${res.stderr}`);
  return { jobId: res.job.id, r: JSON.parse(res.stdout) as ProbeResult };
}

/** hostCall calls the data service directly (as an attacker holding a token would) and returns status and error code. */
function hostCall(token: string, path: string, port?: number): Promise<{ status: number; code?: string }> {
  return cluster.tokenCall(token, path, port);
}

let first: { jobId: string; r: ProbeResult };

test('a job gets its own short-lived token as a 0400 file on its tmpfs, in no environment, and reaches only its scopes', async () => {
  first = await probe(
    [{ prefix: 'in/', access: 'read' }, { prefix: 'out/', access: 'read-write' }],
    {
      steps: [
        ['GET', '/v1/data/objects/in/data.txt'],
        ['PUT', '/v1/data/objects/out/result.txt', 'computed'],
        ['PUT', '/v1/data/objects/in/data.txt', 'overwrite'],
        ['GET', '/v1/data/objects/other/secret.txt'],
        ['GET', '/v1/data/objects?prefix='],
        ['GET', '/v1/data/objects?prefix=out/'],
        ['GET', '/v1/data/objects/in/../other/secret.txt'],
      ],
    },
  );
  const { r, jobId } = first;
  assert.equal(r.mode, 0o400);
  assert.equal(r.uid, 1000);
  assert.deepEqual(r.exposed, [], 'the token appears in a process environment or command line');
  assert.equal(r.url, 'https://data.cleanroom.internal');
  const header = decodeProtectedHeader(r.token);
  assert.equal(header.typ, 'at+jwt');
  assert.equal(header.alg, 'EdDSA');
  const claims = decodeJwt(r.token);
  assert.equal(claims.sub, jobId);
  assert.equal(claims.aud, 'cleanroom-data');
  assert.ok(claims.exp! - claims.iat! <= 3600);
  assert.equal(claims.exp! - claims.iat!, TTL_S);
  assert.equal(claims.scope, 'data:read:in/ data:read:out/ data:write:out/');
  const [read, write, writeRo, otherPrefix, listAll, listOut, traversal] = r.steps;
  assert.deepEqual([read!.status, read!.body], [200, 'A-input'], "its own workspace's object, never tenant B's at the same key");
  assert.equal(write!.status, 201);
  assert.deepEqual([writeRo!.status, writeRo!.code], [403, 'out_of_scope']);
  assert.deepEqual([otherPrefix!.status, otherPrefix!.code], [403, 'out_of_scope']);
  assert.deepEqual([listAll!.status, listAll!.code], [403, 'out_of_scope']);
  assert.equal(listOut!.status, 200);
  assert.ok(traversal!.status === 400 || traversal!.status === 403, `traversal answered ${traversal!.status}`);
  // What the job wrote is there for its owner; what it was refused did not change.
  assert.equal(await text(await cluster.client.getObject('out/result.txt')), 'computed');
  assert.equal(await text(await cluster.client.getObject('in/data.txt')), 'A-input');
  assert.equal(await text(await other.getObject('in/data.txt')), 'B-secret');
});

test('the token dies with its job: refused at once after the end, and never valid on the control API', async () => {
  const token = first.r.token;
  assert.deepEqual(await hostCall(token, '/v1/data/objects/in/data.txt'), { status: 401, code: 'token_revoked' });
  assert.equal((await hostCall(token, '/v1/jobs', Number(new URL(cluster.url).port))).status, 401);
  // Nor is it in the platform's logs.
  const sig = token.split('.')[2]!;
  for (const f of ['control.log', 'agent.log']) assert.ok(!readFileSync(join(cluster.dataDir, 'run', f), 'utf8').includes(sig), `the token is in ${f}`);
  const revoked = await cluster.client.listAuditEvents({ type: 'token.revoked', limit: 50 });
  assert.ok(revoked.some((e) => e.subject === first.jobId), 'no token.revoked audit event for the job');
});

test("one job's token cannot reach another job's prefix", async () => {
  const a = await probe([{ prefix: 'jobs/a/', access: 'read-write' }], { steps: [['PUT', '/v1/data/objects/jobs/a/x', 'a'], ['PUT', '/v1/data/objects/jobs/b/x', 'a'], ['GET', '/v1/data/objects?prefix=jobs/b/']] });
  assert.deepEqual(a.r.steps.map((s) => s.status), [201, 403, 403]);
  const list = await cluster.client.listObjects({ prefix: 'jobs/' });
  assert.deepEqual(list.objects.map((o) => o.key), ['jobs/a/x']);
});

test('forged tokens are refused: another signing key (even with a real kid), no signature, a foreign signature, garbage', async () => {
  const real = first.r.token;
  const kid = decodeProtectedHeader(real).kid!;
  const claims = decodeJwt(real);
  const { privateKey } = generateKeyPairSync('ed25519');
  const forge = (extra: Record<string, unknown>, header: Record<string, unknown> = {}) =>
    new SignJWT({ ...claims, exp: Math.floor(Date.now() / 1000) + 600, iat: Math.floor(Date.now() / 1000), ...extra }).setProtectedHeader({ alg: 'EdDSA', typ: 'at+jwt', kid, ...header }).sign(privateKey);
  assert.deepEqual(await hostCall(await forge({}), '/v1/data/objects/in/data.txt'), { status: 401, code: 'invalid_token' });
  const [h, p] = real.split('.');
  const none = `${Buffer.from(JSON.stringify({ alg: 'none', typ: 'at+jwt' })).toString('base64url')}.${p}.`;
  assert.deepEqual(await hostCall(none, '/v1/data/objects/in/data.txt'), { status: 401, code: 'invalid_token' });
  assert.deepEqual(await hostCall(`${h}.${p}.${randomBytes(64).toString('base64url')}`, '/v1/data/objects/in/data.txt'), { status: 401, code: 'invalid_token' });
  assert.deepEqual(await hostCall('not-a-token', '/v1/data/objects/in/data.txt'), { status: 401, code: 'invalid_token' });
  const denials = await cluster.client.listAuditEvents({ type: 'access.denied', limit: 100 });
  assert.ok(denials.filter((e) => e.details.reason === 'invalid_token').length >= 4, 'token refusals are audited');
  assert.ok(denials.some((e) => e.details.reason === 'out_of_scope'), 'scope refusals are audited');
});

test('a long job gets a fresh token before the old one expires', async () => {
  const { jobId, r } = await probe([{ prefix: 'in/', access: 'read' }], { waitMs: (TTL_S * 0.5 + 3) * 1000 });
  assert.equal(typeof r.token2, 'string', 'the probe did not read the token file a second time');
  assert.notEqual(r.token2, r.token, 'the token file was not refreshed');
  const [a, b] = [decodeJwt(r.token), decodeJwt(r.token2!)];
  assert.notEqual(a.jti, b.jti);
  assert.equal(b.sub, jobId);
  assert.ok(b.iat! > a.iat!);
  assert.equal(r.after, 200, 'the refreshed token does not work');
  const refreshed = await cluster.client.listAuditEvents({ type: 'token.refreshed', limit: 50 });
  assert.ok(refreshed.some((e) => e.subject === jobId));
  // Both of the ended job's tokens are dead.
  for (const t of [r.token, r.token2!]) assert.equal((await hostCall(t, '/v1/data/objects/in/data.txt')).code, 'token_revoked');
});

test('the gateway resolver answers platform names, and other names only with addresses the policy allows', async () => {
  const { r } = await probe([], { resolve: ['data.cleanroom.internal', 'allowed.test', 'blocked.test'] });
  assert.match(String(r.dns['data.cleanroom.internal']), /^\d+\.\d+\.\d+\.1$/);
  assert.deepEqual(r.dns['allowed.test'], ['203.0.113.5']);
  assert.equal(r.dns['blocked.test'], 'ENOTFOUND');
});

test('objects are sealed on disk; oversize bodies and bad keys are refused with nothing written', async () => {
  const marker = 'PLAINTEXT-MARKER-' + randomBytes(8).toString('hex');
  await cluster.client.putObject('big/plain.txt', marker.repeat(2000));
  const dir = join(cluster.dataDir, 'control', 'objects');
  const files = () => readdirSync(dir, { recursive: true }).map(String).filter((f) => statSync(join(dir, f)).isFile());
  const before = files();
  assert.ok(before.length > 0);
  for (const f of before) assert.ok(!readFileSync(join(dir, f)).includes(marker), `${f} holds plaintext`);
  const tooBig = await cluster.client.putObject('big/too-big.bin', randomBytes(2 * 1024 * 1024)).then(() => null, (e: { status: number; code: string }) => e);
  assert.deepEqual([tooBig?.status, tooBig?.code], [413, 'payload_too_large']);
  // Streamed without a declared length, the service stops at the limit.
  const { Readable } = await import('node:stream');
  const streamed = await cluster.client.putObject('big/streamed.bin', Readable.from([randomBytes(700_000), randomBytes(700_000)])).then(() => null, (e: { status: number; code: string }) => e);
  assert.deepEqual([streamed?.status, streamed?.code], [413, 'payload_too_large']);
  for (const bad of ['a//b', '/abs', 'x\u0000y', 'dir/']) {
    const r = await cluster.client.raw('PUT', `/v1/data/objects/${encodeURI(bad).replace(/%00/g, '%00')}`, 'x', { 'content-type': 'application/octet-stream' });
    assert.equal(r.status, 400, `key ${JSON.stringify(bad)} answered ${r.status}`);
    assert.equal((r.body as { error: { code: string } }).error.code, 'invalid_object_key');
  }
  assert.deepEqual(files().sort(), before.sort(), 'a refused upload left a file behind');
  const listed = await cluster.client.listObjects({ prefix: 'big/' });
  assert.deepEqual(listed.objects.map((o) => o.key), ['big/plain.txt']);
});

test('the audit chain verifies, and altering one stored event makes verify fail at that event', async () => {
  const types = new Set((await cluster.client.listAuditEvents({ limit: 1000 })).map((e) => e.type));
  for (const t of ['api_key.created', 'workload.created', 'cell.assigned', 'token.minted', 'token.refreshed', 'token.revoked', 'policy.changed', 'access.denied', 'wipe.done']) {
    assert.ok(types.has(t), `no ${t} event recorded`);
  }
  const ok = await cluster.cli(['audit', 'verify']);
  assert.equal(ok.code, 0, ok.stdout + ok.stderr);
  assert.match(ok.stdout, /audit chain intact/);
  if (cluster.postgres) {
    // The same on the PostgreSQL store (CLEANROOM_TEST_STORE=postgres), by someone with the database's owner role.
    const pg = cluster.postgres;
    await assert.rejects(pg.query('cleanroom', "UPDATE audit_events SET actor = 'x' WHERE seq = 3"), /append-only/);
    await pg.query('cleanroom', 'ALTER TABLE audit_events DISABLE TRIGGER audit_no_change');
    await pg.query('cleanroom', `UPDATE audit_events SET details = jsonb_set(details::jsonb, '{role}', '"member"')::text WHERE seq = 1`);
  } else {
    const db = new Database(join(cluster.dataDir, 'control', 'cleanroom.db'));
    try {
      // The platform refuses to edit history; an attacker with the file drops the guard first.
      assert.throws(() => db.prepare("UPDATE audit_events SET actor = 'x' WHERE seq = 3").run(), /append-only/);
      db.exec('DROP TRIGGER audit_no_update');
      db.prepare("UPDATE audit_events SET details = json_set(details, '$.role', 'member') WHERE seq = 1").run();
    } finally {
      db.close();
    }
  }
  const broken = await cluster.cli(['audit', 'verify']);
  assert.equal(broken.code, 1);
  assert.match(broken.stdout, /BROKEN at event 1\b/);
});

async function text(s: AsyncIterable<Buffer>): Promise<string> {
  const parts: Buffer[] = [];
  for await (const c of s) parts.push(c);
  return Buffer.concat(parts).toString('utf8');
}
