// Bad input gets a stable error code, a fitting status and a message that says what to fix — never a 500.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { connect } from 'node:tls';
import { CleanroomClient } from '../../src/sdk/client.js';
import { ERROR_CODES } from '../../src/shared/errors.js';
import { TestCluster } from '../support/cluster.js';
import { rawExchange } from '../support/raw-http.js';

let cluster: TestCluster;
before(async () => {
  cluster = await TestCluster.start({ config: { agent: { pool: [{ runtime: 'runc', class: 'small', warm: 1 }] } } });
});
after(async () => {
  await cluster?.stop();
});

const json = { 'content-type': 'application/json' };

async function expectError(r: Promise<{ status: number; body: unknown }>, status: number, code: string, messagePattern?: RegExp): Promise<void> {
  const res = await r;
  assert.equal(res.status, status, JSON.stringify(res.body));
  const err = (res.body as { error: { code: string; message: string } }).error;
  assert.equal(err.code, code);
  assert.ok(err.message.length > 10, 'message should say what to fix');
  assert.doesNotMatch(err.message, /\n\s+at /, 'no stack traces to users');
  if (messagePattern) assert.match(err.message, messagePattern);
}

test('invalid JSON is 400 invalid_json', async () => {
  await expectError(cluster.client.raw('POST', '/v1/jobs', '{"command": [', json), 400, 'invalid_json');
});

test('unknown fields are 400 invalid_request naming the field', async () => {
  await expectError(cluster.client.raw('POST', '/v1/jobs', JSON.stringify({ command: ['true'], privileged: true }), json), 400, 'invalid_request', /privileged/);
});

test('wrong types and an empty command are 400', async () => {
  await expectError(cluster.client.raw('POST', '/v1/jobs', JSON.stringify({ command: 'echo hi' }), json), 400, 'invalid_request', /command/);
  await expectError(cluster.client.raw('POST', '/v1/jobs', JSON.stringify({ command: [] }), json), 400, 'invalid_request', /at least one/);
  await expectError(cluster.client.raw('POST', '/v1/jobs', JSON.stringify({ command: ['a\u0000b'] }), json), 400, 'invalid_request', /NUL/);
  await expectError(cluster.client.raw('POST', '/v1/jobs', JSON.stringify({ command: ['true'], env: { CLEANROOM_TOKEN_FILE: 'x' } }), json), 400, 'invalid_request', /reserved/);
  await expectError(cluster.client.raw('POST', '/v1/jobs', JSON.stringify({ command: ['true'], cwd: '/proc/self' }), json), 400, 'invalid_request', /cwd/);
  await expectError(cluster.client.raw('POST', '/v1/jobs', JSON.stringify({ command: ['true'], cwd: '/work/../proc' }), json), 400, 'invalid_request', /cwd/);
});

test('out-of-range resources are 422 limit_exceeded; an unknown runtime is 422 unsupported_runtime', async () => {
  await expectError(cluster.client.raw('POST', '/v1/jobs', JSON.stringify({ command: ['true'], cpu: 64 }), json), 422, 'limit_exceeded', /cpu/);
  await expectError(cluster.client.raw('POST', '/v1/jobs', JSON.stringify({ command: ['true'], memoryMiB: 999999 }), json), 422, 'limit_exceeded', /memory/);
  await expectError(cluster.client.raw('POST', '/v1/jobs', JSON.stringify({ command: ['true'], timeoutSeconds: 0 }), json), 422, 'limit_exceeded', /timeout/);
  await expectError(cluster.client.raw('POST', '/v1/jobs', JSON.stringify({ command: ['true'], runtime: 'kata' }), json), 422, 'unsupported_runtime', /runc/);
});

test('a missing or wrong API key is 401; a member key on platform-admin routes is 403', async () => {
  const anon = new CleanroomClient({ url: cluster.url, ca: cluster.ca });
  await expectError(anon.raw('GET', '/v1/jobs'), 401, 'unauthenticated');
  const wrong = new CleanroomClient({ url: cluster.url, ca: cluster.ca, apiKey: 'crk_0123456789abcdef_' + 'A'.repeat(43) });
  await expectError(wrong.raw('GET', '/v1/jobs'), 401, 'unauthenticated');
  const garbage = new CleanroomClient({ url: cluster.url, ca: cluster.ca, apiKey: 'hello' });
  await expectError(garbage.raw('GET', '/v1/jobs'), 401, 'unauthenticated');
  const ws = await cluster.client.createWorkspace({ name: 'tenant-b' });
  const key = await cluster.client.createApiKey({ workspace: ws.name, name: 'b' });
  const tenant = new CleanroomClient({ url: cluster.url, ca: cluster.ca, apiKey: key.key });
  await expectError(tenant.raw('GET', '/v1/workspaces'), 403, 'forbidden');
  await expectError(tenant.raw('POST', '/v1/workspaces', JSON.stringify({ name: 'x' }), json), 403, 'forbidden');
  for (const c of [anon, wrong, garbage, tenant]) c.close();
});

