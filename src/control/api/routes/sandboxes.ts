/** Sandbox routes: create (answers when ready), list by metadata (paged), get, delete (answers with the end), timeout. */
import { z } from 'zod';
import { ApiError } from '../../../shared/errors.js';
import type { SandboxService } from '../../sandboxes/sandbox-service.js';
import { LIST_PAGE_MAX } from '../../sandboxes/sandbox-service.js';
import { SandboxRequestSchema } from '../../sandboxes/sandbox-request.js';
import { actorOf, type RouteTable } from '../route-table.js';
import { SandboxView, sandboxView } from '../views.js';

const ListQuery = z
  .object({
    metadata: z.string().max(8192).optional().describe('only sandboxes whose metadata has every pair: k1=v1&k2=v2, URL-encoded as one parameter (as e2b sends it)'),
    state: z.enum(['live', 'ended', 'all']).optional().describe('live (default): starting or running; ended; all'),
    limit: z.coerce.number().int().min(1).max(LIST_PAGE_MAX).optional().describe(`at most this many (default 100, at most ${LIST_PAGE_MAX})`),
    next: z.string().max(512).optional().describe('the `next` of the previous page'),
  })
  .strict();

/** registerSandboxRoutes adds the sandbox lifecycle operations. */
export function registerSandboxRoutes(t: RouteTable, sandboxes: SandboxService): void {
  t.add({
    method: 'POST',
    path: '/v1/sandboxes',
    operationId: 'createSandbox',
    summary: 'Create a sandbox: a cell that stays up to run processes and hold files; answers once it is ready (state running)',
    auth: 'key',
    body: SandboxRequestSchema,
    status: 201,
    response: SandboxView.describe('state running when ready; starting if no cell was free within 60 s; ended if it failed to start'),
    errors: ['limit_exceeded', 'unsupported_runtime', 'runtime_not_offered', 'size_not_offered', 'quota_exceeded'],
    handler: async ({ principal, body }) => sandboxView(await sandboxes.create(principal.workspace, body, actorOf(principal))),
  });
  t.add({
    method: 'GET',
    path: '/v1/sandboxes',
    operationId: 'listSandboxes',
    summary: "List the workspace's sandboxes, newest first, by metadata and state; paged",
    auth: 'key',
    query: ListQuery,
    response: z.object({ sandboxes: z.array(SandboxView), next: z.string().nullable().describe('pass as `next` for the following page; null on the last') }),
    handler: async ({ principal, query }) => {
      const r = await sandboxes.list(principal.workspace, { metadata: parseMetadata(query.metadata), state: query.state ?? 'live', limit: query.limit ?? 100, ...(query.next !== undefined ? { cursor: query.next } : {}) });
      return { sandboxes: r.sandboxes.map(sandboxView), next: r.next };
    },
  });
  t.add({
    method: 'GET',
    path: '/v1/sandboxes/:id',
    operationId: 'getSandbox',
    summary: 'Get a sandbox (with its wipe receipt once it has ended)',
    auth: 'key',
    response: SandboxView,
    errors: ['not_found'],
    handler: async ({ principal, params }) => sandboxView(await sandboxes.get(principal.workspace, params.id!)),
  });
  t.add({
    method: 'DELETE',
    path: '/v1/sandboxes/:id',
    operationId: 'deleteSandbox',
    summary: 'End a sandbox: its processes are killed and its cell wiped; answers with its final state (the receipt follows on GET)',
    auth: 'key',
    response: SandboxView,
    errors: ['not_found'],
    handler: async ({ principal, params }) => sandboxView(await sandboxes.kill(principal.workspace, params.id!)),
  });
  t.add({
    method: 'POST',
    path: '/v1/sandboxes/:id/timeout',
    operationId: 'setSandboxTimeout',
    summary: "Move a running sandbox's deadline to timeoutSeconds from now (extend or shorten)",
    auth: 'key',
    body: z.object({ timeoutSeconds: z.number().int().describe('seconds from now; at most the workspace limit and 24 h') }).strict(),
    response: SandboxView,
    errors: ['not_found', 'sandbox_not_running', 'limit_exceeded'],
    handler: async ({ principal, params, body }) => sandboxView(await sandboxes.setTimeout(principal.workspace, params.id!, body.timeoutSeconds)),
  });
}

/** parseMetadata reads the list filter `k1=v1&k2=v2` (one URL-encoded parameter) into pairs. */
function parseMetadata(raw: string | undefined): Record<string, string> {
  if (raw === undefined || raw === '') return {};
  const out: Record<string, string> = {};
  for (const [k, v] of new URLSearchParams(raw)) {
    if (!k) throw new ApiError('invalid_request', 'query.metadata: each pair needs a key (k=v&k2=v2)');
    out[k] = v;
  }
  if (Object.keys(out).length > 64) throw new ApiError('invalid_request', 'query.metadata: at most 64 pairs');
  return out;
}
