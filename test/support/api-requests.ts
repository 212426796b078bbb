/** Request generation for the API fuzz suite (test/security/api-fuzz.test.ts): what to send, from a seed. */
import { deepNesting, junk, mutatePath, randomJson, Rng, withInvalidUtf8 } from './fuzz.js';

/** LIMIT_BYTES is the JSON body limit of the API (server.ts) and the object limit the fuzz suite configures (1 MiB):
 *  near-limit sizes straddle it. */
export const LIMIT_BYTES = 1024 * 1024;
/** REAL_JOBS: at most this many requests may create real jobs (each runs a cell); every other one is made invalid. */
export const REAL_JOBS = 4;
/** REAL_WORKSPACES: likewise for workspaces (each takes an address range). */
export const REAL_WORKSPACES = 5;

/** Op is one operation of the OpenAPI document. */
export interface Op {
  method: string;
  path: string;
  operationId: string;
  isPublic: boolean;
  adminOnly: boolean;
  data: boolean;
  query: string[];
  body: boolean;
  pattern: RegExp;
}

/** CredKind says what a credential is worth. */
export type CredKind = 'admin' | 'tenant' | 'token' | 'none' | 'garbage';
/** Cred is one Authorization header value (null: none). */
export interface Cred {
  label: string;
  kind: CredKind;
  value: string | null;
}

/** Spec is one generated request. */
export interface Spec {
  i: number;
  port: 'api' | 'data';
  method: string;
  target: string;
  headers: Array<[string, string]>;
  body: Buffer | null;
  cred: Cred;
  /** Any Authorization header of the request carries a valid credential (duplicates included). */
  anyValidCred: CredKind[];
  raw: boolean;
  /** Replaces the request's framing: the whole request as sent. */
  rawBytes: Buffer | null;
  endAfterWrite: boolean;
  note: string[];
}

/** FuzzWorld is what requests are made of: the operations, the credentials, and ids of real resources. */
export interface FuzzWorld {
  ops: Op[];
  creds: { admin: Cred; tenant: Cred; token: Cred; garbage: Cred[] };
  ids: { realJob: string; tokenJob: string; sacrificialKey: string };
}

/** OpenApiDoc is the part of the served OpenAPI document the fuzz reads. */
export interface OpenApiDoc {
  paths: Record<string, Record<string, { operationId: string; 'x-cleanroom-auth'?: string; security?: unknown[]; parameters: Array<{ name: string; in: string }>; requestBody?: unknown; responses: Record<string, { description: string }> }>>;
}

/** opsFromDoc lists the document's operations with what the fuzz needs to know of each. */
export function opsFromDoc(doc: OpenApiDoc): Op[] {
  return Object.entries(doc.paths).flatMap(([path, byMethod]) =>
    Object.entries(byMethod).map(([m, op]) => ({
      method: m.toUpperCase(),
      path,
      operationId: op.operationId,
      isPublic: Array.isArray(op.security) && op.security.length === 0,
      // Admin routes say so (other routes may refuse some requests with `forbidden`, e.g. publishing a public image).
      adminOnly: op['x-cleanroom-auth'] === 'workspace-admin' || op['x-cleanroom-auth'] === 'platform-admin',
      data: path.startsWith('/v1/data/') || path === '/.well-known/jwks.json',
      query: op.parameters.filter((x) => x.in === 'query').map((x) => x.name),
      body: op.requestBody !== undefined || (m === 'put' && path.startsWith('/v1/data/')),
      pattern: new RegExp(`^${path.replace(/\./g, '\\.').replace(/\{key\}/, '.+').replace(/\{\w+\}/g, '[^/]+')}$`),
    })),
  );
}

/** requestPath is the decoded path a server routes `target` by (up to a space or line break, without scheme and host,
 *  query or fragment), or null if it does not decode. */
