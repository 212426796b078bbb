/** SqliteStore is the embedded Store adapter (better-sqlite3, WAL). */
import Database from 'better-sqlite3';
import type { EgressPolicy } from '../../shared/net/egress-policy.js';
import { sealEvent, type AuditEvent, type AuditEventInput } from '../audit/chain.js';
import { DEFAULT_EGRESS_POLICY, TERMINAL_STATUSES, type AgentRecord, type ApiKeyRecord, type ApiKeyRole, type DeniedConnectionRecord, type ImageRecord, type ImageState, type Job, type JobStatus, type ObjectMeta, type OutputChunk, type ReplicaRecord, type SigningKeyRecord, type TokenRecord, type Workspace } from '../model.js';
import type { AgentFiguresRow, AuditQuery, DeniedQuery, ObjectQuery, SandboxQuery, Store } from './store.js';
import { migrateSqlite } from './migrations/sqlite.js';
import { AGENT_COLUMNS, agentFrom, patchedAgentFields, type AgentRow } from './agent-columns.js';

export { SCHEMA_VERSION } from './migrations/sqlite.js';

interface AuditRow { seq: number; time: string; type: string; actor: string; workspace_id: string | null; subject: string | null; details: string; prev_hash: string; hash: string }
interface ObjectRow { workspace_id: string; key: string; object_id: string; size: number; sha256: string; wrapped_key: Buffer; created_at: string }
interface TokenRow { jti: string; job_id: string; workspace_id: string; issued_at: string; expires_at: string; revoked_at: string | null }
interface WorkspaceRow { id: string; name: string; created_at: string; max_cpu: number; max_memory_bytes: number; max_timeout_seconds: number; max_disk_bytes: number }
interface DeniedRow { workspace_id: string; job_id: string; cell_id: string; action: 'denied' | 'dry-run'; destination: string; protocol: string; port: number | null; time: string }
interface KeyRow { id: string; workspace_id: string; name: string; role: ApiKeyRole; secret_hash: string; created_at: string; revoked_at: string | null }

/** SqliteStore keeps state in one SQLite file; a job is one row plus its output chunks. */
export class SqliteStore implements Store {
  private readonly db: Database.Database;
  private readonly stmts;
  /**
   * The transactions of a job's hot path, built once: db.transaction() makes its wrappers anew on every call, which cost
   * several % of the control plane's CPU per job (bench/fleet.ts).
   */
  private readonly tx;
  /** One prepared UPDATE per set of patched agent fields (a handful in practice). */
  private readonly agentUpdates: Map<string, Database.Statement>;

