/**
 * The e2b control-plane REST subset, translated to SandboxService: create, connect, get, list, timeout, kill. Auth is
 * the `X-API-KEY` header carrying a Cleanroom API key; errors are e2b's `{code: <int>, message}` (see e2b-errors.ts).
 * An e2b sandbox id is the Cleanroom sandbox id; an ended sandbox is "not found", as e2b has it.
 */
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { z } from 'zod';
import { ApiError } from '../../../shared/errors.js';
import { isTerminal } from '../../jobs/job-service.js';
import type { Job, Workspace } from '../../model.js';
import type { SandboxService } from '../../sandboxes/sandbox-service.js';
import { LIST_PAGE_MAX } from '../../sandboxes/sandbox-service.js';
import { MetadataSchema } from '../../sandboxes/sandbox-request.js';
import { actorOf, type Authenticator, type Principal } from '../route-table.js';
import { restError } from './e2b-errors.js';
import type { EnvdTokens } from './envd-tokens.js';

/** ENVD_VERSION is the envd version the adapter reports: 0.6.4 unlocks every feature of e2b 2.51.0 that it serves. */
export const ENVD_VERSION = '0.6.4';
/** DEFAULT_TEMPLATE is e2b's default template; it maps to Cleanroom's default image (image left unset). Any other
 *  template is the name (NAME[:TAG]) or digest of a Cleanroom image. */
export const DEFAULT_TEMPLATE = 'base';
/** LIST_DEFAULT_LIMIT is the page size when the SDK names none (e2b's own default). */
const LIST_DEFAULT_LIMIT = 100;

/** NewSandboxSchema is e2b's NewSandboxV2 body; the fields Cleanroom has no counterpart for are refused when they ask for something. */
const NewSandboxSchema = z
  .object({
    templateID: z.string().min(1).max(512).optional(),
    metadata: MetadataSchema.optional(),
    envVars: z.record(z.string(), z.string()).optional(),
    timeout: z.number().int().optional(),
    allow_internet_access: z.boolean().optional(),
    autoPause: z.boolean().optional(),
    autoPauseMemory: z.boolean().optional(),
    autoResume: z.object({ enabled: z.boolean() }).optional(),
    secure: z.boolean().optional(),
    network: z.unknown().optional(),
    iam: z.unknown().optional(),
    mcp: z.unknown().optional(),
    volumeMounts: z.array(z.unknown()).optional(),
  })
  .passthrough();

const ConnectSchema = z.object({ timeout: z.number().int().optional() }).passthrough();
const TimeoutSchema = z.object({ timeout: z.number().int() }).passthrough();
const ListQuery = z
  .object({
    metadata: z.string().max(8192).optional(),
    state: z.string().max(100).optional(),
    limit: z.coerce.number().int().min(1).max(LIST_PAGE_MAX).optional(),
    nextToken: z.string().max(512).optional(),
  })
  .passthrough();

/** E2bSandboxDeps are the services the REST subset calls. */
export interface E2bSandboxDeps {
  sandboxes: SandboxService;
  tokens: EnvdTokens;
  authenticate: Authenticator;
  /**
   * domain is returned as the sandboxes' `domain`; null: the Host the request came to. Never null in the answer: a client
   * without E2B_SANDBOX_URL would then send its envd traffic, access token included, to e2b's cloud. With the API's
   * own host, such a client asks for `49983-<id>.<host>`, which this listener serves (given wildcard DNS and a
   * certificate for it) or which fails to resolve: it fails closed.
   */
  domain: string | null;
}

