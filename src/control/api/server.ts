/** The HTTPS servers: the user-facing API and the data service; fastify, TLS ≥ 1.2, one error shape. */
import Fastify, { type FastifyInstance } from 'fastify';
import { randomUUID } from 'node:crypto';
import { ApiError, ERROR_CODES, type ErrorBody } from '../../shared/errors.js';
import type { AgentHub } from '../agents/agent-hub.js';
import type { ControlServices } from '../services.js';
import type { ListenerTimeouts } from '../../shared/config.js';
import { createAuthenticator } from '../auth/authenticator.js';
import { ListenerEdge } from './listener.js';
import { callerOf, RouteTable, type Authenticator } from './route-table.js';
import { registerAuditRoutes } from './routes/audit.js';
import { registerConsoleRoutes } from './routes/console.js';
import { registerDataRoutes } from './routes/data.js';
import { registerImageRoutes } from './routes/images.js';
import { registerJobRoutes } from './routes/jobs.js';
import { registerNetworkRoutes } from './routes/network.js';
import { registerSystemRoutes } from './routes/system.js';
import { registerAgentRoutes } from './routes/agents.js';
import { registerTenancyRoutes } from './routes/tenancy.js';
import { registerTokenRoutes } from './routes/tokens.js';
import { registerSandboxRoutes } from './routes/sandboxes.js';
import { registerSandboxProcessRoutes } from './routes/sandbox-processes.js';
import { registerSandboxFileRoutes } from './routes/sandbox-files.js';
import { registerSandboxSocketRoute } from './routes/sandbox-socket.js';
import { registerE2b } from './e2b/register-e2b.js';
import type { SandboxForwarder } from '../cluster/sandbox-forwarder.js';

/** ApiServerDeps are the services the routes call. */
export interface ApiServerDeps {
  tls: { cert: string; key: string };
  /** timeouts are the connection deadlines (config control.timeouts). */
  timeouts: ListenerTimeouts;
  services: ControlServices;
  agents: AgentHub;
  log: (msg: string, extra?: object) => void;
  /** forwarder sends sandbox requests to the replica that holds the sandbox's agent (several replicas only). */
  forwarder?: SandboxForwarder | null;
  /** onRoute observes every route fastify registers (the OpenAPI test compares them with the document). */
  onRoute?: (method: string, url: string) => void;
}

/** BODY_LIMIT_BYTES caps JSON request bodies (a job's argv and env fit easily); object bodies are streamed instead. */
const BODY_LIMIT_BYTES = 1024 * 1024;

/** buildApiServer creates the user-facing app with every route registered. */
export function buildApiServer(d: ApiServerDeps): { app: FastifyInstance; routes: RouteTable } {
  const { app, routes, edge, authenticate } = baseServer(d);
  const s = d.services;
  const forwarder = d.forwarder;
  if (forwarder) {
    // Before any parsing: the body is piped on as it arrives, and the owner authenticates the request itself.
    app.addHook('onRequest', async (request, reply) => {
      const target = await forwarder.targetOf(request.raw);
      if (!target) return;
      reply.hijack();
      forwarder.forward(target, request.raw, reply.raw);
      return reply;
    });
  }
  registerSystemRoutes(routes, d.agents, s.metrics);
  registerAgentRoutes(routes, d.agents, s.audit);
  registerTenancyRoutes(routes, s.tenancy);
  registerJobRoutes(routes, s.jobs, s.hub, s.quotas);
  registerNetworkRoutes(routes, s.network);
  registerAuditRoutes(routes, s.audit, s.tenancy);
  registerTokenRoutes(routes, s.tokens);
  registerDataRoutes(app, routes, s.objects, s.denials, edge);
  registerImageRoutes(app, routes, s.images, edge);
  registerConsoleRoutes(routes);
  registerSandboxRoutes(routes, s.sandboxes);
  registerSandboxProcessRoutes(routes, s.sandboxes, s.processes, s.quotas);
  registerSandboxFileRoutes(app, routes, s.sandboxes, s.files, edge);
  registerSandboxSocketRoute(routes, app.server, authenticate, s.sandboxes, s.processes, s.quotas, forwarder ? (req, socket, head) => forwarder.forwardUpgrade(req, socket, head) : undefined);
  // The e2b SDK's protocol, as a thin layer over the same services (not in the OpenAPI document: it is e2b's API).
  registerE2b(app, { services: s, authenticate, longBodies: edge, forwarder });
  return { app, routes };
}

/** buildDataServer creates the data service's own listener: objects and JWKS only, so a cell's gateway can reach nothing else. */
export function buildDataServer(d: ApiServerDeps): { app: FastifyInstance; routes: RouteTable } {
  const { app, routes, edge } = baseServer(d);
  registerTokenRoutes(routes, d.services.tokens);
  registerDataRoutes(app, routes, d.services.objects, d.services.denials, edge);
  return { app, routes };
}