  constructor(path: string) {
    this.db = new Database(path);
    this.db.pragma('journal_mode = WAL');
    // NORMAL in WAL mode: commits are durable across a process crash; an OS crash may lose the last few.
    this.db.pragma('synchronous = NORMAL');
    this.db.pragma('foreign_keys = ON');
    migrateSqlite(this.db);
    const d = this.db;
    this.stmts = {
      insertWorkspace: d.prepare('INSERT INTO workspaces VALUES (@id, @name, @createdAt, @maxCpu, @maxMemoryBytes, @maxTimeoutSeconds, @maxDiskBytes)'),
      workspace: d.prepare<[string], WorkspaceRow>('SELECT * FROM workspaces WHERE id = ?'),
      workspaceByName: d.prepare<[string], WorkspaceRow>('SELECT * FROM workspaces WHERE name = ?'),
      workspaces: d.prepare<[], WorkspaceRow>('SELECT * FROM workspaces ORDER BY created_at'),
      insertKey: d.prepare('INSERT INTO api_keys (id, workspace_id, name, role, secret_hash, created_at, revoked_at) VALUES (@id, @workspaceId, @name, @role, @secretHash, @createdAt, @revokedAt)'),
      keysOfWorkspace: d.prepare<[string], KeyRow>('SELECT * FROM api_keys WHERE workspace_id = ? ORDER BY created_at, id'),
      allKeys: d.prepare<[], KeyRow>('SELECT * FROM api_keys ORDER BY created_at, id'),
      activeKeysWithRole: d.prepare<[string], { n: number }>('SELECT count(*) AS n FROM api_keys WHERE role = ? AND revoked_at IS NULL'),
      key: d.prepare<[string], KeyRow>('SELECT * FROM api_keys WHERE id = ?'),
      countKeys: d.prepare<[], { n: number }>('SELECT count(*) AS n FROM api_keys'),
      insertJob: d.prepare('INSERT INTO jobs VALUES (?, ?, ?, ?, ?)'),
      job: d.prepare<[string], { doc: string }>('SELECT doc FROM jobs WHERE id = ?'),
      jobs: d.prepare<[string, number], { doc: string }>("SELECT doc FROM jobs WHERE workspace_id = ? AND json_extract(doc, '$.mode') IS NOT 'sandbox' ORDER BY created_at DESC, id DESC LIMIT ?"),
      updateJob: d.prepare('UPDATE jobs SET status = ?, doc = ? WHERE id = ?'),
      insertOutput: d.prepare('INSERT INTO job_output VALUES (?, ?, ?, ?)'),
      output: d.prepare<[string, number, number], { seq: number; stream: 'stdout' | 'stderr'; data: Buffer }>(
        'SELECT seq, stream, data FROM job_output WHERE job_id = ? AND seq > ? ORDER BY seq LIMIT ?',
      ),
      endedBefore: d.prepare<[string, number], { id: string }>(
        "SELECT id FROM jobs WHERE json_extract(doc, '$.endedAt') < ? AND json_extract(doc, '$.expiredAt') IS NULL ORDER BY created_at LIMIT ?",
      ),
      deleteOutput: d.prepare('DELETE FROM job_output WHERE job_id = ?'),
      lastSeq: d.prepare<[string], { seq: number | null }>('SELECT MAX(seq) AS seq FROM job_output WHERE job_id = ?'),
      policy: d.prepare<[string], { doc: string }>('SELECT doc FROM egress_policies WHERE workspace_id = ?'),
      upsertPolicy: d.prepare(
        'INSERT INTO egress_policies VALUES (?, ?, ?) ON CONFLICT(workspace_id) DO UPDATE SET doc = excluded.doc, updated_at = excluded.updated_at',
      ),
      insertDenied: d.prepare(
        'INSERT INTO denied_connections (workspace_id, job_id, cell_id, action, destination, protocol, port, time) VALUES (@workspaceId, @jobId, @cellId, @action, @destination, @protocol, @port, @time)',
      ),
      denied: d.prepare<[string, number], DeniedRow>('SELECT * FROM denied_connections WHERE workspace_id = ? ORDER BY time DESC, id DESC LIMIT ?'),
      deniedOfJob: d.prepare<[string, string, number], DeniedRow>(
        'SELECT * FROM denied_connections WHERE workspace_id = ? AND job_id = ? ORDER BY time DESC, id DESC LIMIT ?',
      ),
      revokeKey: d.prepare('UPDATE api_keys SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL'),
      lastAudit: d.prepare<[], { seq: number; hash: string }>('SELECT seq, hash FROM audit_events ORDER BY seq DESC LIMIT 1'),
      insertAudit: d.prepare('INSERT INTO audit_events VALUES (@seq, @time, @type, @actor, @workspaceId, @subject, @details, @prevHash, @hash)'),
      workspaceKey: d.prepare<[string], { wrapped: Buffer }>('SELECT wrapped FROM workspace_keys WHERE workspace_id = ?'),
      insertWorkspaceKey: d.prepare('INSERT OR IGNORE INTO workspace_keys VALUES (?, ?, ?)'),
      object: d.prepare<[string, string], ObjectRow>('SELECT * FROM objects WHERE workspace_id = ? AND key = ?'),
      upsertObject: d.prepare(
        `INSERT INTO objects VALUES (@workspaceId, @key, @objectId, @size, @sha256, @wrappedKey, @createdAt)
         ON CONFLICT(workspace_id, key) DO UPDATE SET object_id = excluded.object_id, size = excluded.size, sha256 = excluded.sha256,
           wrapped_key = excluded.wrapped_key, created_at = excluded.created_at`,
      ),
      deleteObject: d.prepare('DELETE FROM objects WHERE workspace_id = ? AND key = ?'),
      objects: d.prepare<[string, string, string, string, number], ObjectRow>(
        // key >= prefix AND key < prefix || U+10FFFF: an index range scan, with no LIKE escaping to get wrong.
        "SELECT * FROM objects WHERE workspace_id = ? AND key >= ? AND key < ? || char(1114111) AND key > ? ORDER BY key LIMIT ?",
      ),
      signingKeys: d.prepare<[], { kid: string; public_jwk: string; wrapped_private: Buffer; created_at: string }>('SELECT * FROM signing_keys ORDER BY created_at'),
      insertSigningKey: d.prepare('INSERT INTO signing_keys VALUES (@kid, @publicJwk, @wrappedPrivate, @createdAt)'),
      deleteSigningKey: d.prepare('DELETE FROM signing_keys WHERE kid = ?'),
      insertToken: d.prepare('INSERT INTO tokens VALUES (@jti, @jobId, @workspaceId, @issuedAt, @expiresAt, @revokedAt)'),
      token: d.prepare<[string], TokenRow>('SELECT * FROM tokens WHERE jti = ?'),
      liveTokensOfJob: d.prepare<[string], { jti: string }>('SELECT jti FROM tokens WHERE job_id = ? AND revoked_at IS NULL'),
      revokeTokensOfJob: d.prepare('UPDATE tokens SET revoked_at = ? WHERE job_id = ? AND revoked_at IS NULL'),
      deleteExpiredTokens: d.prepare('DELETE FROM tokens WHERE expires_at < ?'),
      insertImage: d.prepare('INSERT OR IGNORE INTO images VALUES (@id, @owner, @name, @tag, @digest, @state, @bytes, @createdAt, @doc)'),
      image: d.prepare<[string], { doc: string }>('SELECT doc FROM images WHERE id = ?'),
      imageByName: d.prepare<[string, string, string], { doc: string }>('SELECT doc FROM images WHERE owner = ? AND name = ? AND tag = ?'),
      imageByDigest: d.prepare<[string, string], { doc: string }>('SELECT doc FROM images WHERE owner = ? AND digest = ? ORDER BY created_at, id LIMIT 1'),
      imagesOf: d.prepare<[string, string], { doc: string }>("SELECT doc FROM images WHERE owner IN (?, ?) ORDER BY created_at, id"),
      imagesWithDigest: d.prepare<[string], { doc: string }>('SELECT doc FROM images WHERE digest = ? ORDER BY created_at, id'),
      updateImage: d.prepare('UPDATE images SET digest = @digest, state = @state, bytes = @bytes, doc = @doc WHERE id = @id'),
      deleteImage: d.prepare('DELETE FROM images WHERE id = ?'),
      imageBytes: d.prepare<[string], { n: number }>("SELECT COALESCE(SUM(bytes), 0) AS n FROM images WHERE owner = ? AND state != 'failed'"),
      upsertAgent: d.prepare(
        `INSERT INTO agents VALUES (@id, @replicaId, @connected, @draining, @removed, @capacity, @running, @load, @connectedAt, @lastSeenAt)
         ON CONFLICT(id) DO UPDATE SET replica_id = excluded.replica_id, connected = excluded.connected, draining = excluded.draining,
           removed = excluded.removed, capacity = excluded.capacity, running = excluded.running, load = excluded.load,
           connected_at = excluded.connected_at, last_seen_at = excluded.last_seen_at`,
      ),
      agent: d.prepare<[string], AgentRow>('SELECT * FROM agents WHERE id = ?'),
      agents: d.prepare<[], AgentRow>('SELECT * FROM agents ORDER BY id'),
      deleteAgent: d.prepare('DELETE FROM agents WHERE id = ?'),
      upsertReplica: d.prepare(
        `INSERT INTO replicas VALUES (@id, @apiUrl, @startedAt, @heartbeatAt)
         ON CONFLICT(id) DO UPDATE SET api_url = excluded.api_url, started_at = excluded.started_at, heartbeat_at = excluded.heartbeat_at`,
      ),
      replicas: d.prepare<[], { id: string; api_url: string; started_at: string; heartbeat_at: string }>('SELECT * FROM replicas ORDER BY started_at, id'),
      deleteReplica: d.prepare('DELETE FROM replicas WHERE id = ?'),
    };
    this.tx = {
      updateJob: d.transaction((id: string, patch: Partial<Job>) => {
        const r = this.stmts.job.get(id);
        if (!r) return;
        const job = { ...jobFrom(r.doc), ...patch };
        this.stmts.updateJob.run(job.status, JSON.stringify(job), id);
      }),
      transitionJob: d.transaction((id: string, change: (job: Job) => Partial<Job> | null): Job | null => {
        const r = this.stmts.job.get(id);
        if (!r) return null;
        const current = jobFrom(r.doc);
        const patch = change(current);
        if (!patch) return null;
        const job = { ...current, ...patch };
        this.stmts.updateJob.run(job.status, JSON.stringify(job), id);
        return job;
      }),
      appendAudit: d.transaction((input: AuditEventInput): AuditEvent => {
        const e = sealEvent(input, this.stmts.lastAudit.get() ?? null);
        this.stmts.insertAudit.run({ ...e, details: JSON.stringify(e.details) });
        return e;
      }),
      revokeTokensOfJob: d.transaction((jobId: string, at: string): string[] => {
        const live = this.stmts.liveTokensOfJob.all(jobId).map((r) => r.jti);
        if (live.length) this.stmts.revokeTokensOfJob.run(at, jobId);
        return live;
      }),
    };
    this.agentUpdates = new Map();
  }

