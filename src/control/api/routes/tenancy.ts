/** Workspace and API key routes (admin keys), and whoami (any key). */
import { z } from 'zod';
import type { TenancyService } from '../../tenancy/tenancy-service.js';
import { actorOf, type RouteTable } from '../route-table.js';
import { WorkspaceView, workspaceView } from '../views.js';

const CreateWorkspace = z
  .object({
    name: z.string().regex(/^[a-z0-9][a-z0-9-]{0,62}$/, 'names are lowercase letters, digits and -, at most 63'),
    maxCpu: z.number().positive().max(64).optional(),
    maxMemoryMiB: z.number().int().min(16).optional(),
    maxTimeoutSeconds: z.number().int().min(1).max(7 * 24 * 3600).optional(),
  })
  .strict();

const CreateApiKey = z
  .object({
    workspace: z.string().min(1).describe('workspace id or name'),
    name: z.string().min(1).max(100),
    admin: z.boolean().optional(),
  })
  .strict();

/** registerTenancyRoutes adds workspace, key and whoami operations. */
export function registerTenancyRoutes(t: RouteTable, tenancy: TenancyService): void {
  t.add({
    method: 'GET',
    path: '/v1/workspaces',
    operationId: 'listWorkspaces',
    summary: 'List workspaces (admin)',
    auth: 'admin',
    response: z.object({ workspaces: z.array(WorkspaceView) }),
    handler: async () => ({ workspaces: (await tenancy.listWorkspaces()).map(workspaceView) }),
  });
  t.add({
    method: 'POST',
    path: '/v1/workspaces',
    operationId: 'createWorkspace',
    summary: 'Create a workspace (admin)',
    auth: 'admin',
    body: CreateWorkspace,
    status: 201,
    response: WorkspaceView,
    errors: ['already_exists'],
    handler: async ({ body }) => workspaceView(await tenancy.createWorkspace(body.name, body)),
  });
  t.add({
    method: 'POST',
    path: '/v1/api-keys',
    operationId: 'createApiKey',
    summary: 'Create an API key for a workspace (admin); the key is shown only in this response',
    auth: 'admin',
    body: CreateApiKey,
    status: 201,
    response: z.object({ id: z.string(), key: z.string(), workspaceId: z.string(), admin: z.boolean() }),
    errors: ['not_found'],
    handler: async ({ body, principal }) => {
      const k = await tenancy.createApiKey(body.workspace, body.name, body.admin ?? false, actorOf(principal));
      return { id: k.id, key: k.key, workspaceId: k.workspace.id, admin: body.admin ?? false };
    },
  });
  t.add({
    method: 'DELETE',
    path: '/v1/api-keys/:id',
    operationId: 'revokeApiKey',
    summary: 'Revoke an API key (admin); it stops working at once',
    auth: 'admin',
    response: z.object({ id: z.string(), revokedAt: z.string() }),
    errors: ['not_found'],
    handler: async ({ params, principal }) => tenancy.revokeApiKey(params.id!, actorOf(principal)),
  });
  t.add({
    method: 'GET',
    path: '/v1/whoami',
    operationId: 'whoami',
    summary: 'The workspace and key this request is made with',
    auth: 'key',
    response: z.object({ keyId: z.string(), admin: z.boolean(), workspace: WorkspaceView }),
    handler: async ({ principal }) => ({ keyId: principal.key!.id, admin: principal.key!.admin, workspace: workspaceView(principal.workspace) }),
  });
}