test("another workspace's job is 404, never visible or cancellable", async () => {
  const mine = await cluster.client.createJob({ command: ['sleep', '5'] });
  const ws = await cluster.client.createWorkspace({ name: 'tenant-c' });
  const key = await cluster.client.createApiKey({ workspace: ws.id, name: 'c' });
  const other = new CleanroomClient({ url: cluster.url, ca: cluster.ca, apiKey: key.key });
  await expectError(other.raw('GET', `/v1/jobs/${mine.id}`), 404, 'not_found');
  await expectError(other.raw('POST', `/v1/jobs/${mine.id}/cancel`), 404, 'not_found');
  await expectError(other.raw('GET', `/v1/jobs/${mine.id}/logs`), 404, 'not_found');
  assert.equal((await other.listJobs()).length, 0);
  other.close();
  await cluster.client.cancelJob(mine.id);
});

test('workspace limits apply to its jobs; duplicate names are 409', async () => {
  const ws = await cluster.client.createWorkspace({ name: 'small-one', maxCpu: 0.5, maxMemoryMiB: 128, maxTimeoutSeconds: 10 });
  await expectError(cluster.client.raw('POST', '/v1/workspaces', JSON.stringify({ name: 'small-one' }), json), 409, 'already_exists');
  const key = await cluster.client.createApiKey({ workspace: ws.id, name: 's' });
  const c = new CleanroomClient({ url: cluster.url, ca: cluster.ca, apiKey: key.key });
  await expectError(c.raw('POST', '/v1/jobs', JSON.stringify({ command: ['true'], cpu: 1 }), json), 422, 'limit_exceeded', /0\.5/);
  const ok = await cluster.runJob({ command: ['echo', 'within limits'], cpu: 0.5, memoryMiB: 64, timeoutSeconds: 5 }, c);
  assert.equal(ok.job.status, 'succeeded');
  c.close();
});

test('unknown routes and unknown job ids are 404 with the error shape', async () => {
  await expectError(cluster.client.raw('GET', '/v1/nope'), 404, 'not_found');
  await expectError(cluster.client.raw('GET', '/v1/jobs/job_doesnotexist'), 404, 'not_found');
});

test('oversize bodies are 413, answered from the declared length before the body is read', async () => {
  const u = new URL(cluster.url);
  const response = await new Promise<string>((resolve, reject) => {
    const s = connect({ host: u.hostname, port: Number(u.port), ca: cluster.ca, servername: 'localhost' }, () => {
      s.write(`POST /v1/jobs HTTP/1.1\r\nhost: localhost\r\nauthorization: Bearer ${cluster.apiKey}\r\ncontent-type: application/json\r\ncontent-length: ${8 * 1024 * 1024}\r\n\r\n{"command":["`);
    });
    let text = '';
    s.setEncoding('utf8');
    s.on('data', (d: string) => (text += d));
    s.on('end', () => resolve(text));
    s.on('error', (e) => (text ? resolve(text) : reject(e)));
    setTimeout(() => s.destroy(), 5000);
  });
  assert.match(response, /^HTTP\/1\.1 413/);
  assert.match(response, /"code":"payload_too_large"/);
});

test('refusals before any route (the HTTP parser, bad URLs, long ids, CONNECT) have the error shape, on both ports', async () => {
  const u = new URL(cluster.url);
  const cases: Array<[request: string, status: number, code: string]> = [
    ['GET /v1/jobs/%ZZ HTTP/1.1\r\nhost: localhost\r\n\r\n', 400, 'malformed_request'],
    [`GET /v1/jobs/${'a'.repeat(101)} HTTP/1.1\r\nhost: localhost\r\n\r\n`, 414, 'uri_too_long'],
    [`GET /${'a'.repeat(20_000)} HTTP/1.1\r\nhost: localhost\r\n\r\n`, 431, 'headers_too_large'],
    [`GET /v1/health HTTP/1.1\r\nhost: localhost\r\nx-big: ${'a'.repeat(20_000)}\r\n\r\n`, 431, 'headers_too_large'],
    ['FOO /v1/health HTTP/1.1\r\nhost: localhost\r\n\r\n', 400, 'malformed_request'],
    ['GET /v1/health HTTP/1.1\r\n\r\n', 400, 'malformed_request'],
    ['GET /v1/health HTTP/1.1\nhost: localhost\n\n', 400, 'malformed_request'],
    ['POST /v1/jobs HTTP/1.1\r\nhost: localhost\r\ncontent-length: 5\r\ncontent-length: 6\r\n\r\nhello', 400, 'malformed_request'],
    ['POST /v1/jobs HTTP/1.1\r\nhost: localhost\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n', 400, 'malformed_request'],
    ['PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n', 400, 'malformed_request'],
    ['CONNECT localhost:443 HTTP/1.1\r\nhost: localhost\r\n\r\n', 404, 'not_found'],
  ];
  for (const port of [Number(u.port), cluster.dataPort]) {
    // The data port has no route with an id parameter: a long one there is just an unknown route.
    for (const [request, status, code] of cases.filter(([, st]) => port === Number(u.port) || st !== 414)) {
      const x = await rawExchange({ host: u.hostname, port, ca: cluster.ca }, Buffer.from(request), { stopAfter: 1, timeoutMs: 10_000 });
      const r = x.responses[0];
      assert.equal(r?.status, status, `${port} ${JSON.stringify(request.slice(0, 40))}: ${r?.body.toString() ?? x.error}`);
      await expectError(Promise.resolve({ status: r.status, body: JSON.parse(r.body.toString()) as unknown }), status, code);
    }
  }
  // An expectation other than 100-continue is ignored (RFC 9110 allows it), not answered with a bare 417.
  const expect = await cluster.client.raw('GET', '/v1/whoami', undefined, { expect: 'something-else' });
  assert.equal(expect.status, 200);
  // So is an Upgrade; Node reads nothing more on that connection, so it closes after the answer (else a next request waits).
  const upgrade = await rawExchange({ host: u.hostname, port: Number(u.port), ca: cluster.ca }, Buffer.from('GET /v1/health HTTP/1.1\r\nhost: localhost\r\nconnection: upgrade\r\nupgrade: websocket\r\n\r\n'), { timeoutMs: 5000 });
  assert.equal(upgrade.responses[0]?.status, 200);
  assert.equal(upgrade.responses[0]?.headers.connection?.toLowerCase(), 'close');
  assert.ok(upgrade.closed && !upgrade.timedOut);
});

