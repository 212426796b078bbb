/** SqliteStore is the embedded Store adapter (better-sqlite3, WAL). */
import Database from 'better-sqlite3';
import type { EgressPolicy } from '../../shared/net/egress-policy.js';
import type { AuditEvent, AuditEventInput } from '../audit/chain.js';
import { API_KEY_ROLES, DEFAULT_EGRESS_POLICY, TERMINAL_STATUSES, type ApiKeyRecord, type ApiKeyRole, type DeniedConnectionRecord, type ImageRecord, type ImageState, type Job, type ObjectMeta, type OutputChunk, type SigningKeyRecord, type TokenRecord, type Workspace } from '../model.js';
import type { AuditQuery, DeniedQuery, ObjectQuery, SandboxQuery, Store } from './store.js';

/**
 * apiKeysTable is the DDL of the api_keys table as of schema version 2, under a given name so that migration 2 can
 * rebuild the table. A later change to this table needs a migration of its own, and migration 2 a copy of this text.
 */
function apiKeysTable(name: string): string {
  return `CREATE TABLE IF NOT EXISTS ${name} (
  id TEXT PRIMARY KEY, workspace_id TEXT NOT NULL REFERENCES workspaces(id), name TEXT NOT NULL,
  role TEXT NOT NULL CHECK (role IN (${API_KEY_ROLES.map((r) => `'${r}'`).join(', ')})), secret_hash TEXT NOT NULL, created_at TEXT NOT NULL, revoked_at TEXT);`;
}