  async createWorkspace(w: Workspace): Promise<void> {
    this.stmts.insertWorkspace.run(w);
  }

  async getWorkspace(id: string): Promise<Workspace | null> {
    return workspaceFrom(this.stmts.workspace.get(id));
  }

  async getWorkspaceByName(name: string): Promise<Workspace | null> {
    return workspaceFrom(this.stmts.workspaceByName.get(name));
  }

  async listWorkspaces(): Promise<Workspace[]> {
    return this.stmts.workspaces.all().map((r) => workspaceFrom(r)!);
  }

  async createApiKey(k: ApiKeyRecord): Promise<void> {
    this.stmts.insertKey.run(k);
  }

  async getApiKey(id: string): Promise<ApiKeyRecord | null> {
    return keyFrom(this.stmts.key.get(id));
  }

  async listApiKeys(workspaceId?: string): Promise<ApiKeyRecord[]> {
    const rows = workspaceId === undefined ? this.stmts.allKeys.all() : this.stmts.keysOfWorkspace.all(workspaceId);
    return rows.map((r) => keyFrom(r)!);
  }

  async countActiveApiKeys(role: ApiKeyRole): Promise<number> {
    return this.stmts.activeKeysWithRole.get(role)!.n;
  }

  async countApiKeys(): Promise<number> {
    return this.stmts.countKeys.get()!.n;
  }

