// A seeded fuzz of both listeners: every operation of the served OpenAPI document (and junk routes) on the API port, the data
// routes and JWKS (and everything else) on the data port, with an admin key, another workspace's key, a workload token, and
// garbage credentials; with damaged paths, queries, headers, framing and bodies, over kept-alive connections and over raw TLS
// where Node's client would refuse to send. Every answer must be below 500, every refusal in the documented error shape with a
// registered code, nothing may carry a stack trace, an internal path, a credential or another tenant's data, and nothing
// without a valid credential may succeed except the public routes. Replay: FUZZ_SEED=<seed> [FUZZ_ONLY=<i,j…>]; FUZZ_DUMP=1
// prints each request, FUZZ_PROFILE=1 the slowest. The requests themselves come from test/support/api-requests.ts.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { Agent, request as httpsRequest } from 'node:https';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { ERROR_CODES } from '../../src/shared/errors.js';
import { CleanroomClient } from '../../src/sdk/client.js';
import { isAlive, TestCluster } from '../support/cluster.js';
import { opsFromDoc, RequestGenerator, requestPath, type Cred, type CredKind, type OpenApiDoc, type Op, type Spec } from '../support/api-requests.js';
import { rawExchange, type RawResponse, type RawTarget } from '../support/raw-http.js';

const SEED = Number(process.env.FUZZ_SEED ?? 20_261_204);
const ONLY = process.env.FUZZ_ONLY ? process.env.FUZZ_ONLY.split(',').map(Number) : null;
const REQUESTS = Number(process.env.FUZZ_REQUESTS ?? 10_400);
const CONCURRENCY = 16;
const PROFILE = process.env.FUZZ_PROFILE === '1';
const REQUEST_TIMEOUT_MS = 30_000;
interface Outcome {
  responses: Array<{ status: number; body: Buffer; stream: boolean }>;
  error: string | null;
  /** The request went out on a kept-alive connection used before (which the server may have closed meanwhile). */
  reused?: boolean;
}

let cluster: TestCluster;
let ops: Op[];
let creds: { admin: Cred; tenant: Cred; token: Cred; garbage: Cred[] };
let targets: Record<'api' | 'data', RawTarget>;
/** Strings only their own workspace may ever see, and strings nobody may ever see in a response. */
let adminSecrets: string[];
let tenantSecrets: string[];
let neverShown: string[];
let ids: { realJob: string; tokenJob: string; sacrificialKey: string };
let tenant: CleanroomClient;

