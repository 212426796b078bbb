/** RouteTable registers each route with fastify and with the OpenAPI document at once, so they cannot drift. */
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { z } from 'zod';
import { ApiError, ERROR_CODES } from '../../shared/errors.js';
import type { ApiKeyRecord, Workspace } from '../model.js';
import type { WorkloadIdentity } from '../tokens/token-service.js';

/** Principal is who made a request: an API key, or (on data routes) a workload token, and its workspace. */
export interface Principal {
  key: ApiKeyRecord | null;
  workload: WorkloadIdentity | null;
  workspace: Workspace;
}

/**
 * AuthMode says who may call a route: anyone, any API key, a key of at least that role (see API_KEY_ROLES; which
 * workspaces it reaches is the service's business), or an API key or workload token (data routes).
 */
export type AuthMode = 'none' | 'key' | 'workspace-admin' | 'platform-admin' | 'data';

/** actorOf names a principal in the audit log. */
export function actorOf(p: Principal): string {
  return p.key ? `key:${p.key.id}` : `workload:${p.workload?.jobId ?? '?'}`;
}

/** RouteContext is what a handler sees: parsed input, never the raw request. */
export interface RouteContext<B, Q> {
  principal: Principal;
  body: B;
  query: Q;
  params: Record<string, string>;
  /** reply is given only to streaming routes, which own the response. */
  reply: FastifyReply;
  request: FastifyRequest;
}

/** RouteDef declares one API operation. */
export interface RouteDef<B = unknown, Q = unknown> {
  method: 'GET' | 'POST' | 'PUT' | 'DELETE';
  path: string;
  operationId: string;
  summary: string;
  /** none: public; key: any valid API key; workspace-admin, platform-admin: a key of at least that role; data: an API key or a workload token. */
  auth: AuthMode;
  body?: z.ZodType<B>;
  query?: z.ZodType<Q>;
  status?: number;
  /** response documents the success body. */
  response: z.ZodType | { contentType: string; description: string };
  /** errors lists the codes this route may answer with (beyond auth and validation). */
  errors?: Array<keyof typeof ERROR_CODES>;
  handler(ctx: RouteContext<B, Q>): Promise<unknown>;
}

/** callers remembers who made each authenticated request, for the request log (never the key's secret). */
const callers = new WeakMap<FastifyRequest, { workspace: string; key: string | null; job: string | null }>();

/** callerOf is the workspace and key id (or workload's job) of an authenticated request, if it got that far. */
export function callerOf(request: FastifyRequest): { workspace: string; key: string | null; job: string | null } | undefined {
  return callers.get(request);
}

/** LISTENER_ERRORS are the codes any request may get from the listener itself, before it reaches a route. */
const LISTENER_ERRORS: Array<keyof typeof ERROR_CODES> = ['malformed_request', 'request_timeout', 'headers_too_large'];

/** Authenticator turns an Authorization header into a Principal or throws 401/403. */
export type Authenticator = (header: string | undefined, mode: Exclude<AuthMode, 'none'>) => Promise<Principal>;

/** RouteTable collects routes and renders the OpenAPI document. */
export class RouteTable {
  constructor(
    private readonly app: FastifyInstance,
    private readonly authenticate: Authenticator,
    private readonly routes: RouteDef<any, any>[] = [],
  ) {}

  /** within returns a table that registers on a child fastify context (own body parsers) but documents into this one. */
  within(instance: FastifyInstance): RouteTable {
    return new RouteTable(instance, this.authenticate, this.routes);
  }

  /** add registers a route. */
  add<B, Q>(def: RouteDef<B, Q>): void {
    this.routes.push(def);
    this.app.route({
      method: def.method,
      url: def.path,
      handler: async (request, reply) => {
        const principal = def.auth === 'none' ? (null as unknown as Principal) : await this.authenticate(request.headers.authorization, def.auth);
        if (principal) callers.set(request, { workspace: principal.workspace.id, key: principal.key?.id ?? null, job: principal.workload?.jobId ?? null });
        const body = parse(def.body, request.body ?? {}, 'body') as B;
        const query = parse(def.query, request.query ?? {}, 'query') as Q;
        const result = await def.handler({ principal, body, query, params: request.params as Record<string, string>, reply, request });
        if (reply.sent) return reply;
        reply.code(def.status ?? 200);
        return result;
      },
    });
  }