/** SCHEMA is the current schema; every statement is idempotent, so it also adds tables new to an older database. */
const SCHEMA = `
CREATE TABLE IF NOT EXISTS workspaces (
  id TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE, created_at TEXT NOT NULL,
  max_cpu REAL NOT NULL, max_memory_bytes INTEGER NOT NULL, max_timeout_seconds INTEGER NOT NULL,
  max_disk_bytes INTEGER NOT NULL);
${apiKeysTable('api_keys')}
CREATE INDEX IF NOT EXISTS api_keys_by_workspace ON api_keys(workspace_id, created_at);
CREATE TABLE IF NOT EXISTS jobs (
  id TEXT PRIMARY KEY, workspace_id TEXT NOT NULL REFERENCES workspaces(id), status TEXT NOT NULL,
  created_at TEXT NOT NULL, doc TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS jobs_by_workspace ON jobs(workspace_id, created_at DESC);
CREATE INDEX IF NOT EXISTS jobs_by_status ON jobs(status);
CREATE TABLE IF NOT EXISTS job_output (
  job_id TEXT NOT NULL, seq INTEGER NOT NULL, stream TEXT NOT NULL, data BLOB NOT NULL,
  PRIMARY KEY (job_id, seq)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS egress_policies (
  workspace_id TEXT PRIMARY KEY REFERENCES workspaces(id), doc TEXT NOT NULL, updated_at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS denied_connections (
  id INTEGER PRIMARY KEY AUTOINCREMENT, workspace_id TEXT NOT NULL REFERENCES workspaces(id), job_id TEXT NOT NULL,
  cell_id TEXT NOT NULL, action TEXT NOT NULL, destination TEXT NOT NULL, protocol TEXT NOT NULL, port INTEGER, time TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS denied_by_workspace ON denied_connections(workspace_id, time DESC, id DESC);
CREATE INDEX IF NOT EXISTS denied_by_job ON denied_connections(job_id, time DESC, id DESC);
CREATE TABLE IF NOT EXISTS audit_events (
  seq INTEGER PRIMARY KEY, time TEXT NOT NULL, type TEXT NOT NULL, actor TEXT NOT NULL, workspace_id TEXT,
  subject TEXT, details TEXT NOT NULL, prev_hash TEXT NOT NULL, hash TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS audit_by_workspace ON audit_events(workspace_id, seq);
-- Append-only: the platform never updates or deletes an event (the hash chain catches anyone who does it behind our back).
CREATE TRIGGER IF NOT EXISTS audit_no_update BEFORE UPDATE ON audit_events BEGIN SELECT RAISE(ABORT, 'audit events are append-only'); END;
CREATE TRIGGER IF NOT EXISTS audit_no_delete BEFORE DELETE ON audit_events BEGIN SELECT RAISE(ABORT, 'audit events are append-only'); END;
-- INSERT OR REPLACE deletes the old row without firing delete triggers (unless recursive_triggers is on): refuse reused seqs.
CREATE TRIGGER IF NOT EXISTS audit_no_replace BEFORE INSERT ON audit_events WHEN EXISTS (SELECT 1 FROM audit_events WHERE seq = NEW.seq) BEGIN SELECT RAISE(ABORT, 'audit events are append-only'); END;
CREATE TABLE IF NOT EXISTS workspace_keys (
  workspace_id TEXT PRIMARY KEY REFERENCES workspaces(id), wrapped BLOB NOT NULL, created_at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS objects (
  workspace_id TEXT NOT NULL REFERENCES workspaces(id), key TEXT NOT NULL, object_id TEXT NOT NULL, size INTEGER NOT NULL,
  sha256 TEXT NOT NULL, wrapped_key BLOB NOT NULL, created_at TEXT NOT NULL, PRIMARY KEY (workspace_id, key)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS signing_keys (
  kid TEXT PRIMARY KEY, public_jwk TEXT NOT NULL, wrapped_private BLOB NOT NULL, created_at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS tokens (
  jti TEXT PRIMARY KEY, job_id TEXT NOT NULL, workspace_id TEXT NOT NULL, issued_at TEXT NOT NULL, expires_at TEXT NOT NULL,
  revoked_at TEXT);
CREATE INDEX IF NOT EXISTS tokens_by_job ON tokens(job_id);
-- owner '' is a public image; a name:tag is unique per owner; an image is content-addressed by its manifest digest.
CREATE TABLE IF NOT EXISTS images (
  id TEXT PRIMARY KEY, owner TEXT NOT NULL, name TEXT NOT NULL, tag TEXT NOT NULL, digest TEXT, state TEXT NOT NULL,
  bytes INTEGER NOT NULL, created_at TEXT NOT NULL, doc TEXT NOT NULL, UNIQUE (owner, name, tag));
CREATE INDEX IF NOT EXISTS images_by_digest ON images(digest);
`;

/**
 * SCHEMA_VERSION is the database layout this code reads and writes, kept in `PRAGMA user_version`. A database made
 * before versioning existed reads 0 and is version 1; each MIGRATIONS entry takes the database from the version before
 * it to its own. All of them and the version bump run in one transaction, so a crash leaves the old layout or the new.
 */
export const SCHEMA_VERSION = 3;

/** Migration takes a database from `version - 1` to `version`. */
interface Migration {
  version: number;
  why: string;
  up(db: Database.Database): void;
}

const MIGRATIONS: readonly Migration[] = [
  {
    version: 2,
    why: 'api_keys.admin (one platform-wide flag) becomes api_keys.role: platform-admin, workspace-admin or member',
    up(db) {
      // The bootstrap key is the first key ever stored (bootstrap mints it only into an empty table) and stays the
      // platform admin. Any other admin key becomes an admin of its own workspace only: the old flag could not say
      // whether a key was meant to reach other workspaces, so it keeps what it surely needed and loses the rest (a
      // platform admin can mint a platform-admin key for whoever really needs one).
      db.exec(`${apiKeysTable('api_keys_v2')}
        INSERT INTO api_keys_v2 (id, workspace_id, name, role, secret_hash, created_at, revoked_at)
          SELECT id, workspace_id, name,
            CASE WHEN admin = 0 THEN 'member'
                 WHEN id = (SELECT id FROM api_keys ORDER BY created_at, rowid LIMIT 1) THEN 'platform-admin'
                 ELSE 'workspace-admin' END,
            secret_hash, created_at, revoked_at
          FROM api_keys;
        DROP TABLE api_keys;
        ALTER TABLE api_keys_v2 RENAME TO api_keys;`);
    },
  },
  {
    version: 3,
    why: 'images: a table of image records (owner workspace or public, name, tag, manifest digest, state, bytes); SCHEMA creates it',
    up() {},
  },
];