before(async () => {
  cluster = await TestCluster.start({ config: { data: { maxObjectMiB: 1 }, agent: { pool: [{ runtime: 'runc', class: 'small', warm: 2 }] } } });
  const u = new URL(cluster.url);
  targets = { api: { host: u.hostname, port: Number(u.port), ca: cluster.ca }, data: { host: u.hostname, port: cluster.dataPort, ca: cluster.ca } };
  ops = await loadOps();
  const c = cluster.client;

  await c.createWorkspace({ name: 'fuzz-tenant' });
  const tenantKey = await c.createApiKey({ workspace: 'fuzz-tenant', name: 'tenant' });
  tenant = new CleanroomClient({ url: cluster.url, ca: cluster.ca, apiKey: tenantKey.key });
  const revoked = await c.createApiKey({ workspace: 'fuzz-tenant', name: 'revoked' });
  await c.raw('DELETE', `/v1/api-keys/${revoked.id}`);
  const sacrificial = await c.createApiKey({ workspace: 'fuzz-tenant', name: 'sacrificial' });

  const canary = `canary-admin-${Math.random().toString(36).slice(2)}`;
  const tenantCanary = `canary-tenant-${Math.random().toString(36).slice(2)}`;
  await c.putObject('canary/secret.txt', canary);
  await tenant.putObject('fuzz/tenant.txt', tenantCanary);

  // A finished job, a job that shows its token and keeps it alive for the whole run, and a revoked token.
  const real = await cluster.runJob({ command: ['echo', 'fuzz'] });
  assert.equal(real.job.status, 'succeeded');
  const showToken = ['sh', '-c', 'cat "$CLEANROOM_TOKEN_FILE"; echo'];
  const revokedToken = (await cluster.runJob({ command: showToken, data: [{ prefix: 'fuzz/', access: 'read-write' }] })).stdout.trim();
  const tokenJob = await c.createJob({ command: ['sh', '-c', `${showToken[2]}; sleep 900`], data: [{ prefix: 'fuzz/', access: 'read-write' }], timeoutSeconds: 1200 });
  const { token, chunkB64 } = await readToken(tokenJob.id);

  const adminKey = cluster.apiKey;
  const adminKeyId = adminKey.split('_')[1]!;
  const [h, p, sig] = token.split('.') as [string, string, string];
  const claims = JSON.parse(Buffer.from(p, 'base64url').toString()) as Record<string, unknown>;
  const b64 = (o: object) => Buffer.from(JSON.stringify(o)).toString('base64url');
  const garbage = (label: string, value: string | null): Cred => ({ label, kind: 'garbage', value });
  creds = {
    admin: { label: 'admin', kind: 'admin', value: `Bearer ${adminKey}` },
    tenant: { label: 'tenant', kind: 'tenant', value: `Bearer ${tenantKey.key}` },
    token: { label: 'token', kind: 'token', value: `Bearer ${token}` },
    garbage: [
      garbage('unknown-key', `Bearer crk_0123456789abcdef_${'A'.repeat(43)}`),
      garbage('wrong-secret', `Bearer crk_${adminKeyId}_${'B'.repeat(43)}`),
      garbage('empty-secret', `Bearer crk_${adminKeyId}_`),
      garbage('revoked-key', `Bearer ${revoked.key}`),
      garbage('revoked-token', `Bearer ${revokedToken}`),
      garbage('forged-signature', `Bearer ${h}.${p}.${sig.slice(0, -4)}${sig.slice(-4) === 'AAAA' ? 'BBBB' : 'AAAA'}`),
      garbage('alg-none', `Bearer ${b64({ ...(JSON.parse(Buffer.from(h, 'base64url').toString()) as object), alg: 'none' })}.${p}.`),
      garbage('other-claims', `Bearer ${h}.${b64({ ...claims, scope: 'data:read: data:write:', sub: 'job_other' })}.${sig}`),
      garbage('lowercase-scheme', `bearer ${adminKey}`),
      garbage('trailing-junk', `Bearer ${adminKey} x`),
      garbage('double-space', `Bearer  ${adminKey}`),
      garbage('basic', 'Basic YWRtaW46YWRtaW4='),
      garbage('scheme-only', 'Bearer'),
      garbage('empty', ''),
      garbage('hello', 'Bearer hello'),
      garbage('huge', `Bearer ${'A'.repeat(12_000)}`),
      garbage('none', null),
    ],
  };
  adminSecrets = [canary, chunkB64];
  tenantSecrets = [tenantCanary];
  neverShown = [adminKey.split('_').slice(2).join('_'), tenantKey.key.split('_').slice(2).join('_'), sig];
  ids = { realJob: real.job.id, tokenJob: tokenJob.id, sacrificialKey: sacrificial.id };
});

after(async () => {
  tenant?.close();
  await cluster?.stop();
});

async function loadOps(): Promise<Op[]> {
  const r = await cluster.client.raw('GET', '/openapi.json');
  assert.equal(r.status, 200);
  return opsFromDoc(r.body as OpenApiDoc);
}