  async createJob(j: Job): Promise<void> {
    this.stmts.insertJob.run(j.id, j.workspaceId, j.status, j.createdAt, JSON.stringify(j));
  }

  async createPlacedJob(j: Job, token?: TokenRecord): Promise<number> {
    // One process holds the file: the inserts and the count are one synchronous step, nothing runs between them.
    this.insertPlacedTx ??= this.db.transaction((job: Job, t: TokenRecord | undefined) => {
      this.stmts.insertJob.run(job.id, job.workspaceId, job.status, job.createdAt, JSON.stringify(job));
      if (t) this.stmts.insertToken.run(t);
    });
    this.insertPlacedTx(j, token);
    return this.countJobs(j.workspaceId, ['assigned', 'running']);
  }
  /** createPlacedJob's transaction, built on first use. */
  private insertPlacedTx: ((j: Job, t: TokenRecord | undefined) => void) | null = null;

  async getJob(id: string): Promise<Job | null> {
    const r = this.stmts.job.get(id);
    return r ? jobFrom(r.doc) : null;
  }

  async listJobs(workspaceId: string, limit: number): Promise<Job[]> {
    return this.stmts.jobs.all(workspaceId, limit).map((r) => jobFrom(r.doc));
  }

  async listSandboxes(workspaceId: string, q: SandboxQuery): Promise<Job[]> {
    const where = ["workspace_id = ?", "json_extract(doc, '$.mode') = 'sandbox'"];
    const args: Array<string | number> = [workspaceId];
    if (q.state !== 'all') where.push(`status ${q.state === 'live' ? 'NOT ' : ''}IN (${TERMINAL_STATUSES.map(() => '?').join(',')})`), args.push(...TERMINAL_STATUSES);
    if (q.before) where.push('(created_at < ? OR (created_at = ? AND id < ?))'), args.push(q.before.createdAt, q.before.createdAt, q.before.id);
    // Each pair through json_each with bound parameters: a metadata key is never spliced into a JSON path.
    for (const [k, v] of Object.entries(q.metadata)) where.push("EXISTS (SELECT 1 FROM json_each(doc, '$.sandbox.metadata') WHERE key = ? AND value = ?)"), args.push(k, v);
    return this.db
      .prepare<Array<string | number>, { doc: string }>(`SELECT doc FROM jobs WHERE ${where.join(' AND ')} ORDER BY created_at DESC, id DESC LIMIT ?`)
      .all(...args, q.limit)
      .map((r) => jobFrom(r.doc));
  }