  /** openapi renders the OpenAPI 3.1 document of every registered route. */
  openapi(): Record<string, unknown> {
    const paths: Record<string, Record<string, unknown>> = {};
    for (const r of this.routes) {
      // A trailing wildcard (`/*`) is documented as a `{key}` parameter that may contain slashes.
      const path = r.path.replace(/:([A-Za-z]+)/g, '{$1}').replace(/\*$/, '{key}');
      const names = [...r.path.matchAll(/:([A-Za-z]+)/g)].map((m) => m[1]!).concat(r.path.endsWith('*') ? ['key'] : []);
      const params = names.map((name) => ({ name, in: 'path', required: true, schema: { type: 'string' } }));
      const queryParams = r.query ? Object.entries((toSchema(r.query).properties ?? {}) as Record<string, unknown>).map(([name, schema]) => ({ name, in: 'query', required: false, schema })) : [];
      const success =
        r.response instanceof z.ZodType
          ? { description: 'OK', content: { 'application/json': { schema: toSchema(r.response) } } }
          : { description: r.response.description, content: { [r.response.contentType]: {} } };
      // Any request may be refused by the listener before routing (malformed_request, request_timeout, headers_too_large; a
      // path parameter too long for an id: uri_too_long) or while it shuts down (unavailable), and any route may fail
      // (internal); a JSON body over the size limit is refused before parsing (payload_too_large); every
      // authenticated request spends its workspace's request budget (rate_limited).
      const errorCodes = new Set<string>([
        ...(r.auth === 'none' ? [] : ['unauthenticated', 'rate_limited']),
        ...(r.auth === 'workspace-admin' || r.auth === 'platform-admin' ? ['forbidden'] : []),
        ...(r.auth === 'data' ? ['invalid_token', 'token_expired', 'token_revoked', 'out_of_scope'] : []),
        ...(r.body || r.query ? ['invalid_request'] : []),
        ...(r.body ? ['invalid_json', 'payload_too_large'] : []),
        ...(r.errors ?? []),
        ...LISTENER_ERRORS,
        ...(r.path.includes(':') ? ['uri_too_long'] : []),
        'internal',
        'unavailable',
      ]);
      const responses: Record<string, unknown> = { [String(r.status ?? 200)]: success };
      for (const code of errorCodes) {
        const status = String(ERROR_CODES[code as keyof typeof ERROR_CODES].status);
        responses[status] ??= { description: '', content: { 'application/json': { schema: { $ref: '#/components/schemas/Error' } } } };
        (responses[status] as { description: string }).description += `${code}: ${ERROR_CODES[code as keyof typeof ERROR_CODES].doc} `;
      }
      paths[path] ??= {};
      paths[path]![r.method.toLowerCase()] = {
        operationId: r.operationId,
        summary: r.summary,
        ...(r.auth === 'none' ? { security: [] } : r.auth === 'data' ? { security: [{ apiKey: [] }, { workloadToken: [] }] } : {}),
        parameters: [...params, ...queryParams],
        ...(r.body ? { requestBody: { required: true, content: { 'application/json': { schema: toSchema(r.body) } } } } : {}),
        responses,
      };
    }
    return {
      openapi: '3.1.0',
      info: { title: 'Cleanroom API', version: '1' },
      security: [{ apiKey: [] }],
      paths,
      components: {
        securitySchemes: {
          apiKey: { type: 'http', scheme: 'bearer', description: 'An API key: crk_<id>_<secret>' },
          workloadToken: { type: 'http', scheme: 'bearer', bearerFormat: 'JWT', description: "A workload's token (the file named by CLEANROOM_TOKEN_FILE inside a cell)" },
        },
        schemas: {
          Error: {
            type: 'object',
            required: ['error'],
            properties: { error: { type: 'object', required: ['code', 'message'], properties: { code: { enum: Object.keys(ERROR_CODES) }, message: { type: 'string' }, details: {} } } },
          },
        },
      },
    };
  }
}

function toSchema(s: z.ZodType): Record<string, unknown> {
  const { $schema: _ignored, ...rest } = z.toJSONSchema(s, { io: 'input', unrepresentable: 'any' }) as Record<string, unknown>;
  return rest;
}

function parse(schema: z.ZodType | undefined, value: unknown, where: string): unknown {
  if (!schema) return value;
  const r = schema.safeParse(value);
  if (r.success) return r.data;
  const issues = r.error.issues.map((i) => ({ path: [where, ...i.path.map(String)].join('.'), message: i.message }));
  const first = issues[0]!;
  throw new ApiError('invalid_request', `${first.path}: ${first.message}`, { issues });
}