async function readToken(jobId: string): Promise<{ token: string; chunkB64: string }> {
  for (let i = 0; i < 300; i++) {
    const logs = (await cluster.client.raw('GET', `/v1/jobs/${jobId}/logs`)).body as { chunks: Array<{ data: string }> };
    const text = logs.chunks.map((ch) => Buffer.from(ch.data, 'base64').toString()).join('');
    if (text.includes('\n')) return { token: text.trim(), chunkB64: logs.chunks[0]!.data };
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error('the token job printed no token');
}

// ---- sending ------------------------------------------------------------------------------------------------------------

const agent = new Agent({ keepAlive: true, maxSockets: CONCURRENCY });
/** retries counts requests sent again on a fresh connection after a reused kept-alive one failed without an answer (it may
 *  have reached its keep-alive timeout just then); any other failure to answer counts against the server. */
let retries = 0;

function send(spec: Spec): Promise<Outcome> {
  if (spec.raw) return sendRaw(spec);
  return sendAgent(spec).then((o) => {
    if (!o.error || o.responses.length > 0 || !o.reused) return o;
    retries++;
    return sendAgent(spec, false);
  });
}

function sendAgent(spec: Spec, keepAlive = true): Promise<Outcome> {
  const t = targets[spec.port];
  return new Promise((resolve) => {
    // Repeated names as arrays, so that duplicates go out as separate lines (and Node still adds Host).
    const headers: Record<string, string[]> = {};
    for (const [k, v] of spec.headers) if (k !== 'host') (headers[k] ??= []).push(v);
    // Node's client frames a body of GET, HEAD, DELETE, OPTIONS and TRACE with no Content-Length unless told (the server
    // would read it as the next request).
    if (spec.body && spec.body.length > 0) headers['content-length'] = [String(spec.body.length)];
    let req;
    try {
      req = httpsRequest({ host: t.host, port: t.port, ca: t.ca, method: spec.method, path: spec.target, headers, agent: keepAlive ? agent : false }, (res) => {
        if ((res.headers['content-type'] ?? '').startsWith('text/event-stream')) {
          res.destroy();
          return resolve({ responses: [{ status: res.statusCode ?? 0, body: Buffer.alloc(0), stream: true }], error: null });
        }
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => resolve({ responses: [{ status: res.statusCode ?? 0, body: Buffer.concat(chunks), stream: false }], error: null }));
        res.on('error', (e) => resolve({ responses: [], error: `response: ${e.message}` }));
      });
    } catch {
      // Node's client refused the request itself: send it raw.
      return resolve(sendRaw({ ...spec, raw: true }));
    }
    req.setTimeout(REQUEST_TIMEOUT_MS, () => req.destroy(new Error('client timeout')));
    req.on('error', (e: NodeJS.ErrnoException) => resolve({ responses: [], error: e.code ?? e.message, reused: req.reusedSocket }));
    req.end(spec.body ?? undefined);
  });
}

async function sendRaw(spec: Spec): Promise<Outcome> {
  let bytes = spec.rawBytes;
  if (!bytes) {
    const b = spec.body ?? Buffer.alloc(0);
    const hs = [...spec.headers, ...(b.length || ['POST', 'PUT'].includes(spec.method) ? [['content-length', String(b.length)] as [string, string]] : []), ['connection', 'close'] as [string, string]];
    bytes = Buffer.concat([Buffer.from(`${spec.method} ${spec.target} HTTP/1.1\r\n${hs.map(([k, v]) => `${k}: ${v}\r\n`).join('')}\r\n`, 'utf8'), b]);
  }
  // Damaged framing may leave the connection open (kept alive, or waiting for the rest): what came within a moment counts.
  const x = await rawExchange(targets[spec.port], bytes, { head: spec.method === 'HEAD', endAfterWrite: spec.endAfterWrite, settleMs: 300, timeoutMs: REQUEST_TIMEOUT_MS });
  return { responses: x.responses.map((r: RawResponse) => ({ status: r.status, body: r.body, stream: r.stream })), error: x.timedOut ? 'client timeout' : x.responses.length ? null : `${x.error ?? 'closed'} after ${x.received.length} bytes ${JSON.stringify(x.received.subarray(0, 80).toString('latin1'))}` };
}

// ---- checks -------------------------------------------------------------------------------------------------------------

