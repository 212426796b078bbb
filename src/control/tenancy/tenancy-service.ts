/** TenancyService manages workspaces and API keys, and authenticates requests. */
import { randomBytes } from 'node:crypto';
import { ApiError } from '../../shared/errors.js';
import type { Workspace } from '../model.js';
import type { Store } from '../store/store.js';
import { mintApiKey, parseApiKey, secretMatches } from '../auth/api-keys.js';
import type { Principal } from '../api/route-table.js';
import type { AuditLog } from '../audit/audit-log.js';

/** WorkspaceLimits are a workspace's ceilings. */
export interface WorkspaceLimits {
  maxCpu: number;
  maxMemoryMiB: number;
  maxTimeoutSeconds: number;
  maxDiskMiB: number;
}

/** TenancyService is the only writer of workspaces and keys. */
export class TenancyService {
  constructor(
    private readonly store: Store,
    private readonly defaultLimits: WorkspaceLimits,
    private readonly audit: AuditLog,
  ) {}

  /** authenticate resolves `Authorization: Bearer <key>`; 401 if absent or wrong, 403 if not admin when required. */
  async authenticate(header: string | undefined, adminOnly: boolean): Promise<Principal> {
    const m = /^Bearer (\S+)$/.exec(header ?? '');
    if (!m) throw new ApiError('unauthenticated', 'send an API key as "Authorization: Bearer crk_…"');
    const parsed = parseApiKey(m[1]!);
    const key = parsed ? await this.store.getApiKey(parsed.id) : null;
    if (!parsed || !key || key.revokedAt || !secretMatches(parsed.secret, key.secretHash)) {
      throw new ApiError('unauthenticated', 'the API key is not valid (wrong, revoked or malformed)');
    }
    const workspace = await this.store.getWorkspace(key.workspaceId);
    if (!workspace) throw new ApiError('unauthenticated', 'the API key belongs to no workspace');
    if (adminOnly && !key.admin) throw new ApiError('forbidden', 'this needs an admin API key');
    return { key, workload: null, workspace };
  }

  /** createWorkspace makes a workspace; names are unique. */
  async createWorkspace(name: string, limits: Partial<WorkspaceLimits>): Promise<Workspace> {
    if (await this.store.getWorkspaceByName(name)) throw new ApiError('already_exists', `a workspace named "${name}" already exists`);
    const l = { ...this.defaultLimits, ...limits };
    const w: Workspace = {
      id: `ws_${randomBytes(8).toString('hex')}`,
      name,
      createdAt: new Date().toISOString(),
      maxCpu: l.maxCpu,
      maxMemoryBytes: l.maxMemoryMiB * 1024 * 1024,
      maxTimeoutSeconds: l.maxTimeoutSeconds,
      maxDiskBytes: l.maxDiskMiB * 1024 * 1024,
    };
    await this.store.createWorkspace(w);
    return w;
  }

  /** listWorkspaces returns every workspace. */
  listWorkspaces(): Promise<Workspace[]> {
    return this.store.listWorkspaces();
  }

  /** createApiKey mints a key for a workspace given by id or name; the plaintext is returned once. */
  async createApiKey(workspaceRef: string, name: string, admin: boolean, actor: string): Promise<{ key: string; id: string; workspace: Workspace }> {
    const ws = (await this.store.getWorkspace(workspaceRef)) ?? (await this.store.getWorkspaceByName(workspaceRef));
    if (!ws) throw new ApiError('not_found', `no workspace "${workspaceRef}"`);
    const k = mintApiKey(ws.id, name, admin);
    await this.store.createApiKey(k.record);
    await this.audit.record({ type: 'api_key.created', actor, workspaceId: ws.id, subject: k.record.id, details: { name, admin } });
    return { key: k.plaintext, id: k.record.id, workspace: ws };
  }

  /** revokeApiKey stops a key from working; 404 if it is unknown or already revoked. */
  async revokeApiKey(id: string, actor: string): Promise<{ id: string; revokedAt: string }> {
    const key = await this.store.getApiKey(id);
    const revokedAt = new Date().toISOString();
    if (!key || !(await this.store.revokeApiKey(id, revokedAt))) throw new ApiError('not_found', `no active API key ${id}`);
    await this.audit.record({ type: 'api_key.revoked', actor, workspaceId: key.workspaceId, subject: id, details: { name: key.name } });
    return { id, revokedAt };
  }

  /** bootstrap creates the `default` workspace and an admin key if no key exists yet; returns the key once. */
  async bootstrap(): Promise<string | null> {
    if ((await this.store.countApiKeys()) > 0) return null;
    const ws = (await this.store.getWorkspaceByName('default')) ?? (await this.createWorkspace('default', {}));
    return (await this.createApiKey(ws.id, 'bootstrap-admin', true, 'system')).key;
  }
}
