/** Workspace routes (platform admins), API key routes (workspace and platform admins), and whoami (any key). */
import { z } from 'zod';
import type { TenancyService } from '../../tenancy/tenancy-service.js';
import type { RouteTable } from '../route-table.js';
import { ApiKeyRoleView, ApiKeyView, apiKeyView, WorkspaceView, workspaceView } from '../views.js';

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
    role: ApiKeyRoleView.optional().describe('default member; a workspace admin may give at most workspace-admin, only a platform admin platform-admin'),
  })
  .strict();

const ListApiKeys = z
  .object({ workspace: z.string().min(1).optional().describe("workspace id or name (default: the caller's own, or every workspace for a platform admin)") })
  .strict();

/**
 * registerTenancyRoutes adds workspace, key and whoami operations. Workspaces are a platform admin's; keys are managed
 * by workspace admins within their workspace and by platform admins everywhere (TenancyService enforces the scope).
 */
export function registerTenancyRoutes(t: RouteTable, tenancy: TenancyService): void {
  t.add({
    method: 'GET',
    path: '/v1/workspaces',
    operationId: 'listWorkspaces',
    summary: 'List workspaces (platform admin)',
    auth: 'platform-admin',
    response: z.object({ workspaces: z.array(WorkspaceView) }),
    handler: async () => ({ workspaces: (await tenancy.listWorkspaces()).map(workspaceView) }),
  });
  t.add({
    method: 'POST',
    path: '/v1/workspaces',
    operationId: 'createWorkspace',
    summary: 'Create a workspace (platform admin)',
    auth: 'platform-admin',
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
    summary:
      "Create an API key (workspace admin: in its own workspace, up to workspace-admin; platform admin: any); the key is shown only in this response. Another workspace is 404, a role above the caller's 403",
    auth: 'workspace-admin',
    body: CreateApiKey,
    status: 201,
    response: z.object({ id: z.string(), key: z.string(), workspaceId: z.string(), role: ApiKeyRoleView }),
    errors: ['not_found'],
    handler: async ({ body, principal }) => {
      const k = await tenancy.createApiKey(principal.key!, body.workspace, body.name, body.role ?? 'member');
      return { id: k.record.id, key: k.key, workspaceId: k.record.workspaceId, role: k.record.role };
    },
  });
  t.add({
    method: 'GET',
    path: '/v1/api-keys',
    operationId: 'listApiKeys',
    summary: "List API keys, revoked ones included, never their secrets (workspace admin: its workspace's; platform admin: any). Another workspace is 404",
    auth: 'workspace-admin',
    query: ListApiKeys,
    response: z.object({ keys: z.array(ApiKeyView) }),
    errors: ['not_found'],
    handler: async ({ principal, query }) => ({ keys: (await tenancy.listApiKeys(principal.key!, query.workspace)).map(apiKeyView) }),
  });
  t.add({
    method: 'DELETE',
    path: '/v1/api-keys/:id',
    operationId: 'revokeApiKey',
    summary: "Revoke an API key; it stops working immediately (workspace admin: its workspace's keys except platform admins', 403; platform admin: any). Another workspace's key is 404",
    auth: 'workspace-admin',
    response: z.object({ id: z.string(), revokedAt: z.string() }),
    errors: ['not_found'],
    handler: async ({ params, principal }) => tenancy.revokeApiKey(principal.key!, params.id!),
  });
  t.add({
    method: 'GET',
    path: '/v1/whoami',
    operationId: 'whoami',
    summary: 'The workspace, key and role this request is made with',
    auth: 'key',
    response: z.object({ keyId: z.string(), role: ApiKeyRoleView, workspace: WorkspaceView }),
    handler: async ({ principal }) => ({ keyId: principal.key!.id, role: principal.key!.role, workspace: workspaceView(principal.workspace) }),
  });
}