/** registerE2bSandboxRoutes adds the REST subset to a fastify scope whose errors are answered in e2b's shape. */
export function registerE2bSandboxRoutes(app: FastifyInstance, d: E2bSandboxDeps): void {
  const { sandboxes } = d;
  const route = (method: 'GET' | 'POST' | 'DELETE', url: string, handler: (ws: Workspace, req: FastifyRequest, reply: FastifyReply, principal: Principal) => Promise<unknown>) =>
    app.route({
      method,
      url,
      config: { compat: 'e2b' },
      handler: async (req, reply) => {
        const key = req.headers['x-api-key'];
        if (typeof key !== 'string' || key === '') throw new ApiError('unauthenticated', 'send a Cleanroom API key in the X-API-KEY header (E2B_API_KEY)');
        const principal = await d.authenticate(`Bearer ${key}`, 'key');
        return handler(principal.workspace, req, reply, principal);
      },
    });

  route('POST', '/v2/sandboxes', async (ws, req, reply, principal) => {
    const body = parse(NewSandboxSchema, req.body ?? {});
    if (body.autoPause || body.autoResume?.enabled) throw new ApiError('invalid_request', 'pause and resume are not supported by Cleanroom: a sandbox ends at its timeout (leave lifecycle.onTimeout at "kill")');
    if (body.volumeMounts?.length) throw new ApiError('invalid_request', 'volumeMounts are not supported by Cleanroom; use files.write or the data store');
    if (body.mcp !== undefined && body.mcp !== null) throw new ApiError('invalid_request', 'MCP gateways are not supported by Cleanroom');
    const template = body.templateID ?? DEFAULT_TEMPLATE;
    let job: Job;
    try {
      job = await sandboxes.create(
        ws,
        {
          ...(template !== DEFAULT_TEMPLATE ? { image: template } : {}),
          ...(body.timeout !== undefined ? { timeoutSeconds: body.timeout } : {}),
          ...(body.envVars ? { env: body.envVars } : {}),
          metadata: body.metadata ?? {},
        },
        actorOf(principal),
      );
    } catch (e) {
      // A template is an image: name the template in the error, and how to get one (e2b answers an unknown template 404 too).
      if (e instanceof ApiError && e.code === 'image_not_found') throw new ApiError('image_not_found', `template ${JSON.stringify(template)} not found: ${e.message}; a template is a Cleanroom image (import it with \`cleanroom images import\`), or use "base" for the default image`);
      if (e instanceof ApiError && e.message.startsWith('image')) throw new ApiError(e.code, `template ${JSON.stringify(template)}: ${e.message}`);
      throw e;
    }
    if (isTerminal(job)) throw new ApiError('internal', `the sandbox failed to start: ${job.message ?? job.status}`);
    if (job.status !== 'running') {
      void sandboxes.kill(ws, job.id).catch(() => {});
      throw new ApiError('unavailable', 'no cell became free within 60 s; retry');
    }
    reply.code(201);
    return created(job, template, await d.tokens.tokenFor(job), d.domain ?? hostOf(req));
  });

  route('POST', '/v2/sandboxes/:id/connect', async (ws, req, reply) => {
    const body = parse(ConnectSchema, req.body ?? {});
    const job = await liveOr404(ws, id(req));
    const moved = body.timeout !== undefined ? await sandboxes.setTimeout(ws, job.id, clampTimeout(body.timeout, job)) : job;
    reply.code(200);
    return created(moved, templateOf(moved), await d.tokens.tokenFor(moved), d.domain ?? hostOf(req));
  });

  route('POST', '/sandboxes/:id/timeout', async (ws, req, reply) => {
    const body = parse(TimeoutSchema, req.body ?? {});
    await liveOr404(ws, id(req));
    await sandboxes.setTimeout(ws, id(req), body.timeout);
    return reply.code(204).send();
  });

  route('GET', '/sandboxes/:id', async (ws, req) => detail(await liveOr404(ws, id(req))));

  route('DELETE', '/sandboxes/:id', async (ws, req, reply) => {
    await liveOr404(ws, id(req));
    await sandboxes.kill(ws, id(req));
    return reply.code(204).send();
  });

  route('GET', '/v2/sandboxes', async (ws, req, reply) => {
    const q = parse(ListQuery, req.query ?? {});
    const states = (q.state ?? 'running,paused').split(',').map((s) => s.trim());
    for (const s of states) if (s !== 'running' && s !== 'paused') throw new ApiError('invalid_request', `state: running or paused, comma-separated; got ${JSON.stringify(s)}`);
    // Cleanroom has no paused sandboxes: asking only for paused ones finds none.
    if (!states.includes('running')) return [];
    const page = await sandboxes.list(ws, { metadata: parseMetadata(q.metadata), state: 'live', limit: q.limit ?? LIST_DEFAULT_LIMIT, ...(q.nextToken ? { cursor: q.nextToken } : {}) });
    if (page.next) void reply.header('x-next-token', page.next);
    return page.sandboxes.filter((j) => j.status === 'running').map(listed);
  });

  // The rest of e2b's API (pause, resume, snapshots, metrics, templates, volumes, secrets…): a clear 501, never a 404,
  // which the SDK would read as "sandbox not found".
  for (const url of ['/sandboxes/:id/*', '/v2/sandboxes/:id/*', '/sandboxes/:id/metrics', '/sandboxes/metrics', '/snapshots', '/snapshots/*', '/templates', '/templates/*', '/v2/templates', '/v2/templates/*', '/v3/templates', '/volumes', '/volumes/*', '/secrets', '/secrets/*']) {
    app.route({
      method: ['GET', 'POST', 'PUT', 'PATCH', 'DELETE'],
      url,
      config: { compat: 'e2b' },
      handler: async (req, reply) => {
        const what = req.url.split('?')[0]!;
        void reply.code(501).send({ code: 501, message: `${req.method} ${what} is not supported by Cleanroom's e2b layer (no pause/resume, snapshots, metrics, templates, volumes or secrets); see the README` });
      },
    });
  }

  /** liveOr404 returns a running sandbox of the workspace; an ended one (or one of another workspace) is e2b's 404. */
  async function liveOr404(ws: Workspace, sandboxId: string): Promise<Job> {
    const job = await sandboxes.get(ws, sandboxId);
    if (isTerminal(job)) throw new ApiError('not_found', `sandbox ${sandboxId} has ended (${job.status})`);
    return job;
  }
}