  async countJobs(workspaceId: string, statuses: readonly string[]): Promise<number> {
    const marks = statuses.map(() => '?').join(', ');
    if (marks === '') return 0;
    return (this.db.prepare(`SELECT count(*) AS n FROM jobs WHERE workspace_id = ? AND status IN (${marks})`).get(workspaceId, ...statuses) as { n: number }).n;
  }

  async jobsWithStatus(statuses: readonly string[]): Promise<Job[]> {
    const marks = statuses.map(() => '?').join(',');
    return this.db
      .prepare<string[], { doc: string }>(`SELECT doc FROM jobs WHERE status IN (${marks}) ORDER BY created_at, id`)
      .all(...statuses)
      .map((r) => jobFrom(r.doc));
  }

  async updateJob(id: string, patch: Partial<Job>): Promise<void> {
    this.tx.updateJob(id, patch);
  }

  async transitionJob(id: string, change: (job: Job) => Partial<Job> | null): Promise<Job | null> {
    // IMMEDIATE, as a claim: judged and written under the write lock.
    return this.tx.transitionJob.immediate(id, change);
  }

  async claimJob(id: string, from: JobStatus, patch: Partial<Job>): Promise<boolean> {
    // IMMEDIATE: the write lock is taken before the read, so two processes on one file cannot both see `from`.
    return this.db.transaction(() => {
      const r = this.stmts.job.get(id);
      if (!r) return false;
      const current = jobFrom(r.doc);
      if (current.status !== from) return false;
      const job = { ...current, ...patch };
      this.stmts.updateJob.run(job.status, JSON.stringify(job), id);
      return true;
    }).immediate();
  }

  async appendOutput(jobId: string, chunk: OutputChunk): Promise<void> {
    this.stmts.insertOutput.run(jobId, chunk.seq, chunk.stream, chunk.data);
  }

  async output(jobId: string, afterSeq: number, limit = -1): Promise<OutputChunk[]> {
    return this.stmts.output.all(jobId, afterSeq, limit);
  }

  async lastOutputSeq(jobId: string): Promise<number> {
    return this.stmts.lastSeq.get(jobId)?.seq ?? 0;
  }

  async jobsEndedBefore(before: string, limit: number): Promise<string[]> {
    return this.stmts.endedBefore.all(before, limit).map((r) => r.id);
  }

  async expireJob(jobId: string, at: string): Promise<void> {
    this.db.transaction(() => {
      this.stmts.deleteOutput.run(jobId);
      const r = this.stmts.job.get(jobId);
      if (r) this.stmts.updateJob.run(jobFrom(r.doc).status, JSON.stringify({ ...JSON.parse(r.doc), expiredAt: at }), jobId);
    })();
  }

  async getEgressPolicy(workspaceId: string): Promise<EgressPolicy | null> {
    const r = this.stmts.policy.get(workspaceId);
    return r ? (JSON.parse(r.doc) as EgressPolicy) : null;
  }

  async setEgressPolicy(workspaceId: string, policy: EgressPolicy): Promise<void> {
    this.stmts.upsertPolicy.run(workspaceId, JSON.stringify(policy), new Date().toISOString());
  }

  async addDeniedConnections(records: readonly DeniedConnectionRecord[]): Promise<void> {
    const tx = this.db.transaction(() => {
      for (const r of records) this.stmts.insertDenied.run(r);
    });
    tx();
  }