export function requestPath(target: string): string | null {
  const t = target.split(/[ \t\r\n]/)[0]!.replace(/^https?:\/\/[^/]*/i, '');
  return t.startsWith('/') ? safeDecode(t.split(/[?#]/)[0]!) : null;
}

/** RequestGenerator builds request i from the seed and i alone, but for the budgets of real jobs and workspaces, which
 *  requests take in order: generate them in index order. */
export class RequestGenerator {
  /** budget counts the requests made to create a real job or workspace. */
  readonly budget = { jobs: 0, workspaces: 0 };

  constructor(
    private readonly seed: number,
    private readonly w: FuzzWorld,
  ) {}

  /** generate builds request i. */
  generate(i: number): Spec {
    const { ops, creds, ids } = this.w;
    const budget = this.budget;
    const rng = new Rng(this.seed, i);
    const port = rng.chance(0.3) ? 'data' : 'api';
    const op = rng.chance(0.94) ? (port === 'data' && rng.chance(0.75) ? rng.pick(ops.filter((o) => o.data)) : rng.pick(ops)) : null;
    const cred = pickCred(rng, creds);
    const note: string[] = [op?.operationId ?? 'junk-route', cred.label];
    const method = op && rng.chance(0.85) ? op.method : rng.pick(METHODS);
    let path = op ? fillPath(rng, op, cred, ids) : mutatePath(rng, rng.pick(['/v1/jobs', '/v1/data/objects/fuzz/x', '/v1/unknown', '/']));
    if (rng.chance(0.25)) {
      path = mutatePath(rng, path);
      note.push('path');
    }
    let target = path + (op ? queryFor(rng, op, ids) : '');
    if (method === 'CONNECT') target = rng.pick(['localhost:443', '127.0.0.1:22', target]);
    if (method === 'OPTIONS' && rng.chance(0.3)) target = '*';

    const headers: Array<[string, string]> = [['host', 'localhost']];
    if (cred.value !== null) headers.push(['authorization', cred.value]);
    const anyValidCred: CredKind[] = ['admin', 'tenant', 'token'].includes(cred.kind) ? [cred.kind] : [];
    if (rng.chance(0.3)) note.push(mutateHeaders(rng, headers, anyValidCred, creds));
    let body: Buffer | null = null;
    if (op?.body || ['POST', 'PUT', 'PATCH'].includes(method) || rng.chance(0.05)) {
      const b = bodyFor(rng, op);
      body = b.body;
      note.push(b.note);
      const ct = op?.operationId === 'putObject' || rng.chance(0.15) ? rng.pick(CONTENT_TYPES) : 'application/json';
      if (ct !== '' || rng.chance(0.5)) headers.push(['content-type', ct]);
    }

    // Requests that could take effect with a key are kept harmless (certainly invalid), but for a few real jobs and workspaces.
    // The check errs on the side of harm: any JSON object the server could parse, any header that holds a real key.
    const decoded = safeDecode(target.split('?')[0]!) ?? target;
    const keyed = headers.some(([k, v]) => k === 'authorization' && (v.includes(creds.admin.value!.slice(7)) || v.includes(creds.tenant.value!.slice(7)))) || note.includes('header injection');
    const parsed = body ? parseLikeTheServer(body) : null;
    if (keyed && /POST/i.test(method) && /jobs|workspaces/i.test(decoded) && parsed) {
      const isJob = /jobs/i.test(decoded);
      if (isJob && budget.jobs < REAL_JOBS && rng.chance(0.02)) {
        budget.jobs++;
        body = Buffer.from(JSON.stringify({ command: ['echo', `fuzz ${i}`], timeoutSeconds: 10 }));
        note.push('real job');
      } else if (!isJob && budget.workspaces < REAL_WORKSPACES && rng.chance(0.05)) {
        budget.workspaces++;
        body = Buffer.from(JSON.stringify({ name: `fz-${i}` }));
        note.push('real workspace');
      } else {
        rng.pick(INVALIDATORS)(parsed);
        try {
          body = Buffer.from(JSON.stringify(parsed));
        } catch {
          body = Buffer.from('{"zz_fuzz":1}'); // nested too deep to write back (JSON.parse takes it, JSON.stringify recurses)
        }
      }
    }

    let raw = rng.chance(0.1);
    let rawBytes: Buffer | null = null;
    let endAfterWrite = false;
    if (rng.chance(0.12)) {
      // Damaged framing: request line, version, content-length, transfer-encoding, line endings.
      const f = frame(rng, method, target, headers, body);
      rawBytes = f.bytes;
      endAfterWrite = f.short;
      note.push(f.note);
    }
    if (rawBytes || !agentCanSend(method, target, headers)) raw = true;
    return { i, port, method, target, headers, body, cred, anyValidCred, raw, rawBytes, endAfterWrite, note };
  }
}

/** parseLikeTheServer returns the JSON object fastify would hand a route for this body (BOM stripped), or null. */
function parseLikeTheServer(body: Buffer): Record<string, unknown> | null {
  try {
    const v: unknown = JSON.parse(body.toString('utf8').replace(/^\ufeff/, ''));
    return v && typeof v === 'object' && !Array.isArray(v) ? (v as Record<string, unknown>) : null;
  } catch {
    return null;
  }
}

const JOB_TEMPLATE = { command: ['true'], env: { A: 'b' }, cwd: '/work', cpu: 0.5, memoryMiB: 64, timeoutSeconds: 5, diskMiB: 64, runtime: 'runc', data: [{ prefix: 'fuzz/', access: 'read' }] };
const TEMPLATES: Record<string, () => Record<string, unknown>> = {
  createJob: () => ({ ...JOB_TEMPLATE }),
  createWorkspace: () => ({ name: 'fz-ws', maxCpu: 1, maxMemoryMiB: 128, maxTimeoutSeconds: 60 }),
  createApiKey: () => ({ workspace: 'fuzz-tenant', name: 'fz', admin: false }),
  setNetworkPolicy: () => ({ allow: [{ cidr: '203.0.113.0/24', protocol: 'tcp', port: 443 }], dryRun: false }),
};
const SCHEMA_KEYS = ['command', 'env', 'cwd', 'cpu', 'memoryMiB', 'timeoutSeconds', 'diskMiB', 'runtime', 'data', 'prefix', 'access', 'name', 'workspace', 'admin', 'allow', 'cidr', 'protocol', 'port', 'dryRun', 'maxCpu'];
/** INVALIDATORS each make a job or workspace request certainly invalid (strict schemas, limits, enums). */
const INVALIDATORS: Array<(o: Record<string, unknown>) => void> = [
  (o) => (o.zz_fuzz = true),
  (o) => (o.command = []),
  (o) => (o.command = 'true'),
  (o) => (o.cpu = 1000),
  (o) => (o.timeoutSeconds = 0),
  (o) => (o.runtime = 'kata'),
  (o) => (o.memoryMiB = -1),
  (o) => (o.name = 'Not A Name!'),
];
const CONTENT_TYPES = ['application/json', 'application/json; charset=utf-8', 'APPLICATION/JSON', 'text/plain', 'application/octet-stream', '', 'application/x-www-form-urlencoded', 'multipart/form-data; boundary=xyz', 'application/json; charset=utf-16', 'application/jsonx', '*/*', 'application/json, text/plain', 'application/json;;;', 'ápplication/json'];
const METHODS = ['GET', 'POST', 'PUT', 'DELETE', 'PATCH', 'HEAD', 'OPTIONS', 'TRACE', 'PROPFIND', 'CONNECT', 'get', 'FOO', 'G ET', 'GET\t', 'POST\u0000', ''];
const VERSIONS = ['HTTP/1.0', 'HTTP/1.2', 'HTTP/2.0', 'HTTP/0.9', 'HTTPS/1.1', 'http/1.1', 'HTTP/1.1 extra', ''];

function pickCred(rng: Rng, creds: FuzzWorld['creds']): Cred {
  return rng.weighted<() => Cred>([
    [30, () => creds.admin],
    [15, () => creds.tenant],
    [15, () => creds.token],
    [12, () => creds.garbage.at(-1)!],
    [28, () => rng.pick(creds.garbage)],
  ])();
}

function fillPath(rng: Rng, op: Op, cred: Cred, ids: FuzzWorld['ids']): string {
  return op.path
    .replace('{id}', () => {
      const choices = op.operationId === 'revokeApiKey' ? [ids.sacrificialKey, `key_${rng.hex(16)}`] : op.operationId === 'cancelJob' ? [ids.realJob] : [ids.realJob, ids.tokenJob];
      return rng.chance(0.4) ? rng.pick(choices) : rng.chance(0.5) ? `job_${rng.hex(rng.pick([8, 16, 24]))}` : encodeURIComponent(junk(rng)).replace(/%25/g, rng.chance(0.5) ? '%' : '%25');
    })
    .replace('{key}', () => {
      const keys = ['fuzz/a.txt', 'fuzz/tenant.txt', 'canary/secret.txt', 'fuzz/../canary/secret.txt', 'fuzz/%2e%2e/canary/secret.txt', 'fuzz//x', 'fuzz/./x', '/fuzz/x', 'fuzz/x/', `fuzz/${rng.hex(8)}`, `fuzz/${'k'.repeat(rng.pick([900, 1023, 1025, 2000]))}`, 'fuzz/%00', 'fuzz/%0a', 'fuzz/%C3%A9', 'fuzz/%ff', 'fuzz/a%2fb', 'fuzz\\x'];
      const k = rng.chance(0.7) ? rng.pick(keys) : `fuzz/${encodeURIComponent(junk(rng))}`;
      // An admin key must not delete the canary the leak checks look for.
      return cred.kind === 'admin' && op.operationId === 'deleteObject' && k.startsWith('canary') ? 'fuzz/x' : k;
    });
}

function queryFor(rng: Rng, op: Op, ids: FuzzWorld['ids']): string {
  const names = [...op.query, ...(rng.chance(0.2) ? [junk(rng), 'follow', 'limit', 'prefix'] : [])];
  if (names.length === 0 || rng.chance(0.3)) return rng.chance(0.1) ? `?${rng.pick(['', '&&', '=', '==x', 'a=b=c', '%', '%ZZ=1', '?', 'x'.repeat(12_000)])}` : '';
  const values = ['true', 'false', '1', '0', '-1', '1000', '1001', '256', '257', 'abc', '1.5', '', ' ', '1e3', '0x10', '9'.repeat(30), 'fuzz/', 'canary/', '', '%ZZ', '%00', '..', 'job.started', 'access.denied', ids.realJob];
  const parts: string[] = [];
  for (let n = 1 + rng.int(3); n > 0; n--) {
    const name = rng.pick(names);
    const value = rng.chance(0.7) ? rng.pick(values) : junk(rng);
    parts.push(`${rng.chance(0.9) ? encodeURIComponent(name) : name}=${rng.chance(0.8) ? encodeURIComponent(value) : value}`);
  }
  return `?${parts.join('&')}`;
}

function bodyFor(rng: Rng, op: Op | null): { body: Buffer; note: string } {
  if (op?.operationId === 'putObject' && rng.chance(0.7)) {
    const size = rng.weighted([
      [60, () => rng.int(256)],
      [30, () => rng.int(64 * 1024)],
      [5, () => LIMIT_BYTES - rng.int(64)],
      [5, () => LIMIT_BYTES + 1 + rng.int(64)],
    ])();
    return { body: rng.bytes(size), note: `object ${size} B` };
  }
  const template = op ? TEMPLATES[op.operationId] : undefined;
  const kind = rng.weighted([
    [35, 'template'],
    [20, 'random'],
    [8, 'deep'],
    [6, 'near-limit'],
    [8, 'invalid-utf8'],
    [10, 'text'],
    [5, 'proto'],
    [8, 'empty'],
  ] as const);
  switch (kind) {
    case 'template': {
      const o = template ? template() : (randomJson(rng, 2, SCHEMA_KEYS) as Record<string, unknown>);
      if (o && typeof o === 'object' && !Array.isArray(o)) {
        for (let n = rng.int(3); n > 0; n--) {
          const keys = Object.keys(o);
          const k = keys.length && rng.chance(0.7) ? rng.pick(keys) : rng.pick([...SCHEMA_KEYS, junk(rng)]);
          if (rng.chance(0.2)) delete o[k];
          else o[k] = randomJson(rng, 2, SCHEMA_KEYS);
        }
      }
      return { body: Buffer.from(JSON.stringify(o)), note: 'template' };
    }
    case 'random': {
      const v = randomJson(rng, 3, SCHEMA_KEYS);
      return { body: Buffer.from(JSON.stringify(v)), note: 'random json' };
    }
    case 'deep':
      return { body: Buffer.from(deepNesting(rng, rng.pick([100, 1000, 10_000, 100_000]), rng.chance(0.5) ? rng.pick(SCHEMA_KEYS) : undefined)), note: 'deep' };
    case 'near-limit': {
      const n = LIMIT_BYTES - 64 + rng.int(128);
      const text = `{"command":["${'a'.repeat(Math.max(0, n - 16))}"]}`;
      return { body: Buffer.from(text), note: `near-limit ${text.length} B` };
    }
    case 'invalid-utf8':
      return { body: withInvalidUtf8(rng, JSON.stringify(template ? template() : { name: 'x' })), note: 'invalid utf-8' };
    case 'text':
      return { body: Buffer.from(rng.pick(['{"command": [', '{', '}', '[', 'null', 'true', '1', '"x"', '{"a":1}}', '{"a":1,}', "{'a':1}", '\ufeff{"command":["true"]}', '{"command":["true"]}garbage', 'a=b&c=d', '{"a":NaN}', '{"a":1e999999}', '{"a":"\\ud800"}', '\u0000'])), note: 'text' };
    case 'proto':
      return { body: Buffer.from(rng.pick(['{"__proto__":{"admin":true}}', '{"constructor":{"prototype":{"admin":true}}}', '{"command":["true"],"__proto__":{"x":1}}', '{"a":1,"a":2}', '{"command":["true"],"command":["false"]}'])), note: 'proto/dup' };
    default:
      return { body: Buffer.alloc(0), note: 'empty' };
  }
}

function mutateHeaders(rng: Rng, headers: Array<[string, string]>, valid: CredKind[], creds: FuzzWorld['creds']): string {
  const which = rng.int(14);
  switch (which) {
    case 0:
      headers.push(['x-big', 'h'.repeat(rng.pick([8000, 15_500, 16_400, 40_000]))]);
      return 'big header';
    case 1:
      for (let n = rng.pick([100, 1000, 2100]); n > 0; n--) headers.push([`x-h${n}`, 'v']);
      return 'many headers';
    case 2: {
      const other = rng.pick([creds.admin, creds.tenant, creds.token, ...creds.garbage]);
      if (other.value !== null) headers.splice(rng.int(headers.length + 1), 0, ['authorization', other.value]);
      if (['admin', 'tenant', 'token'].includes(other.kind)) valid.push(other.kind);
      return `dup authorization ${other.label}`;
    }
    case 3:
      headers.push(['content-type', rng.pick(CONTENT_TYPES)]);
      return 'dup content-type';
    case 4:
      headers.push(['accept-version', rng.pick(['1.0.0', '*', 'x'])]);
      return 'accept-version';
    case 5:
      headers.push(['expect', rng.pick(['100-continue', 'foo', '200-ok'])]);
      return 'expect';
    case 6:
      headers.push(['connection', 'upgrade'], ['upgrade', rng.pick(['websocket', 'h2c', 'x'])]);
      return 'upgrade';
    case 7:
      headers.push(['content-encoding', rng.pick(['gzip', 'deflate', 'br', 'x'])]);
      return 'content-encoding';
    case 8:
      headers.push(['x-forwarded-for', '127.0.0.1'], ['x-real-ip', '10.0.0.1'], ['forwarded', 'for=127.0.0.1'], ['x-http-method-override', 'DELETE']);
      return 'proxy headers';
    case 9:
      headers.push([rng.pick(['x-unicode', 'authorization']), rng.pick(['é', 'Bearer crk_é', '\u00ff\u00fe', '\u0001', '\u007f'])]);
      return 'obs-text/control header';
    case 10:
      headers.push([rng.pick(['bad header', 'bad:name', '', 'x\u0000', 'é', '(x)']), 'v']);
      return 'bad header name';
    case 11:
      // Over raw TLS this is a real second header line, with the admin key.
      headers.push(['x-injected', `a\r\nauthorization: ${creds.admin.value ?? ''}`]);
      valid.push('admin');
      return 'header injection';
    case 12:
      headers.splice(0, 1);
      return 'no host';
    default:
      headers.push(['cookie', `${junk(rng)}=${junk(rng)}`], ['accept', rng.pick(['text/event-stream', '*/*', 'application/xml', '', junk(rng)])], ['range', 'bytes=0-1']);
      return 'cookie/accept/range';
  }
}

function frame(rng: Rng, method: string, target: string, headers: Array<[string, string]>, body: Buffer | null): { bytes: Buffer; short: boolean; note: string } {
  const b = body ?? Buffer.alloc(0);
  const head = (line: string, extra: Array<[string, string]>, eol = '\r\n') => Buffer.from(`${line}${eol}${[...headers, ...extra].map(([k, v]) => `${k}: ${v}${eol}`).join('')}${eol}`, 'utf8');
  const line = `${method} ${target} HTTP/1.1`;
  const cl = (v: string): Array<[string, string]> => [['content-length', v]];
  switch (rng.int(11)) {
    case 0:
      return { bytes: Buffer.concat([head(`${method} ${target} ${rng.pick(VERSIONS)}`, cl(String(b.length))), b]), short: false, note: 'version' };
    case 1:
      return { bytes: Buffer.concat([head(line, cl(String(b.length + 1 + rng.int(100)))), b]), short: true, note: 'content-length too big' };
    case 2:
      return { bytes: Buffer.concat([head(line, cl(String(Math.max(0, b.length - 1 - rng.int(4))))), b]), short: false, note: 'content-length too small' };
    case 3:
      return { bytes: Buffer.concat([head(line, cl(rng.pick(['-1', 'abc', '1e3', ' 5', '0x10', '99999999999999999999', '1, 1', '']))), b]), short: true, note: 'bad content-length' };
    case 4:
      return { bytes: Buffer.concat([head(line, [...cl(String(b.length)), ...cl(String(b.length + 1))]), b]), short: false, note: 'two content-lengths' };
    case 5:
      return { bytes: Buffer.concat([head(line, [['transfer-encoding', 'chunked'], ...cl(String(b.length))]), chunked(b)]), short: false, note: 'te + cl' };
    case 6:
      return { bytes: Buffer.concat([head(line, [['transfer-encoding', 'chunked']]), chunked(b)]), short: false, note: 'chunked' };
    case 7: {
      const bad = rng.pick(['zz\r\n', `${b.length.toString(16)};${'e'.repeat(20_000)}\r\n`, '-1\r\n', `${b.length.toString(16)}\r\n${b.toString('latin1')}XX`, 'ffffffffffffffffff\r\n']);
      return { bytes: Buffer.concat([head(line, [['transfer-encoding', rng.pick(['chunked', 'gzip, chunked', 'chunked, gzip', 'identity', 'x'])]]), Buffer.from(bad, 'latin1')]), short: true, note: 'bad chunks' };
    }
    case 8:
      return { bytes: Buffer.concat([head(line, cl(String(b.length)), '\n'), b]), short: false, note: 'bare LF' };
    case 9:
      return { bytes: Buffer.concat([head(`${method}  ${target}   HTTP/1.1`, cl(String(b.length))), b]), short: false, note: 'extra spaces' };
    default:
      return { bytes: Buffer.concat([head(line, [...cl(String(b.length)), ['connection', 'close']]), b, Buffer.from(rng.pick(['GARBAGE\r\n\r\n', 'GET / HTTP/1.1\r\n\r\n', '\u0000\u0001']))]), short: false, note: 'pipelined junk' };
  }
}

function chunked(b: Buffer): Buffer {
  return b.length === 0 ? Buffer.from('0\r\n\r\n') : Buffer.concat([Buffer.from(`${b.length.toString(16)}\r\n`), b, Buffer.from('\r\n0\r\n\r\n')]);
}

function agentCanSend(method: string, target: string, headers: Array<[string, string]>): boolean {
  const token = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;
  if (!token.test(method) || method !== method.toUpperCase() || method === 'CONNECT') return false;
  if (!target.startsWith('/') || /[^\u0021-\u00ff]/.test(target) || target.length > 15_000) return false;
  // A refusal from the HTTP parser carries a JSON body even for HEAD (the method is not known yet), which Node's client
  // takes for a broken response: HEAD goes raw, where the status line and headers are read and the rest ignored.
  if (method === 'HEAD') return false;
  // Node's client sets Host itself: a request without one, or with framing headers of its own, goes raw.
  if (headers[0]?.[0] !== 'host' || headers.filter(([k]) => k === 'host').length !== 1) return false;
  return headers.every(([k, v]) => token.test(k) && !/[^\t\x20-\x7e\x80-\xff]/.test(v) && k !== 'content-length' && k !== 'transfer-encoding');
}

/** safeDecode percent-decodes, or returns null. */
export function safeDecode(path: string): string | null {
  try {
    return decodeURIComponent(path);
  } catch {
    return null;
  }
}