test('the CLI reports API errors by code, without a stack trace', async () => {
  const r = await cluster.cli(['run', '--runtime', 'kata', '--', 'true']);
  assert.equal(r.code, 1);
  assert.match(r.stderr, /unsupported_runtime/);
  assert.doesNotMatch(r.stderr, /\n\s+at /);
  const usage = await cluster.cli(['run', '--memory', 'lots', '--', 'true']);
  assert.equal(usage.code, 2);
  assert.match(usage.stderr, /--memory/);
});

/** EXPECTED_CODES is the registry as this test knows it: adding, removing or re-numbering a code must change this list too. */
const EXPECTED_CODES: Record<string, number> = {
  invalid_json: 400,
  invalid_request: 400,
  invalid_object_key: 400,
  malformed_request: 400,
  unauthenticated: 401,
  invalid_token: 401,
  token_expired: 401,
  token_revoked: 401,
  forbidden: 403,
  out_of_scope: 403,
  not_found: 404,
  request_timeout: 408,
  conflict: 409,
  already_exists: 409,
  payload_too_large: 413,
  uri_too_long: 414,
  limit_exceeded: 422,
  unsupported_runtime: 422,
  runtime_not_offered: 422,
  size_not_offered: 422,
  invalid_policy: 422,
  quota_exceeded: 429,
  rate_limited: 429,
  headers_too_large: 431,
  image_not_found: 404,
  image_not_ready: 409,
  image_in_use: 409,
  image_registry_unreachable: 502,
  image_tls_failed: 502,
  image_auth_failed: 401,
  image_digest_mismatch: 422,
  image_platform_mismatch: 422,
  image_invalid: 422,
  image_too_large: 422,
  image_import_timeout: 504,
  image_layer_invalid: 422,
  image_blob_missing: 422,
  sandbox_not_running: 409,
  process_ended: 409,
  process_start_failed: 422,
  file_exists: 409,
  not_a_directory: 409,
  is_a_directory: 409,
  permission_denied: 403,
  invalid_path: 400,
  io_error: 500,
  no_space: 507,
  internal: 500,
  unavailable: 503,
};

interface OpenApiDoc {
  paths: Record<string, Record<string, { operationId: string; responses: Record<string, { description: string }> }>>;
  components: { schemas: { Error: { properties: { error: { properties: { code: { enum: string[] } } } } } } };
}

test('every error code is the one this test expects, and is documented with its status in the served OpenAPI document', async () => {
  const registered = Object.fromEntries(Object.entries(ERROR_CODES).map(([code, def]) => [code, def.status]));
  assert.deepEqual(registered, EXPECTED_CODES, 'the error registry differs from the list this test owns');
  for (const [code, def] of Object.entries(ERROR_CODES)) assert.match(def.doc, /^[A-Z].{20,}\.$/, `${code} needs a doc line`);

  const res = await cluster.client.raw('GET', '/openapi.json');
  assert.equal(res.status, 200);
  const doc = res.body as OpenApiDoc;
  assert.deepEqual([...doc.components.schemas.Error.properties.error.properties.code.enum].sort(), Object.keys(EXPECTED_CODES).sort(), 'the Error schema lists other codes');
  // Each response documents its codes as "<code>: <what it means>" in its description.
  const documented = new Set<string>();
  for (const [path, ops] of Object.entries(doc.paths)) {
    for (const [method, op] of Object.entries(ops)) {
      for (const [status, response] of Object.entries(op.responses)) {
        for (const [code, expected] of Object.entries(EXPECTED_CODES)) {
          if (!response.description.includes(`${code}: `)) continue;
          assert.equal(status, String(expected), `${method.toUpperCase()} ${path} documents ${code} under ${status}`);
          documented.add(code);
        }
      }
    }
  }
  assert.deepEqual(Object.keys(EXPECTED_CODES).filter((c) => !documented.has(c)), [], 'codes no operation of the OpenAPI document mentions');
});