/** migrate brings an existing database to SCHEMA_VERSION, or lays out a new one; refuses a database newer than this code. */
function migrate(db: Database.Database): void {
  // One IMMEDIATE transaction: a second process opening the same file waits, then finds the work done.
  db.transaction(() => {
    let version = db.pragma('user_version', { simple: true }) as number;
    if (version === 0) {
      const legacy = db.prepare("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'api_keys'").get();
      version = legacy ? 1 : SCHEMA_VERSION; // a new file gets the current layout from SCHEMA below
    }
    if (version > SCHEMA_VERSION) throw new Error(`the database has schema version ${version}, newer than this Cleanroom (${SCHEMA_VERSION}); run the newer version`);
    for (const m of MIGRATIONS) if (m.version > version) m.up(db);
    db.exec(SCHEMA);
    db.pragma(`user_version = ${SCHEMA_VERSION}`);
  }).immediate();
}

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

  constructor(path: string) {
    this.db = new Database(path);
    this.db.pragma('journal_mode = WAL');
    // NORMAL in WAL mode: commits are durable across a process crash; an OS crash may lose the last few.
    this.db.pragma('synchronous = NORMAL');
    this.db.pragma('foreign_keys = ON');
    migrate(this.db);
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
    };
    this.tx = {
      updateJob: d.transaction((id: string, patch: Partial<Job>) => {
        const r = this.stmts.job.get(id);
        if (!r) return;
        const job = { ...jobFrom(r.doc), ...patch };
        this.stmts.updateJob.run(job.status, JSON.stringify(job), id);
      }),
      appendAudit: d.transaction((input: AuditEventInput, seal: (input: AuditEventInput, prev: { seq: number; hash: string } | null) => AuditEvent): AuditEvent => {
        const e = seal(input, this.stmts.lastAudit.get() ?? null);
        this.stmts.insertAudit.run({ ...e, details: JSON.stringify(e.details) });
        return e;
      }),
      revokeTokensOfJob: d.transaction((jobId: string, at: string): string[] => {
        const live = this.stmts.liveTokensOfJob.all(jobId).map((r) => r.jti);
        if (live.length) this.stmts.revokeTokensOfJob.run(at, jobId);
        return live;
      }),
    };
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

  async jobsWithStatus(statuses: readonly string[]): Promise<Job[]> {
    const marks = statuses.map(() => '?').join(',');
    return this.db
      .prepare<string[], { doc: string }>(`SELECT doc FROM jobs WHERE status IN (${marks}) ORDER BY created_at`)
      .all(...statuses)
      .map((r) => jobFrom(r.doc));
  }

  async updateJob(id: string, patch: Partial<Job>): Promise<void> {
    this.tx.updateJob(id, patch);
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

  async appendAudit(input: AuditEventInput, seal: (input: AuditEventInput, prev: { seq: number; hash: string } | null) => AuditEvent): Promise<AuditEvent> {
    // better-sqlite3 transactions are synchronous, so reading the last link and appending the next cannot interleave.
    return this.tx.appendAudit(input, seal);
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

  async close(): Promise<void> {
    this.db.close();
  }

  // A transaction around many writes (group-commit.ts): the store's own transactions nest in it as savepoints.
  beginBatch(): void {
    this.db.exec('BEGIN');
  }
  commitBatch(): void {
    this.db.exec('COMMIT');
  }
  rollbackBatch(): void {
    if (this.db.inTransaction) this.db.exec('ROLLBACK');
  }
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
