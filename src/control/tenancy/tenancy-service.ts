/** TenancyService manages workspaces and API keys, and authenticates requests. */
import { randomBytes } from 'node:crypto';
import { ApiError } from '../../shared/errors.js';
import { roleAtLeast, type ApiKeyRecord, type ApiKeyRole, type Workspace } from '../model.js';
import type { Store } from '../store/store.js';
import { mintApiKey, parseApiKey, secretMatches } from '../auth/api-keys.js';
import type { Principal } from '../api/route-table.js';
import type { AuditLog } from '../audit/audit-log.js';
import type { AccessDenials } from '../audit/access-denials.js';
import type { Bus } from '../cluster/bus.js';

/**
 * PRINCIPAL_TTL_MS is how long an authenticated key's record and workspace are reused without reading the store (the
 * secret is still checked against the remembered hash at every request). A key revoked through this replica stops at
 * once; through another, as soon as the bus tells this one, and at the latest after this long.
 */
const PRINCIPAL_TTL_MS = 2000;
/** PRINCIPALS_KEPT bounds that memory (and the workspaces remembered, which never change once created). */
const PRINCIPALS_KEPT = 10_000;

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
    private readonly denials: AccessDenials,
  ) {}

  /** Keys recently authenticated, by key id; `gen` drops what a read begun before a revocation would remember. */
  private readonly principals = new Map<string, { key: ApiKeyRecord; workspace: Workspace; until: number }>();
  private readonly workspaces = new Map<string, Workspace>();
  private gen = 0;
  private bus: { bus: Bus; replicaId: string } | null = null;

  /** attachBus makes revocations through this replica known to the others, and theirs to this one. */
  attachBus(bus: Bus, replicaId: string): void {
    this.bus = { bus, replicaId };
    bus.subscribe((msg) => {
      if (msg.type === 'api_key.revoked' && msg.from !== replicaId) this.forget(msg.keyId);
    });
  }

  private forget(keyId: string): void {
    this.gen++;
    this.principals.delete(keyId);
  }

  /** workspace returns a workspace by id (remembered: a workspace never changes once created), or null. */
  async workspace(id: string): Promise<Workspace | null> {
    const hit = this.workspaces.get(id);
    if (hit) return hit;
    const ws = await this.store.getWorkspace(id);
    if (ws) {
      if (this.workspaces.size >= PRINCIPALS_KEPT) this.workspaces.clear();
      this.workspaces.set(id, ws);
    }
    return ws;
  }

  /** authenticate resolves `Authorization: Bearer <key>` to its key and workspace; 401 if absent, wrong or revoked. */
  async authenticate(header: string | undefined): Promise<Principal> {
    const m = /^Bearer (\S+)$/.exec(header ?? '');
    if (!m) throw new ApiError('unauthenticated', 'send an API key as "Authorization: Bearer crk_…"');
    const parsed = parseApiKey(m[1]!);
    const hit = parsed ? this.principals.get(parsed.id) : undefined;
    if (hit && hit.until > Date.now() && secretMatches(parsed!.secret, hit.key.secretHash)) return { key: hit.key, workload: null, workspace: hit.workspace };
    const gen = this.gen;
    const key = parsed ? await this.store.getApiKey(parsed.id) : null;
    if (!parsed || !key || key.revokedAt || !secretMatches(parsed.secret, key.secretHash)) {
      throw new ApiError('unauthenticated', 'the API key is not valid (wrong, revoked or malformed)');
    }
    const workspace = await this.workspace(key.workspaceId);
    if (!workspace) throw new ApiError('unauthenticated', 'the API key belongs to no workspace');
    if (gen === this.gen) {
      if (this.principals.size >= PRINCIPALS_KEPT) this.principals.clear();
      this.principals.set(key.id, { key, workspace, until: Date.now() + PRINCIPAL_TTL_MS });
    }
    return { key, workload: null, workspace };
  }

  /**
   * workspaceFor resolves a workspace id or name as `by` may see it: a platform admin any workspace, other keys only
   * their own. Any other is 404, worded as for one that does not exist, so that its existence is not revealed.
   */
  async workspaceFor(by: ApiKeyRecord, ref: string): Promise<Workspace> {
    const ws = (await this.store.getWorkspace(ref)) ?? (await this.store.getWorkspaceByName(ref));
    if (!ws || (by.role !== 'platform-admin' && ws.id !== by.workspaceId)) throw new ApiError('not_found', `no workspace "${ref}"`);
    return ws;
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

  /**
   * createApiKey mints a key for a workspace given by id or name; the plaintext is returned once. A workspace admin
   * may mint workspace-admin and member keys of its own workspace; only a platform admin may mint a platform admin
   * (403, audited) or reach another workspace (404, see workspaceFor).
   */
  async createApiKey(by: ApiKeyRecord, workspaceRef: string, name: string, role: ApiKeyRole): Promise<{ key: string; record: ApiKeyRecord }> {
    if (!roleAtLeast(by.role, role)) await this.refuse(by, null, `only a ${role} key may create a ${role} key`);
    return this.mint(await this.workspaceFor(by, workspaceRef), name, role, `key:${by.id}`);
  }

  /** listApiKeys returns the keys (never their secrets) of one workspace, or of every workspace `by` may see. */
  async listApiKeys(by: ApiKeyRecord, workspaceRef?: string): Promise<ApiKeyRecord[]> {
    if (workspaceRef !== undefined) return this.store.listApiKeys((await this.workspaceFor(by, workspaceRef)).id);
    return this.store.listApiKeys(by.role === 'platform-admin' ? undefined : by.workspaceId);
  }

  /**
   * revokeApiKey stops a key from working; 404 if it is unknown, already revoked, or in a workspace `by` may not see.
   * A workspace admin may not revoke a platform admin's key, even in its own workspace (403, audited).
   */
  async revokeApiKey(by: ApiKeyRecord, id: string): Promise<{ id: string; revokedAt: string }> {
    const key = await this.store.getApiKey(id);
    if (!key || key.revokedAt || (by.role !== 'platform-admin' && key.workspaceId !== by.workspaceId)) throw new ApiError('not_found', `no active API key ${id}`);
    if (!roleAtLeast(by.role, key.role)) await this.refuse(by, id, `only a ${key.role} key may revoke a ${key.role} key`);
    const revokedAt = new Date().toISOString();
    this.forget(id);
    const revoked = await this.store.revokeApiKey(id, revokedAt);
    // Forgotten again once the store says so (a request read it meanwhile), and by every other replica.
    this.forget(id);
    if (this.bus) this.bus.bus.publish({ type: 'api_key.revoked', from: this.bus.replicaId, keyId: id });
    if (!revoked) throw new ApiError('not_found', `no active API key ${id}`);
    await this.audit.record({ type: 'api_key.revoked', actor: `key:${by.id}`, workspaceId: key.workspaceId, subject: id, details: { name: key.name, role: key.role } });
    return { id, revokedAt };
  }

  /**
   * bootstrap creates the `default` workspace and a platform-admin key if no key exists yet, or a new platform-admin
   * key if none is left active (every one revoked: the operator who can start Cleanroom on this host gets back in).
   * Returns the key once, or null if there was nothing to do.
   */
  async bootstrap(): Promise<string | null> {
    const first = (await this.store.countApiKeys()) === 0;
    if (!first && (await this.store.countActiveApiKeys('platform-admin')) > 0) return null;
    const ws = (await this.store.getWorkspaceByName('default')) ?? (await this.createWorkspace('default', {}));
    return (await this.mint(ws, first ? 'bootstrap-admin' : 'recovery-admin', 'platform-admin', 'system')).key;
  }

  private async mint(ws: Workspace, name: string, role: ApiKeyRole, actor: string): Promise<{ key: string; record: ApiKeyRecord }> {
    const k = mintApiKey(ws.id, name, role);
    await this.store.createApiKey(k.record);
    await this.audit.record({ type: 'api_key.created', actor, workspaceId: ws.id, subject: k.record.id, details: { name, role } });
    return { key: k.plaintext, record: k.record };
  }

  private async refuse(by: ApiKeyRecord, subject: string | null, message: string): Promise<never> {
    await this.denials.record({ actor: `key:${by.id}`, workspaceId: by.workspaceId, subject, reason: 'forbidden', details: { message } });
    throw new ApiError('forbidden', message);
  }
}