  async listDeniedConnections(workspaceId: string, q: DeniedQuery): Promise<DeniedConnectionRecord[]> {
    const rows = q.jobId === undefined ? this.stmts.denied.all(workspaceId, q.limit) : this.stmts.deniedOfJob.all(workspaceId, q.jobId, q.limit);
    return rows.map((r) => ({ workspaceId: r.workspace_id, jobId: r.job_id, cellId: r.cell_id, action: r.action, destination: r.destination, protocol: r.protocol, port: r.port, time: r.time }));
  }

  async revokeApiKey(id: string, at: string): Promise<boolean> {
    return this.stmts.revokeKey.run(at, id).changes === 1;
  }

  async appendAudit(input: AuditEventInput): Promise<AuditEvent> {
    // better-sqlite3 transactions are synchronous, so reading the last link and appending the next cannot interleave.
    return this.tx.appendAudit(input);
  }

  async listAudit(q: AuditQuery): Promise<AuditEvent[]> {
    const filters: Array<[string, string | number | undefined]> = [['workspace_id = ?', q.workspaceId], ['type = ?', q.type], ['seq > ?', q.afterSeq], ['seq < ?', q.beforeSeq]];
    const used = filters.filter((f): f is [string, string | number] => f[1] !== undefined);
    const where = used.length ? `WHERE ${used.map(([clause]) => clause).join(' AND ')}` : '';
    return this.db
      .prepare<Array<string | number>, AuditRow>(`SELECT * FROM audit_events ${where} ORDER BY seq ${q.order === 'asc' ? 'ASC' : 'DESC'} LIMIT ?`)
      .all(...used.map(([, v]) => v), q.limit)
      .map((r) => ({ seq: r.seq, time: r.time, type: r.type as AuditEvent['type'], actor: r.actor, workspaceId: r.workspace_id, subject: r.subject, details: JSON.parse(r.details) as Record<string, unknown>, prevHash: r.prev_hash, hash: r.hash }));
  }

  async workspaceKey(workspaceId: string, candidate: () => Buffer): Promise<Buffer> {
    const found = this.stmts.workspaceKey.get(workspaceId);
    if (found) return found.wrapped;
    this.stmts.insertWorkspaceKey.run(workspaceId, candidate(), new Date().toISOString());
    return this.stmts.workspaceKey.get(workspaceId)!.wrapped;
  }

  async getObject(workspaceId: string, key: string): Promise<ObjectMeta | null> {
    return objectFrom(this.stmts.object.get(workspaceId, key));
  }

  async putObject(meta: ObjectMeta): Promise<ObjectMeta | null> {
    return this.db.transaction(() => {
      const previous = objectFrom(this.stmts.object.get(meta.workspaceId, meta.key));
      this.stmts.upsertObject.run(meta);
      return previous;
    })();
  }

  async deleteObject(workspaceId: string, key: string): Promise<ObjectMeta | null> {
    return this.db.transaction(() => {
      const previous = objectFrom(this.stmts.object.get(workspaceId, key));
      if (previous) this.stmts.deleteObject.run(workspaceId, key);
      return previous;
    })();
  }

  async objectUsage(workspaceId: string): Promise<{ count: number; bytes: number }> {
    return this.db.prepare<[string], { count: number; bytes: number }>('SELECT COUNT(*) AS count, COALESCE(SUM(size), 0) AS bytes FROM objects WHERE workspace_id = ?').get(workspaceId)!;
  }

  async listObjects(workspaceId: string, q: ObjectQuery): Promise<ObjectMeta[]> {
    return this.stmts.objects.all(workspaceId, q.prefix, q.prefix, q.after ?? '', q.limit).map((r) => objectFrom(r)!);
  }

  async listSigningKeys(): Promise<SigningKeyRecord[]> {
    return this.stmts.signingKeys.all().map((r) => ({ kid: r.kid, publicJwk: r.public_jwk, wrappedPrivate: r.wrapped_private, createdAt: r.created_at }));
  }

  async addSigningKey(k: SigningKeyRecord): Promise<void> {
    this.stmts.insertSigningKey.run(k);
  }

  async deleteSigningKey(kid: string): Promise<void> {
    this.stmts.deleteSigningKey.run(kid);
  }

  async addToken(t: TokenRecord): Promise<void> {
    this.stmts.insertToken.run(t);
  }

  async getToken(jti: string): Promise<TokenRecord | null> {
    const r = this.stmts.token.get(jti);
    return r ? { jti: r.jti, jobId: r.job_id, workspaceId: r.workspace_id, issuedAt: r.issued_at, expiresAt: r.expires_at, revokedAt: r.revoked_at } : null;
  }