function baseServer(d: ApiServerDeps): { app: FastifyInstance; routes: RouteTable; edge: ListenerEdge; authenticate: Authenticator } {
  const edge = new ListenerEdge(d.timeouts);
  const app = Fastify({
    ...edge.options(d.tls),
    bodyLimit: BODY_LIMIT_BYTES,
    logger: false,
    // fastify's own 503 while closing is in another shape: the onRequest hook below answers `unavailable` instead.
    return503OnClosing: false,
    // A client's own X-Request-Id is not trusted (it would let a caller forge log lines): every request gets a fresh one.
    genReqId: () => randomUUID(),
  });
  // One structured line per request: its id (also sent back as X-Request-Id), the route's pattern and its ids, status,
  // duration, and who called. Never a header, query string, body or response: keys, tokens, env and output stay out.
  app.addHook('onResponse', async (request, reply) => {
    const caller = callerOf(request);
    d.log('request', {
      requestId: request.id,
      method: request.method,
      route: request.routeOptions.url ?? null,
      ids: idsOf(request.params),
      status: reply.statusCode,
      ms: Math.round(reply.elapsedTime * 10) / 10,
      ...(caller ? { workspaceId: caller.workspace, keyId: caller.key, jobId: caller.job } : {}),
    });
  });
  let closing = false;
  app.addHook('preClose', (done) => {
    closing = true;
    done();
  });
  // One hook for both (each hook is a call and a promise per request): the request id goes back, and a server shutting
  // down refuses new work.
  app.addHook('onRequest', async (request, reply) => {
    void reply.header('x-request-id', request.id);
    if (closing) {
      void reply.header('connection', 'close');
      throw new ApiError('unavailable', 'this server is shutting down; retry on a new connection');
    }
  });
  edge.guard(app);
  app.setErrorHandler((err, request, reply) => {
    // A client that went away mid-body (an aborted upload) is not a platform fault; the answer most likely goes nowhere.
    const clientGone = !request.raw.complete && request.raw.destroyed;
    const body: ErrorBody = clientGone ? { error: { code: 'malformed_request', message: 'the connection closed before the whole body arrived' } } : toErrorBody(err);
    if (body.error.code === 'internal') d.log('internal error', { url: request.url, error: (err as Error).stack });
    const retryAfter = (body.error.details as { retryAfterSeconds?: unknown } | undefined)?.retryAfterSeconds;
    if (typeof retryAfter === 'number') void reply.header('retry-after', String(retryAfter));
    void reply.code(statusOf(body)).send(body);
  });
  app.setNotFoundHandler((request, reply) => {
    void reply.code(404).send({ error: { code: 'not_found', message: `no route ${request.method} ${request.url.split('?')[0]}` } } satisfies ErrorBody);
  });
  app.addHook('onRoute', (r) => {
    if ((r.config as { compat?: string } | undefined)?.compat) return; // a compatibility layer's route (e2b), not Cleanroom's API
    for (const m of [r.method].flat()) d.onRoute?.(m, r.url);
  });
  const s = d.services;
  const authenticate = createAuthenticator(s.tenancy, s.tokens, s.denials);
  // Every authenticated request spends one token of its workspace's request budget (429 rate_limited past it).
  const limited: typeof authenticate = async (header, mode) => {
    const principal = await authenticate(header, mode);
    s.quotas.takeRequest(principal.workspace);
    return principal;
  };
  return { app, routes: new RouteTable(app, limited), edge, authenticate: limited };
}

/** idsOf keeps the path parameters that are platform ids (job, sandbox, key, workspace…), never object keys or paths. */
function idsOf(params: unknown): Record<string, string> | undefined {
  if (!params || typeof params !== 'object') return undefined;
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(params)) if (k !== '*' && typeof v === 'string' && /^[A-Za-z0-9_.:-]{1,64}$/.test(v)) out[k] = v;
  return Object.keys(out).length ? out : undefined;
}

function toErrorBody(err: unknown): ErrorBody {
  if (err instanceof ApiError) return { error: { code: err.code, message: err.message, ...(err.details ? { details: err.details } : {}) } };
  const e = err as { code?: string; statusCode?: number; message?: string };
  if (e.code === 'FST_ERR_CTP_INVALID_JSON_BODY' || (e.statusCode === 400 && err instanceof SyntaxError)) {
    return { error: { code: 'invalid_json', message: `the body is not valid JSON: ${e.message ?? ''}` } };
  }
  if (e.code === 'FST_ERR_CTP_BODY_TOO_LARGE') return { error: { code: 'payload_too_large', message: `the body is larger than ${BODY_LIMIT_BYTES} bytes` } };
  if (e.code === 'FST_ERR_CTP_INVALID_MEDIA_TYPE') return { error: { code: 'invalid_request', message: 'send the body as application/json' } };
  if (e.code === 'FST_ERR_CTP_EMPTY_JSON_BODY') return { error: { code: 'invalid_json', message: 'the body is empty; send a JSON object' } };
  if (e.statusCode && e.statusCode >= 400 && e.statusCode < 500) return { error: { code: 'invalid_request', message: e.message ?? 'bad request' } };
  return { error: { code: 'internal', message: 'internal error; the operator can find details in the control plane log' } };
}

function statusOf(b: ErrorBody): number {
  return ERROR_CODES[b.error.code].status;
}