const INTERNAL = /\n\s+at |\bat [\w.<>]+ \(|node_modules|\/work\/|\/dist\/|\/src\/(control|shared|agent|sdk)|file:\/\/|\/var\/tmp\/cleanroom|\/var\/lib\/cleanroom|\.[jt]s:\d+/;

/** routeOf is the documented operation a request reaches, if any. */
function routeOf(spec: Spec): Op | null {
  const path = requestPath(spec.target);
  if (path === null) return null;
  return ops.find((o) => (o.method === spec.method || (spec.method === 'HEAD' && o.method === 'GET')) && o.pattern.test(path)) ?? null;
}

/** problems lists everything wrong with one outcome. */
function problems(spec: Spec, out: Outcome): string[] {
  const found: string[] = [];
  if (out.responses.length === 0) return [`no response (${out.error ?? '?'})`];
  const op = routeOf(spec);
  for (const [n, r] of out.responses.entries()) {
    const text = r.body.toString('latin1');
    if (r.status >= 500) found.push(`status ${r.status}`);
    // Nothing here is sent slowly: a missed deadline means the server stalled (e.g. behind an unread body on a kept-alive
    // connection).
    if (r.status === 408) found.push('408: the server waited for a request that had been sent in full');
    if (INTERNAL.test(text)) found.push(`internal detail in body: ${INTERNAL.exec(text)![0]}`);
    for (const s of neverShown) if (text.includes(s)) found.push('a credential in the body');
    if (spec.cred.kind !== 'admin' && !spec.anyValidCred.includes('admin')) for (const s of adminSecrets) if (text.includes(s)) found.push("the admin workspace's data leaked");
    if (spec.cred.kind !== 'tenant' && !spec.anyValidCred.includes('tenant')) for (const s of tenantSecrets) if (text.includes(s)) found.push("the tenant's data leaked");
    if (r.status >= 400 && spec.method !== 'HEAD') {
      const shape = errorShapeProblem(r.status, r.body);
      if (shape) found.push(shape);
    }
    // Later responses on a raw connection answer the bytes after the first request (pipelined junk, a short content-length).
    if (n === 0 && r.status >= 200 && r.status < 300) {
      const onDataPort = spec.port === 'data';
      if (onDataPort && op && !op.data) found.push(`the data port served ${op.operationId}`);
      const valid = (k: CredKind) => spec.anyValidCred.includes(k);
      const keyed = valid('admin') || valid('tenant');
      if (!op) found.push('2xx for no documented route');
      else if (!op.isPublic && !keyed && !(valid('token') && op.data)) found.push(`auth bypass: ${op.operationId} answered ${r.status} without a valid credential`);
      else if (op.adminOnly && !valid('admin')) found.push(`privilege escalation: ${op.operationId} answered ${r.status} without an admin key`);
      else if (op.data && !op.isPublic && !keyed && !inTokenScope(spec)) found.push(`scope bypass: ${op.operationId} answered ${r.status} outside the token's scope`);
    }
  }
  return found;
}

/** inTokenScope: the object or prefix of a data request lies in the token's scope (fuzz/). */
function inTokenScope(spec: Spec): boolean {
  const path = requestPath(spec.target) ?? '';
  if (path.startsWith('/v1/data/objects/')) return path.slice('/v1/data/objects/'.length).startsWith('fuzz/');
  const prefix = new URLSearchParams(spec.target.split('?')[1] ?? '').get('prefix');
  return prefix !== null && prefix.startsWith('fuzz/');
}

function errorShapeProblem(status: number, body: Buffer): string | null {
  let parsed: unknown;
  try {
    parsed = JSON.parse(body.toString('utf8'));
  } catch {
    return `${status} body is not JSON: ${JSON.stringify(body.toString('latin1').slice(0, 120))}`;
  }
  const top = parsed as { error?: { code?: unknown; message?: unknown } };
  if (!top || typeof top !== 'object' || Object.keys(top).join() !== 'error' || !top.error || typeof top.error !== 'object') return `${status} body is not {"error": …}: ${body.toString().slice(0, 160)}`;
  const extra = Object.keys(top.error).filter((k) => !['code', 'message', 'details'].includes(k));
  if (extra.length) return `${status} error has other fields: ${extra.join()}`;
  const code = top.error.code;
  if (typeof code !== 'string' || !(code in ERROR_CODES)) return `${status} has an unregistered code ${JSON.stringify(code)}`;
  if (ERROR_CODES[code as keyof typeof ERROR_CODES].status !== status) return `${code} came with status ${status}`;
  if (typeof top.error.message !== 'string' || top.error.message.length === 0) return `${code} has no message`;
  return null;
}

// ---- the run ------------------------------------------------------------------------------------------------------------

test(`${REQUESTS} generated requests: no 5xx, every refusal in the documented shape, no leak, no bypass`, { timeout: 600_000 }, async () => {
  const indices = ONLY ?? Array.from({ length: REQUESTS }, (_, i) => i);
  const requests = new RequestGenerator(SEED, { ops, creds, ids });
  const statuses = new Map<number, number>();
  const codes = new Map<string, number>();
  const failures: string[] = [];
  let next = 0;
  let rawCount = 0;
  const covered = new Map<string, number>();
  let responses = 0;
  const started = Date.now();
  const slow: Array<[number, string]> = [];
  await Promise.all(
    Array.from({ length: CONCURRENCY }, async () => {
      for (;;) {
        const i = indices[next++];
        if (i === undefined) return;
        const spec = requests.generate(i);
        if (process.env.FUZZ_DUMP) console.log(`#${i}`, JSON.stringify(spec.rawBytes?.toString('latin1') ?? { method: spec.method, target: spec.target, headers: spec.headers, body: spec.body?.toString('latin1') }));
        if (spec.raw) rawCount++;
        const where = `${spec.port} ${spec.note[0]}`;
        covered.set(where, (covered.get(where) ?? 0) + 1);
        const t0 = Date.now();
        const out = await send(spec);
        if (PROFILE) slow.push([Date.now() - t0, `#${i} ${spec.raw ? 'raw' : 'agent'} ${spec.method} ${spec.target.slice(0, 60)} [${spec.note.join(', ')}] ${out.responses[0]?.status ?? out.error}`]);
        for (const r of out.responses) {
          responses++;
          statuses.set(r.status, (statuses.get(r.status) ?? 0) + 1);
          if (r.status >= 400 && spec.method !== 'HEAD') {
            const code = (() => {
              try {
                return (JSON.parse(r.body.toString()) as { error: { code: string } }).error.code;
              } catch {
                return '?';
              }
            })();
            codes.set(code, (codes.get(code) ?? 0) + 1);
          }
        }
        const found = problems(spec, out);
        if (found.length) {
          const first = out.responses[0];
          failures.push(`#${i} ${spec.port} ${spec.raw ? 'raw' : 'agent'} ${JSON.stringify(spec.method)} ${JSON.stringify(spec.target.slice(0, 160))} [${spec.note.join(', ')}]: ${found.join('; ')} — ${first ? `${first.status} ${first.body.toString('latin1').slice(0, 200)}` : ''}`);
        }
      }
    }),
  );
  agent.destroy();
  if (PROFILE) for (const [ms, what] of slow.sort(([a], [b]) => b - a).slice(0, 40)) console.log(ms, what);
  const seconds = ((Date.now() - started) / 1000).toFixed(1);
  const hist = [...statuses.entries()].sort(([a], [b]) => a - b).map(([s, n]) => `${s}:${n}`).join(' ');
  const codeHist = [...codes.entries()].sort(([, a], [, b]) => b - a).map(([c, n]) => `${c}:${n}`).join(' ');
  console.log(`api-fuzz: seed ${SEED}, ${indices.length} requests (${rawCount} raw TLS) in ${seconds} s, ${responses} responses; status ${hist}; codes ${codeHist}; real jobs ${requests.budget.jobs}, workspaces ${requests.budget.workspaces}; retried ${retries}; failures ${failures.length}`);
  assert.deepEqual(failures.slice(0, 25), [], `${failures.length} failures (replay with FUZZ_SEED=${SEED} FUZZ_ONLY=<#>)`);
  if (!ONLY) {
    const missed = ops.flatMap((o) => [`api ${o.operationId}`, ...(o.data ? [`data ${o.operationId}`] : [])]).filter((w) => (covered.get(w) ?? 0) < 20);
    assert.deepEqual(missed, [], 'operations (by port) that got fewer than 20 requests');
  }
});

test('after the fuzz: both processes alive, both ports answer, the audit chain holds, and a real job still succeeds', async () => {
  for (const name of ['control', 'agent']) {
    const pid = Number(readFileSync(join(cluster.dataDir, 'run', `${name}.pid`), 'utf8'));
    assert.ok(isAlive(pid), `the ${name} process (${pid}) died`);
  }
  for (const port of [targets.api.port, targets.data.port]) {
    const health = await cluster.tokenCall('', '/.well-known/jwks.json', port);
    assert.equal(health.status, 200);
  }
  const verdict = (await cluster.client.raw('GET', '/v1/audit/verify')).body as { ok: boolean };
  assert.equal(verdict.ok, true, JSON.stringify(verdict));
  const job = await cluster.runJob({ command: ['echo', 'still serving'] });
  assert.equal(job.job.status, 'succeeded');
  assert.equal(job.stdout, 'still serving\n');
  assert.doesNotMatch(readFileSync(join(cluster.dataDir, 'run', 'control.log'), 'utf8'), /internal error/, 'the control plane logged an internal error');
  await cluster.client.cancelJob(ids.tokenJob);
});