  async revokeTokensOfJob(jobId: string, at: string): Promise<string[]> {
    return this.tx.revokeTokensOfJob(jobId, at);
  }

  async deleteTokensExpiredBefore(at: string): Promise<void> {
    this.stmts.deleteExpiredTokens.run(at);
  }

  async createImage(r: ImageRecord): Promise<boolean> {
    return this.stmts.insertImage.run(imageRow(r)).changes === 1;
  }

  async getImage(id: string): Promise<ImageRecord | null> {
    const r = this.stmts.image.get(id);
    return r ? (JSON.parse(r.doc) as ImageRecord) : null;
  }

  async findImage(workspaceId: string | null, by: { name: string; tag: string } | { digest: string }): Promise<ImageRecord | null> {
    const owner = workspaceId ?? '';
    const r = 'digest' in by ? this.stmts.imageByDigest.get(owner, by.digest) : this.stmts.imageByName.get(owner, by.name, by.tag);
    return r ? (JSON.parse(r.doc) as ImageRecord) : null;
  }

  async listImages(workspaceId: string, withPublic: boolean): Promise<ImageRecord[]> {
    // A workspace id is never '', so (id, id) selects only the workspace's own.
    return this.stmts.imagesOf.all(workspaceId, withPublic ? '' : workspaceId).map((r) => JSON.parse(r.doc) as ImageRecord);
  }

  async imagesWithDigest(digest: string): Promise<ImageRecord[]> {
    return this.stmts.imagesWithDigest.all(digest).map((r) => JSON.parse(r.doc) as ImageRecord);
  }

  async imagesInStates(states: readonly ImageState[]): Promise<ImageRecord[]> {
    const marks = states.map(() => '?').join(',');
    return this.db
      .prepare<string[], { doc: string }>(`SELECT doc FROM images WHERE state IN (${marks}) ORDER BY created_at, id`)
      .all(...states)
      .map((r) => JSON.parse(r.doc) as ImageRecord);
  }

  async updateImage(id: string, patch: Partial<ImageRecord>): Promise<void> {
    this.db.transaction(() => {
      const r = this.stmts.image.get(id);
      if (!r) return;
      const image = { ...(JSON.parse(r.doc) as ImageRecord), ...patch, id };
      this.stmts.updateImage.run({ id, digest: image.digest, state: image.state, bytes: image.bytes, doc: JSON.stringify(image) });
    })();
  }

  async deleteImage(id: string): Promise<void> {
    this.stmts.deleteImage.run(id);
  }

  async imageBytes(workspaceId: string): Promise<number> {
    return this.stmts.imageBytes.get(workspaceId)!.n;
  }

  async upsertAgent(a: AgentRecord): Promise<void> {
    this.stmts.upsertAgent.run(agentParams(a));
  }

  async getAgent(id: string): Promise<AgentRecord | null> {
    const r = this.stmts.agent.get(id);
    return r ? agentFrom(r) : null;
  }

  async listAgents(): Promise<AgentRecord[]> {
    return this.stmts.agents.all().map(agentFrom);
  }

  async touchAgents(ids: readonly string[], replicaId: string, at: string): Promise<void> {
    if (ids.length) this.db.prepare('UPDATE agents SET replica_id = ?, connected = 1, last_seen_at = ? WHERE id IN (SELECT value FROM json_each(?))').run(replicaId, at, JSON.stringify(ids));
  }

  async storeAgentFigures(figures: readonly AgentFiguresRow[]): Promise<void> {
    if (figures.length === 0) return;
    const stmt = this.db.prepare('UPDATE agents SET running = ?, capacity = ?, load = COALESCE(?, load) WHERE id = ?');
    this.db.transaction(() => {
      for (const f of figures) stmt.run(f.running, f.capacity, f.load === undefined ? null : JSON.stringify(f.load), f.id);
    })();
  }