/** errorHandler answers every error of the e2b scope in e2b's shape. */
export function e2bErrorHandler(err: unknown, _req: FastifyRequest, reply: FastifyReply): void {
  const { status, body } = restError(err);
  // The SDK retries a 429 after Retry-After (integer seconds).
  const retryAfter = err instanceof ApiError ? (err.details as { retryAfterSeconds?: unknown } | undefined)?.retryAfterSeconds : undefined;
  if (typeof retryAfter === 'number') void reply.header('retry-after', String(Math.ceil(retryAfter)));
  void reply.code(status).send(body);
}

function hostOf(req: FastifyRequest): string {
  return req.headers.host ?? 'cleanroom.invalid';
}

function id(req: FastifyRequest): string {
  return (req.params as { id: string }).id;
}

function parse<T>(schema: z.ZodType<T>, value: unknown): T {
  const r = schema.safeParse(value);
  if (r.success) return r.data;
  const i = r.error.issues[0]!;
  throw new ApiError('invalid_request', `${i.path.join('.') || 'body'}: ${i.message}`);
}

/** clampTimeout keeps a connect's timeout from shortening a sandbox (e2b: connect only ever extends). */
function clampTimeout(seconds: number, job: Job): number {
  const left = job.sandbox?.endsAt ? Math.ceil((Date.parse(job.sandbox.endsAt) - Date.now()) / 1000) : 0;
  return Math.max(seconds, left, 1);
}

/** parseMetadata reads e2b's list filter `k1=v1&k2=v2` (URL-encoded as one parameter). */
function parseMetadata(raw: string | undefined): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, v] of new URLSearchParams(raw ?? '')) if (k) out[k] = v;
  return out;
}

/** created is e2b's `Sandbox`: what create and connect answer. */
function created(job: Job, template: string, token: string, domain: string) {
  return { sandboxID: job.id, templateID: template, clientID: 'cleanroom', alias: template, envdVersion: ENVD_VERSION, envdAccessToken: token, trafficAccessToken: null, domain };
}

/** templateOf is the template a sandbox was created from: its image as the caller named it, or `base`. */
function templateOf(job: Job): string {
  return job.imageRef ?? DEFAULT_TEMPLATE;
}

/** listed is e2b's `ListedSandbox`. */
function listed(job: Job) {
  return {
    sandboxID: job.id,
    templateID: templateOf(job),
    alias: templateOf(job),
    clientID: 'cleanroom',
    startedAt: job.startedAt ?? job.createdAt,
    endAt: job.sandbox?.endsAt ?? job.startedAt ?? job.createdAt,
    state: 'running',
    cpuCount: Math.max(1, Math.ceil(job.cpu)),
    memoryMB: Math.round(job.memoryBytes / 1024 / 1024),
    diskSizeMB: Math.round(job.diskBytes / 1024 / 1024),
    envdVersion: ENVD_VERSION,
    metadata: job.sandbox?.metadata ?? {},
  };
}

/** detail is e2b's `SandboxDetail` (getInfo). */
function detail(job: Job) {
  return { ...listed(job), domain: null };
}