  async updateAgent(id: string, patch: Partial<AgentRecord>): Promise<void> {
    const fields = patchedAgentFields(patch);
    if (fields.length === 0) return;
    const shape = fields.join(',');
    let stmt = this.agentUpdates.get(shape);
    if (!stmt) {
      stmt = this.db.prepare(`UPDATE agents SET ${fields.map((f) => `${AGENT_COLUMNS[f]} = @${f}`).join(', ')} WHERE id = @id`);
      this.agentUpdates.set(shape, stmt);
    }
    const params = agentParams(patch);
    stmt.run({ ...Object.fromEntries(fields.map((f) => [f, params[f]])), id });
  }

  async deleteAgent(id: string): Promise<void> {
    this.stmts.deleteAgent.run(id);
  }

  async upsertReplica(r: ReplicaRecord): Promise<void> {
    this.stmts.upsertReplica.run(r);
  }

  async listReplicas(): Promise<ReplicaRecord[]> {
    return this.stmts.replicas.all().map((r) => ({ id: r.id, apiUrl: r.api_url, startedAt: r.started_at, heartbeatAt: r.heartbeat_at }));
  }

  async deleteReplica(id: string): Promise<void> {
    this.stmts.deleteReplica.run(id);
  }

  async close(): Promise<void> {
    this.db.close();
  }

  // A transaction around many writes (group-commit.ts): the store's own transactions nest in it as savepoints.
  beginBatch(): void {
    // IMMEDIATE: the write lock up front, so a claimJob in the batch is a compare-and-set against every other writer too.
    this.db.exec('BEGIN IMMEDIATE');
  }
  commitBatch(): void {
    this.db.exec('COMMIT');
  }
  rollbackBatch(): void {
    if (this.db.inTransaction) this.db.exec('ROLLBACK');
  }

  async createJobs(jobs: readonly Job[]): Promise<void> {
    this.insertJobsTx ??= this.db.transaction((js: readonly Job[]) => {
      for (const j of js) this.stmts.insertJob.run(j.id, j.workspaceId, j.status, j.createdAt, JSON.stringify(j));
    });
    this.insertJobsTx(jobs);
  }
  /** createJobs's transaction, built on first use (db.transaction() makes its wrapper anew on every call). */
  private insertJobsTx: ((js: readonly Job[]) => void) | null = null;
}

/** agentParams binds an agent's fields as SQLite stores them: booleans as 0/1, the load as JSON text. */
function agentParams(a: Partial<AgentRecord>): Record<string, string | number | null | undefined> {
  const bit = (b: boolean | undefined) => (b === undefined ? undefined : b ? 1 : 0);
  return {
    id: a.id,
    replicaId: a.replicaId,
    connected: bit(a.connected),
    draining: bit(a.draining),
    removed: bit(a.removed),
    capacity: a.capacity,
    running: a.running,
    load: a.load === undefined ? undefined : a.load === null ? null : JSON.stringify(a.load),
    connectedAt: a.connectedAt,
    lastSeenAt: a.lastSeenAt,
  };
}

function imageRow(r: ImageRecord) {
  return { id: r.id, owner: r.workspaceId ?? '', name: r.name, tag: r.tag, digest: r.digest, state: r.state, bytes: r.bytes, createdAt: r.createdAt, doc: JSON.stringify(r) };
}

function objectFrom(r: ObjectRow | undefined): ObjectMeta | null {
  if (!r) return null;
  return { workspaceId: r.workspace_id, key: r.key, objectId: r.object_id, size: r.size, sha256: r.sha256, wrappedKey: r.wrapped_key, createdAt: r.created_at };
}

/** jobFrom parses a stored job; jobs recorded before egress policies existed ran, and run, with no egress. */
function jobFrom(doc: string): Job {
  return { egress: DEFAULT_EGRESS_POLICY, dataGrants: [], ...(JSON.parse(doc) as Partial<Job>) } as Job;
}

function keyFrom(r: KeyRow | undefined): ApiKeyRecord | null {
  if (!r) return null;
  return { id: r.id, workspaceId: r.workspace_id, name: r.name, role: r.role, secretHash: r.secret_hash, createdAt: r.created_at, revokedAt: r.revoked_at };
}

function workspaceFrom(r: WorkspaceRow | undefined): Workspace | null {
  if (!r) return null;
  return { id: r.id, name: r.name, createdAt: r.created_at, maxCpu: r.max_cpu, maxMemoryBytes: r.max_memory_bytes, maxTimeoutSeconds: r.max_timeout_seconds, maxDiskBytes: r.max_disk_bytes };
}
