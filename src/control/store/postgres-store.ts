/**
 * PostgresStore is the Store adapter for a PostgreSQL database that several control-plane replicas share. It keeps the
 * SQLite adapter's semantics (orders, paging, first-writer-wins) and makes the cross-process ones hold across replicas:
 * one gap-free audit chain (PostgresAuditChain), at most one claim of a job (a compare-and-set on its version), one
 * workspace key (INSERT … ON CONFLICT DO NOTHING). Hot statements are named, so each pooled
 * connection parses them once, and each is one round trip.
 */
import pg from 'pg';
import type { EgressPolicy } from '../../shared/net/egress-policy.js';
import type { AuditEvent, AuditEventInput } from '../audit/chain.js';
import { DEFAULT_EGRESS_POLICY, TERMINAL_STATUSES, type AgentRecord, type ApiKeyRecord, type ApiKeyRole, type DeniedConnectionRecord, type ImageRecord, type ImageState, type Job, type JobStatus, type ObjectMeta, type OutputChunk, type ReplicaRecord, type SigningKeyRecord, type TokenRecord, type Workspace } from '../model.js';
import { AGENT_COLUMNS, agentFrom, patchedAgentFields, type AgentRow } from './agent-columns.js';
import { migratePostgres } from './migrations/postgres.js';
import { PostgresAuditChain } from './postgres-audit-chain.js';
import { jsonTextArray } from './pg-json-array.js';
import { RecentJobs } from './recent-jobs.js';
import { StatementBatch } from './statement-batch.js';
import type { AgentFiguresRow, AuditQuery, DeniedQuery, ObjectQuery, SandboxQuery, Store } from './store.js';

/** PostgresStoreOptions are the `store` config's connection settings. */
export interface PostgresStoreOptions {
  url: string;
  /** Connections this process keeps open at most. */
  poolSize: number;
  /** How long opening a connection may take before the attempt fails. */
  connectTimeoutMs?: number;
  /** Told about a pooled connection that broke while idle (the pool replaces it). */
  onError?: (e: Error) => void;
}

/** RECENT_JOBS is how many jobs' last-seen versions a store instance keeps (a few KiB each) for one-round-trip updates. */
const RECENT_JOBS = 1024;

/** CONNECT_TIMEOUT_MS bounds a connection attempt, so an unreachable database fails start-up instead of hanging it. */
const CONNECT_TIMEOUT_MS = 10_000;

/**
 * TYPES reads bigint columns (and count(*)) as numbers: every such value (bytes, seq, counts) stays far below 2^53.
 * Per pool, not pg's global parsers, so nothing else in the process is affected.
 */
const TYPES = new pg.TypeOverrides();
TYPES.setTypeParser(pg.types.builtins.INT8, (v: string) => Number(v));

/** SQL holds the fixed statements, each prepared once per connection under its name. */
const SQL = {
  insertWorkspace: 'INSERT INTO workspaces VALUES ($1, $2, $3, $4, $5, $6, $7)',
  workspace: 'SELECT * FROM workspaces WHERE id = $1',
  workspaceByName: 'SELECT * FROM workspaces WHERE name = $1',
  workspaces: 'SELECT * FROM workspaces ORDER BY created_at, id',
  insertKey: 'INSERT INTO api_keys (id, workspace_id, name, role, secret_hash, created_at, revoked_at) VALUES ($1, $2, $3, $4, $5, $6, $7)',
  key: 'SELECT * FROM api_keys WHERE id = $1',
  keysOfWorkspace: 'SELECT * FROM api_keys WHERE workspace_id = $1 ORDER BY created_at, id',
  allKeys: 'SELECT * FROM api_keys ORDER BY created_at, id',
  activeKeysWithRole: 'SELECT count(*) AS n FROM api_keys WHERE role = $1 AND revoked_at IS NULL',
  countKeys: 'SELECT count(*) AS n FROM api_keys',
  revokeKey: 'UPDATE api_keys SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL',
  jobForUpdate: 'SELECT doc, version FROM jobs WHERE id = $1 FOR UPDATE',
  // Compare-and-set: written only if nobody wrote the job since it was read at `version` ($2).
  setJob: `UPDATE jobs SET status = $3, mode = $4, ended_at = $5, expired_at = $6, metadata = $7, doc = $8, version = version + 1
    WHERE id = $1 AND version = $2`,
  jobs: "SELECT doc FROM jobs WHERE workspace_id = $1 AND mode = 'job' ORDER BY created_at DESC, id DESC LIMIT $2",
  jobsWithStatus: 'SELECT doc FROM jobs WHERE status = ANY($1::text[]) ORDER BY created_at, id',
  // The multi-row forms of the hot writes (StatementBatch): one row per call, one statement per batch.
  insertJobs: `INSERT INTO jobs (id, workspace_id, created_at, status, mode, ended_at, expired_at, metadata, doc)
    SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::jsonb[], $9::text[])`,
  setJobs: `UPDATE jobs SET status = u.status, mode = u.mode, ended_at = u.ended_at, expired_at = u.expired_at, metadata = u.metadata,
      doc = u.doc, version = jobs.version + 1
    FROM unnest($1::text[], $2::bigint[], $3::text[], $4::text[], $5::text[], $6::text[], $7::jsonb[], $8::text[])
      AS u(id, version, status, mode, ended_at, expired_at, metadata, doc)
    WHERE jobs.id = u.id AND jobs.version = u.version RETURNING jobs.id`,
  insertOutputs: 'INSERT INTO job_output SELECT * FROM unnest($1::text[], $2::integer[], $3::text[], $4::bytea[])',
  insertTokens: 'INSERT INTO tokens SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[])',
  // The multi-row forms of the hot reads: each distinct key once.
  jobsById: 'SELECT id, doc, version FROM jobs WHERE id = ANY($1::text[])',
  // Placed jobs are inserted and counted, and counts taken, under their workspaces' quota locks (migration 2).
  // With the jobs' first tokens ($10–$15: none, one or several per job), in the same statement.
  insertPlacedJobs: `WITH t AS (INSERT INTO tokens SELECT * FROM unnest($10::text[], $11::text[], $12::text[], $13::text[], $14::text[], $15::text[]))
    SELECT job_id, placed FROM cr_insert_placed_jobs($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::jsonb[], $9::text[])`,
  countJobsOf: 'SELECT ws, st, n FROM cr_count_jobs($1::text[], $2::text[])',
  policies: 'SELECT workspace_id, doc FROM egress_policies WHERE workspace_id = ANY($1::text[])',
  revokeTokensOfJobs: `UPDATE tokens SET revoked_at = u.at FROM unnest($1::text[], $2::text[]) AS u(job_id, at)
    WHERE tokens.job_id = u.job_id AND tokens.revoked_at IS NULL RETURNING tokens.jti, tokens.job_id`,
  output: 'SELECT seq, stream, data FROM job_output WHERE job_id = $1 AND seq > $2 ORDER BY seq LIMIT $3',
  lastSeq: 'SELECT max(seq) AS seq FROM job_output WHERE job_id = $1',
  endedBefore: 'SELECT id FROM jobs WHERE ended_at < $1 AND expired_at IS NULL ORDER BY created_at, id LIMIT $2',
  deleteOutput: 'DELETE FROM job_output WHERE job_id = $1',
  upsertPolicy: 'INSERT INTO egress_policies VALUES ($1, $2, $3) ON CONFLICT (workspace_id) DO UPDATE SET doc = excluded.doc, updated_at = excluded.updated_at',
  // One statement for a batch: atomic, one round trip.
  insertDenied: `INSERT INTO denied_connections (workspace_id, job_id, cell_id, action, destination, protocol, port, time)
    SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::integer[], $8::text[])`,
  denied: 'SELECT * FROM denied_connections WHERE workspace_id = $1 ORDER BY time DESC, id DESC LIMIT $2',
  deniedOfJob: 'SELECT * FROM denied_connections WHERE workspace_id = $1 AND job_id = $2 ORDER BY time DESC, id DESC LIMIT $3',
  insertAudit: 'INSERT INTO audit_events VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)',
  workspaceKey: 'SELECT wrapped FROM workspace_keys WHERE workspace_id = $1',
  insertWorkspaceKey: 'INSERT INTO workspace_keys VALUES ($1, $2, $3) ON CONFLICT (workspace_id) DO NOTHING RETURNING wrapped',
  object: 'SELECT * FROM objects WHERE workspace_id = $1 AND key = $2',
  objectForUpdate: 'SELECT * FROM objects WHERE workspace_id = $1 AND key = $2 FOR UPDATE',
  insertObject: 'INSERT INTO objects VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (workspace_id, key) DO NOTHING',
  updateObject: 'UPDATE objects SET object_id = $3, size = $4, sha256 = $5, wrapped_key = $6, created_at = $7 WHERE workspace_id = $1 AND key = $2',
  deleteObject: 'DELETE FROM objects WHERE workspace_id = $1 AND key = $2 RETURNING *',
  // key >= prefix AND key < prefix || U+10FFFF: an index range scan, with no LIKE escaping to get wrong.
  objects: 'SELECT * FROM objects WHERE workspace_id = $1 AND key >= $2 AND key < $3 AND key > $4 ORDER BY key LIMIT $5',
  objectUsage: 'SELECT count(*) AS count, COALESCE(sum(size), 0)::bigint AS bytes FROM objects WHERE workspace_id = $1',
  signingKeys: 'SELECT * FROM signing_keys ORDER BY created_at, kid',
  insertSigningKey: 'INSERT INTO signing_keys VALUES ($1, $2, $3, $4)',
  deleteSigningKey: 'DELETE FROM signing_keys WHERE kid = $1',
  token: 'SELECT * FROM tokens WHERE jti = $1',
  deleteExpiredTokens: 'DELETE FROM tokens WHERE expires_at < $1',
  insertImage: 'INSERT INTO images VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT DO NOTHING',
  image: 'SELECT doc FROM images WHERE id = $1',
  imageForUpdate: 'SELECT doc FROM images WHERE id = $1 FOR UPDATE',
  imageByName: 'SELECT doc FROM images WHERE owner = $1 AND name = $2 AND tag = $3',
  imageByDigest: 'SELECT doc FROM images WHERE owner = $1 AND digest = $2 ORDER BY created_at, id LIMIT 1',
  imagesOf: 'SELECT doc FROM images WHERE owner IN ($1, $2) ORDER BY created_at, id',
  imagesWithDigest: 'SELECT doc FROM images WHERE digest = $1 ORDER BY created_at, id',
  imagesInStates: 'SELECT doc FROM images WHERE state = ANY($1::text[]) ORDER BY created_at, id',
  updateImage: 'UPDATE images SET digest = $2, state = $3, bytes = $4, doc = $5 WHERE id = $1',
  deleteImage: 'DELETE FROM images WHERE id = $1',
  imageBytes: "SELECT COALESCE(sum(bytes), 0)::bigint AS n FROM images WHERE owner = $1 AND state <> 'failed'",
  upsertAgent: `INSERT INTO agents VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
    ON CONFLICT (id) DO UPDATE SET replica_id = excluded.replica_id, connected = excluded.connected, draining = excluded.draining,
      removed = excluded.removed, capacity = excluded.capacity, running = excluded.running, load = excluded.load,
      connected_at = excluded.connected_at, last_seen_at = excluded.last_seen_at`,
  agent: 'SELECT * FROM agents WHERE id = $1',
  agents: 'SELECT * FROM agents ORDER BY id',
  deleteAgent: 'DELETE FROM agents WHERE id = $1',
  touchAgents: 'UPDATE agents SET replica_id = $1, connected = true, last_seen_at = $2 WHERE id = ANY($3::text[])',
  storeAgentFigures: `UPDATE agents AS a SET running = f.running, capacity = f.capacity, load = COALESCE(f.load, a.load)
    FROM unnest($1::text[], $2::int[], $3::int[], $4::text[]) AS f(id, running, capacity, load) WHERE a.id = f.id`,
  upsertReplica: `INSERT INTO replicas VALUES ($1, $2, $3, $4)
    ON CONFLICT (id) DO UPDATE SET api_url = excluded.api_url, started_at = excluded.started_at, heartbeat_at = excluded.heartbeat_at`,
  replicas: 'SELECT * FROM replicas ORDER BY started_at, id',
  deleteReplica: 'DELETE FROM replicas WHERE id = $1',
} as const;

/** Queryable is the pool or one checked-out connection. */
type Queryable = pg.Pool | pg.PoolClient;

interface AuditRow { seq: number; time: string; type: string; actor: string; workspace_id: string | null; subject: string | null; details: string; prev_hash: string; hash: string }
interface ObjectRow { workspace_id: string; key: string; object_id: string; size: number; sha256: string; wrapped_key: Buffer; created_at: string }
interface TokenRow { jti: string; job_id: string; workspace_id: string; issued_at: string; expires_at: string; revoked_at: string | null }
interface WorkspaceRow { id: string; name: string; created_at: string; max_cpu: number; max_memory_bytes: number; max_timeout_seconds: number; max_disk_bytes: number }
interface DeniedRow { workspace_id: string; job_id: string; cell_id: string; action: 'denied' | 'dry-run'; destination: string; protocol: string; port: number | null; time: string }
interface KeyRow { id: string; workspace_id: string; name: string; role: ApiKeyRole; secret_hash: string; created_at: string; revoked_at: string | null }
interface DocRow<T> { doc: T }

/** JobColumns are what jobColumns gives: status, mode, ended_at, expired_at, metadata, doc. */
type JobColumns = [string, string, string | null, string | null, string | null, string];

/** PostgresStore keeps state in a PostgreSQL database through a connection pool; open() migrates it first. */
export class PostgresStore implements Store {
  private readonly audit: PostgresAuditChain;
  private readonly recent = new RecentJobs(RECENT_JOBS);
  /** Per job id, the settling of the last change of it made here (changeJob chains the next one after it). */
  private readonly changing = new Map<string, Promise<void>>();
  /** The hot writes, each grouped into multi-row statements (StatementBatch): a job's row, its versions, output and tokens. */
  private readonly batch = {
    insertJob: new StatementBatch<{ j: Job; c: JobColumns }, void>(async (items) => {
      await this.run('insertJobs', jobRowColumns(items, (x) => [x.j.id, x.j.workspaceId, x.j.createdAt, ...x.c]));
      return items.map(() => undefined);
    }),
    insertPlacedJob: new StatementBatch<{ j: Job; c: JobColumns; token?: TokenRecord }, number>(async (items) => {
      const tokens = items.flatMap((x) => (x.token ? [x.token] : []));
      const rows = (
        await this.run<{ job_id: string; placed: number }>('insertPlacedJobs', [
          ...jobRowColumns(items, (x) => [x.j.id, x.j.workspaceId, x.j.createdAt, ...x.c]),
          ...tokenColumns(tokens),
        ])
      ).rows;
      const placed = new Map(rows.map((r) => [r.job_id, r.placed]));
      return items.map((x) => placed.get(x.j.id) ?? Number.MAX_SAFE_INTEGER);
    }),
    setJob: new StatementBatch<{ id: string; version: number; c: JobColumns }, boolean>(
      async (items) => {
        const done = new Set((await this.run<{ id: string }>('setJobs', jobRowColumns(items, (x) => [x.id, x.version, ...x.c]))).rows.map((r) => r.id));
        return items.map((x) => done.has(x.id));
      },
      (x) => x.id,
    ),
    appendOutput: new StatementBatch<{ jobId: string; chunk: OutputChunk }, void>(async (items) => {
      await this.run('insertOutputs', [...columnsOf(items, (x) => [x.jobId, x.chunk.seq, x.chunk.stream, x.chunk.data])]);
      return items.map(() => undefined);
    }),
    addToken: new StatementBatch<TokenRecord, void>(async (items) => {
      await this.run('insertTokens', tokenColumns(items));
      return items.map(() => undefined);
    }),
    revokeTokensOfJob: new StatementBatch<{ jobId: string; at: string }, string[]>(
      async (items) => {
        const rows = (await this.run<{ jti: string; job_id: string }>('revokeTokensOfJobs', [...columnsOf(items, (x) => [x.jobId, x.at])])).rows;
        return items.map((x) => rows.filter((r) => r.job_id === x.jobId).map((r) => r.jti));
      },
      (x) => x.jobId,
    ),
  };

  /** The hot reads, grouped the same way (calls for one key share its row). */
  private readonly reads = {
    job: new StatementBatch<string, { doc: string; version: number } | undefined>(async (ids) => {
      const rows = (await this.run<{ id: string; doc: string; version: number }>('jobsById', [[...new Set(ids)]])).rows;
      const byId = new Map(rows.map((r) => [r.id, { doc: r.doc, version: r.version }]));
      return ids.map((id) => byId.get(id));
    }),
    countJobs: new StatementBatch<{ ws: string; st: string }, number>(async (items) => {
      const distinct = [...new Map(items.map((x) => [`${x.ws} ${x.st}`, x])).values()];
      const rows = (await this.run<{ ws: string; st: string; n: number }>('countJobsOf', [distinct.map((x) => x.ws), distinct.map((x) => x.st)])).rows;
      const n = new Map(rows.map((r) => [`${r.ws} ${r.st}`, r.n]));
      return items.map((x) => n.get(`${x.ws} ${x.st}`) ?? 0);
    }),
    policy: new StatementBatch<string, string | undefined>(async (ids) => {
      const rows = (await this.run<{ workspace_id: string; doc: string }>('policies', [[...new Set(ids)]])).rows;
      const byId = new Map(rows.map((r) => [r.workspace_id, r.doc]));
      return ids.map((id) => byId.get(id));
    }),
  };

  private constructor(private readonly pool: pg.Pool) {
    this.audit = new PostgresAuditChain(pool);
  }

  /**
   * open connects, checks the server answers and brings the schema to this code's version. Every failure (a malformed
   * URL, an unreachable server, a refused login, a database not in UTF8, a database newer than this code) is one Error
   * whose message says what to fix and never holds the URL's password.
   */
  static async open(opts: PostgresStoreOptions): Promise<PostgresStore> {
    const where = redactedUrl(opts.url);
    let pool: pg.Pool;
    try {
      pool = new pg.Pool({
        connectionString: opts.url,
        max: opts.poolSize,
        connectionTimeoutMillis: opts.connectTimeoutMs ?? CONNECT_TIMEOUT_MS,
        types: TYPES,
        application_name: 'cleanroom-control',
        // The quota counts rely on a fresh snapshot per statement (migration 2): the server's default level may differ.
        options: '-c default_transaction_isolation=read\\ committed',
      });
    } catch (e) {
      throw new Error(`store.url ${where} is not a usable PostgreSQL URL: ${(e as Error).message}`);
    }
    // A pooled connection that breaks while idle emits here; without a listener the process would crash.
    pool.on('error', (e) => opts.onError?.(e));
    try {
      await requireUtf8(pool);
      await migratePostgres(pool);
    } catch (e) {
      await pool.end().catch(() => {});
      throw new Error(`cannot use the PostgreSQL store at ${where}: ${describe(e)}`);
    }
    return new PostgresStore(pool);
  }

  /** run executes a named fixed statement. */
  private run<R extends pg.QueryResultRow = pg.QueryResultRow>(name: keyof typeof SQL, values: unknown[], on: Queryable = this.pool): Promise<pg.QueryResult<R>> {
    return on.query<R>({ name, text: SQL[name], values });
  }

  private async rows<R extends pg.QueryResultRow>(name: keyof typeof SQL, values: unknown[]): Promise<R[]> {
    return (await this.run<R>(name, values)).rows;
  }

  private async first<R extends pg.QueryResultRow>(name: keyof typeof SQL, values: unknown[]): Promise<R | undefined> {
    return (await this.run<R>(name, values)).rows[0];
  }

  /** tx runs `fn` in a transaction on one connection: committed if it returns, rolled back if it throws. */
  private async tx<T>(fn: (c: pg.PoolClient) => Promise<T>): Promise<T> {
    const c = await this.pool.connect();
    try {
      await c.query('BEGIN');
      const out = await fn(c);
      await c.query('COMMIT');
      c.release();
      return out;
    } catch (e) {
      // A connection that cannot even roll back is closed rather than pooled.
      await c.query('ROLLBACK').then(() => c.release(), (broken: Error) => c.release(broken));
      throw e;
    }
  }

  async createWorkspace(w: Workspace): Promise<void> {
    await this.run('insertWorkspace', [w.id, w.name, w.createdAt, w.maxCpu, w.maxMemoryBytes, w.maxTimeoutSeconds, w.maxDiskBytes]);
  }

  async getWorkspace(id: string): Promise<Workspace | null> {
    return workspaceFrom(await this.first<WorkspaceRow>('workspace', [id]));
  }

  async getWorkspaceByName(name: string): Promise<Workspace | null> {
    return workspaceFrom(await this.first<WorkspaceRow>('workspaceByName', [name]));
  }

  async listWorkspaces(): Promise<Workspace[]> {
    return (await this.rows<WorkspaceRow>('workspaces', [])).map((r) => workspaceFrom(r)!);
  }

  async createApiKey(k: ApiKeyRecord): Promise<void> {
    await this.run('insertKey', [k.id, k.workspaceId, k.name, k.role, k.secretHash, k.createdAt, k.revokedAt]);
  }

  async getApiKey(id: string): Promise<ApiKeyRecord | null> {
    return keyFrom(await this.first<KeyRow>('key', [id]));
  }

  async listApiKeys(workspaceId?: string): Promise<ApiKeyRecord[]> {
    const rows = workspaceId === undefined ? await this.rows<KeyRow>('allKeys', []) : await this.rows<KeyRow>('keysOfWorkspace', [workspaceId]);
    return rows.map((r) => keyFrom(r)!);
  }

  async countApiKeys(): Promise<number> {
    return (await this.first<{ n: number }>('countKeys', []))!.n;
  }

  async countActiveApiKeys(role: ApiKeyRole): Promise<number> {
    return (await this.first<{ n: number }>('activeKeysWithRole', [role]))!.n;
  }

  async revokeApiKey(id: string, at: string): Promise<boolean> {
    return (await this.run('revokeKey', [at, id])).rowCount === 1;
  }

  async createJob(j: Job): Promise<void> {
    const columns = jobColumns(j);
    await this.batch.insertJob.run({ j, c: columns });
    this.recent.set(j.id, { version: 0, doc: columns[5] });
  }

  async createPlacedJob(j: Job, token?: TokenRecord): Promise<number> {
    const columns = jobColumns(j);
    const placed = await this.batch.insertPlacedJob.run({ j, c: columns, token });
    this.recent.set(j.id, { version: 0, doc: columns[5] });
    return placed;
  }

  async getJob(id: string): Promise<Job | null> {
    const r = await this.reads.job.run(id);
    if (!r) return null;
    this.recent.set(id, r);
    return jobFrom(r.doc);
  }

  async listJobs(workspaceId: string, limit: number): Promise<Job[]> {
    return (await this.rows<DocRow<string>>('jobs', [workspaceId, limit])).map((r) => jobFrom(r.doc));
  }

  async listSandboxes(workspaceId: string, q: SandboxQuery): Promise<Job[]> {
    const pairs = Object.entries(q.metadata);
    // No stored metadata holds a control character (MetadataSchema), and PostgreSQL text cannot hold NUL at all.
    if (pairs.some(([k, v]) => k.includes('\u0000') || v.includes('\u0000'))) return [];
    const args: unknown[] = [workspaceId];
    const arg = (v: unknown) => `$${args.push(v)}`;
    const where = ['workspace_id = $1', "mode = 'sandbox'"];
    if (q.state !== 'all') where.push(`status ${q.state === 'live' ? '<> ALL' : '= ANY'}(${arg(TERMINAL_STATUSES)}::text[])`);
    if (q.before) where.push(`(created_at, id) < (${arg(q.before.createdAt)}, ${arg(q.before.id)})`);
    // Every pair at once, as a bound JSON object: containment of string pairs is "every pair matches".
    if (pairs.length) where.push(`metadata @> ${arg(JSON.stringify(q.metadata))}::jsonb`);
    const sql = `SELECT doc FROM jobs WHERE ${where.join(' AND ')} ORDER BY created_at DESC, id DESC LIMIT ${arg(q.limit)}`;
    return (await this.pool.query<DocRow<string>>(sql, args)).rows.map((r) => jobFrom(r.doc));
  }

  async countJobs(workspaceId: string, statuses: readonly string[]): Promise<number> {
    // A status never holds a comma (JobStatus).
    return this.reads.countJobs.run({ ws: workspaceId, st: statuses.join(',') });
  }

  async jobsWithStatus(statuses: readonly string[]): Promise<Job[]> {
    return (await this.rows<DocRow<string>>('jobsWithStatus', [statuses])).map((r) => jobFrom(r.doc));
  }

  async updateJob(id: string, patch: Partial<Job>): Promise<void> {
    await this.changeJob(id, (job) => ({ ...job, ...patch }));
  }

  async claimJob(id: string, from: JobStatus, patch: Partial<Job>): Promise<boolean> {
    return (await this.changeJob(id, (job) => (job.status === from ? { ...job, ...patch } : null))) !== null;
  }

  async transitionJob(id: string, change: (job: Job) => Partial<Job> | null): Promise<Job | null> {
    return this.changeJob(id, (job) => {
      const patch = change(job);
      return patch ? { ...job, ...patch } : null;
    });
  }

  /**
   * changeJob lets `change` make a job's next version from its current one (null: leave it) and writes it only if
   * nobody wrote the job in between (a compare-and-set on its version), else reads it again and retries: no lock held
   * across round trips, and no two changes made from the same version (of two racing claims one sees the other's
   * status). It starts from the version this process last read or wrote, so the usual read-then-update costs the
   * update one round trip; a stale start costs a re-read. Returns the version written; null if the job is unknown or
   * `change` left it. Changes of one job made in this process go one after the other (each from the version the one
   * before wrote): two made at once, such as a placement's timings and the agent's start report, would otherwise both
   * start from the same version, and the later one would miss its compare-and-set and pay a re-read and a second write.
   */
  private changeJob(id: string, change: (job: Job) => Job | null): Promise<Job | null> {
    const before = this.changing.get(id);
    const run = before ? before.then(() => this.changeJobNow(id, change)) : this.changeJobNow(id, change);
    const settled = run.then(
      () => undefined,
      () => undefined,
    );
    this.changing.set(id, settled);
    void settled.then(() => {
      if (this.changing.get(id) === settled) this.changing.delete(id);
    });
    return run;
  }

  private async changeJobNow(id: string, change: (job: Job) => Job | null): Promise<Job | null> {
    let current = this.recent.get(id);
    let fresh = false;
    for (;;) {
      if (!current) {
        const r = await this.reads.job.run(id);
        if (!r) return null;
        current = r;
        fresh = true;
      }
      const next = change(jobFrom(current.doc));
      if (!next) {
        if (fresh) return null;
        // Judged on a remembered version: make sure against the stored one.
        current = undefined;
        continue;
      }
      const columns = jobColumns(next);
      if (await this.batch.setJob.run({ id, version: current.version, c: columns })) {
        this.recent.set(id, { version: current.version + 1, doc: columns[5] });
        return next;
      }
      this.recent.forget(id);
      current = undefined;
    }
  }

  async appendOutput(jobId: string, chunk: OutputChunk): Promise<void> {
    await this.batch.appendOutput.run({ jobId, chunk });
  }

  async output(jobId: string, afterSeq: number, limit?: number): Promise<OutputChunk[]> {
    // LIMIT NULL is no limit.
    return this.rows<OutputChunk & pg.QueryResultRow>('output', [jobId, afterSeq, limit ?? null]);
  }

  async lastOutputSeq(jobId: string): Promise<number> {
    return (await this.first<{ seq: number | null }>('lastSeq', [jobId]))?.seq ?? 0;
  }

  async jobsEndedBefore(before: string, limit: number): Promise<string[]> {
    return (await this.rows<{ id: string }>('endedBefore', [before, limit])).map((r) => r.id);
  }

  async expireJob(jobId: string, at: string): Promise<void> {
    // One transaction: the output goes and the record says so together.
    await this.tx(async (c) => {
      await this.run('deleteOutput', [jobId], c);
      this.recent.forget(jobId);
      const r = (await this.run<{ doc: string; version: number }>('jobForUpdate', [jobId], c)).rows[0];
      if (!r) return;
      await this.run('setJob', [jobId, r.version, ...jobColumns({ ...jobFrom(r.doc), expiredAt: at })], c);
    });
  }

  async getEgressPolicy(workspaceId: string): Promise<EgressPolicy | null> {
    const doc = await this.reads.policy.run(workspaceId);
    return doc === undefined ? null : (JSON.parse(doc) as EgressPolicy);
  }

  async setEgressPolicy(workspaceId: string, policy: EgressPolicy): Promise<void> {
    await this.run('upsertPolicy', [workspaceId, JSON.stringify(policy), new Date().toISOString()]);
  }

  async addDeniedConnections(records: readonly DeniedConnectionRecord[]): Promise<void> {
    if (records.length === 0) return;
    const col = <K extends keyof DeniedConnectionRecord>(k: K) => records.map((r) => r[k] ?? null);
    await this.run('insertDenied', [col('workspaceId'), col('jobId'), col('cellId'), col('action'), col('destination'), col('protocol'), col('port'), col('time')]);
  }

  async listDeniedConnections(workspaceId: string, q: DeniedQuery): Promise<DeniedConnectionRecord[]> {
    const rows = q.jobId === undefined ? await this.rows<DeniedRow>('denied', [workspaceId, q.limit]) : await this.rows<DeniedRow>('deniedOfJob', [workspaceId, q.jobId, q.limit]);
    return rows.map((r) => ({ workspaceId: r.workspace_id, jobId: r.job_id, cellId: r.cell_id, action: r.action, destination: r.destination, protocol: r.protocol, port: r.port, time: r.time }));
  }

  async appendAudit(input: AuditEventInput): Promise<AuditEvent> {
    return this.audit.append(input);
  }

  async listAudit(q: AuditQuery): Promise<AuditEvent[]> {
    const args: unknown[] = [];
    const arg = (v: unknown) => `$${args.push(v)}`;
    const where: string[] = [];
    if (q.workspaceId !== undefined) where.push(`workspace_id = ${arg(q.workspaceId)}`);
    if (q.type !== undefined) where.push(`type = ${arg(q.type)}`);
    if (q.afterSeq !== undefined) where.push(`seq > ${arg(q.afterSeq)}`);
    if (q.beforeSeq !== undefined) where.push(`seq < ${arg(q.beforeSeq)}`);
    const sql = `SELECT * FROM audit_events ${where.length ? `WHERE ${where.join(' AND ')}` : ''} ORDER BY seq ${q.order === 'asc' ? 'ASC' : 'DESC'} LIMIT ${arg(q.limit)}`;
    return (await this.pool.query<AuditRow>(sql, args)).rows.map((r) => ({
      seq: r.seq, time: r.time, type: r.type as AuditEvent['type'], actor: r.actor, workspaceId: r.workspace_id, subject: r.subject,
      details: JSON.parse(r.details) as Record<string, unknown>, prevHash: r.prev_hash, hash: r.hash,
    }));
  }

  async workspaceKey(workspaceId: string, candidate: () => Buffer): Promise<Buffer> {
    const found = await this.first<{ wrapped: Buffer }>('workspaceKey', [workspaceId]);
    if (found) return found.wrapped;
    const inserted = await this.first<{ wrapped: Buffer }>('insertWorkspaceKey', [workspaceId, candidate(), new Date().toISOString()]);
    if (inserted) return inserted.wrapped;
    // Another replica stored one between our read and our insert; the insert waited for its commit, so this read sees it.
    return (await this.first<{ wrapped: Buffer }>('workspaceKey', [workspaceId]))!.wrapped;
  }

  async getObject(workspaceId: string, key: string): Promise<ObjectMeta | null> {
    return objectFrom(await this.first<ObjectRow>('object', [workspaceId, key]));
  }

  async putObject(meta: ObjectMeta): Promise<ObjectMeta | null> {
    const values = [meta.workspaceId, meta.key, meta.objectId, meta.size, meta.sha256, meta.wrappedKey, meta.createdAt];
    return this.tx(async (c) => {
      for (;;) {
        // The existing record, locked, is the one replaced; with none, an insert that lost a race to another writer
        // inserts nothing, and the next round finds (and replaces) that writer's record.
        const previous = objectFrom((await this.run<ObjectRow>('objectForUpdate', [meta.workspaceId, meta.key], c)).rows[0]);
        if (previous) {
          await this.run('updateObject', values, c);
          return previous;
        }
        if ((await this.run('insertObject', values, c)).rowCount === 1) return null;
      }
    });
  }

  async deleteObject(workspaceId: string, key: string): Promise<ObjectMeta | null> {
    return objectFrom(await this.first<ObjectRow>('deleteObject', [workspaceId, key]));
  }

  async listObjects(workspaceId: string, q: ObjectQuery): Promise<ObjectMeta[]> {
    return (await this.rows<ObjectRow>('objects', [workspaceId, q.prefix, `${q.prefix}\u{10FFFF}`, q.after ?? '', q.limit])).map((r) => objectFrom(r)!);
  }

  async objectUsage(workspaceId: string): Promise<{ count: number; bytes: number }> {
    const r = (await this.first<{ count: number; bytes: number }>('objectUsage', [workspaceId]))!;
    return { count: r.count, bytes: r.bytes };
  }

  async listSigningKeys(): Promise<SigningKeyRecord[]> {
    const rows = await this.rows<{ kid: string; public_jwk: string; wrapped_private: Buffer; created_at: string }>('signingKeys', []);
    return rows.map((r) => ({ kid: r.kid, publicJwk: r.public_jwk, wrappedPrivate: r.wrapped_private, createdAt: r.created_at }));
  }

  async addSigningKey(k: SigningKeyRecord): Promise<void> {
    await this.run('insertSigningKey', [k.kid, k.publicJwk, k.wrappedPrivate, k.createdAt]);
  }

  async deleteSigningKey(kid: string): Promise<void> {
    await this.run('deleteSigningKey', [kid]);
  }

  async addToken(t: TokenRecord): Promise<void> {
    await this.batch.addToken.run(t);
  }

  async getToken(jti: string): Promise<TokenRecord | null> {
    const r = await this.first<TokenRow>('token', [jti]);
    return r ? { jti: r.jti, jobId: r.job_id, workspaceId: r.workspace_id, issuedAt: r.issued_at, expiresAt: r.expires_at, revokedAt: r.revoked_at } : null;
  }

  async revokeTokensOfJob(jobId: string, at: string): Promise<string[]> {
    return this.batch.revokeTokensOfJob.run({ jobId, at });
  }

  async deleteTokensExpiredBefore(at: string): Promise<void> {
    await this.run('deleteExpiredTokens', [at]);
  }

  async createImage(r: ImageRecord): Promise<boolean> {
    const res = await this.run('insertImage', [r.id, r.workspaceId ?? '', r.name, r.tag, r.digest, r.state, r.bytes, r.createdAt, JSON.stringify(r)]);
    return res.rowCount === 1;
  }

  async getImage(id: string): Promise<ImageRecord | null> {
    const r = await this.first<DocRow<string>>('image', [id]);
    return r ? (JSON.parse(r.doc) as ImageRecord) : null;
  }

  async findImage(workspaceId: string | null, by: { name: string; tag: string } | { digest: string }): Promise<ImageRecord | null> {
    const owner = workspaceId ?? '';
    const r = 'digest' in by ? await this.first<DocRow<string>>('imageByDigest', [owner, by.digest]) : await this.first<DocRow<string>>('imageByName', [owner, by.name, by.tag]);
    return r ? (JSON.parse(r.doc) as ImageRecord) : null;
  }

  async listImages(workspaceId: string, withPublic: boolean): Promise<ImageRecord[]> {
    // A workspace id is never '', so (id, id) selects only the workspace's own.
    return (await this.rows<DocRow<string>>('imagesOf', [workspaceId, withPublic ? '' : workspaceId])).map((r) => JSON.parse(r.doc) as ImageRecord);
  }

  async imagesWithDigest(digest: string): Promise<ImageRecord[]> {
    return (await this.rows<DocRow<string>>('imagesWithDigest', [digest])).map((r) => JSON.parse(r.doc) as ImageRecord);
  }

  async imagesInStates(states: readonly ImageState[]): Promise<ImageRecord[]> {
    return (await this.rows<DocRow<string>>('imagesInStates', [states])).map((r) => JSON.parse(r.doc) as ImageRecord);
  }

  async updateImage(id: string, patch: Partial<ImageRecord>): Promise<void> {
    await this.tx(async (c) => {
      const r = (await this.run<DocRow<string>>('imageForUpdate', [id], c)).rows[0];
      if (!r) return;
      const image = { ...(JSON.parse(r.doc) as ImageRecord), ...patch, id };
      await this.run('updateImage', [id, image.digest, image.state, image.bytes, JSON.stringify(image)], c);
    });
  }

  async deleteImage(id: string): Promise<void> {
    await this.run('deleteImage', [id]);
  }

  async imageBytes(workspaceId: string): Promise<number> {
    return (await this.first<{ n: number }>('imageBytes', [workspaceId]))!.n;
  }

  async upsertAgent(a: AgentRecord): Promise<void> {
    await this.run('upsertAgent', [a.id, a.replicaId, a.connected, a.draining, a.removed, a.capacity, a.running, loadText(a.load), a.connectedAt, a.lastSeenAt]);
  }

  async getAgent(id: string): Promise<AgentRecord | null> {
    const r = await this.first<AgentRow>('agent', [id]);
    return r ? agentFrom(r) : null;
  }

  async listAgents(): Promise<AgentRecord[]> {
    return (await this.rows<AgentRow>('agents', [])).map(agentFrom);
  }

  async updateAgent(id: string, patch: Partial<AgentRecord>): Promise<void> {
    const fields = patchedAgentFields(patch);
    if (fields.length === 0) return;
    const text = `UPDATE agents SET ${fields.map((f, i) => `${AGENT_COLUMNS[f]} = $${i + 2}`).join(', ')} WHERE id = $1`;
    const values = fields.map((f) => (f === 'load' ? loadText(patch.load!) : patch[f]));
    // Named per set of fields: load reports repeat the same few shapes, each parsed once per connection.
    await this.pool.query({ name: `updateAgent:${fields.join(',')}`, text, values: [id, ...values] });
  }

  async touchAgents(ids: readonly string[], replicaId: string, at: string): Promise<void> {
    if (ids.length) await this.run('touchAgents', [replicaId, at, ids]);
  }

  async storeAgentFigures(figures: readonly AgentFiguresRow[]): Promise<void> {
    if (figures.length === 0) return;
    await this.run('storeAgentFigures', [
      figures.map((f) => f.id),
      figures.map((f) => f.running),
      figures.map((f) => f.capacity),
      figures.map((f) => (f.load === undefined ? null : loadText(f.load))),
    ]);
  }

  async deleteAgent(id: string): Promise<void> {
    await this.run('deleteAgent', [id]);
  }

  async upsertReplica(r: ReplicaRecord): Promise<void> {
    await this.run('upsertReplica', [r.id, r.apiUrl, r.startedAt, r.heartbeatAt]);
  }

  async listReplicas(): Promise<ReplicaRecord[]> {
    const rows = await this.rows<{ id: string; api_url: string; started_at: string; heartbeat_at: string }>('replicas', []);
    return rows.map((r) => ({ id: r.id, apiUrl: r.api_url, startedAt: r.started_at, heartbeatAt: r.heartbeat_at }));
  }

  async deleteReplica(id: string): Promise<void> {
    await this.run('deleteReplica', [id]);
  }

  async close(): Promise<void> {
    await this.pool.end();
  }

  async createJobs(jobs: readonly Job[]): Promise<void> {
    if (jobs.length === 0) return;
    const rows = jobs.map((j) => ({ j, c: jobColumns(j) }));
    // One statement of its own (not the insertJob batch, which retries its calls one by one after a failure): atomic.
    await this.run('insertJobs', jobRowColumns(rows, (x) => [x.j.id, x.j.workspaceId, x.j.createdAt, ...x.c]));
    for (const { j, c } of rows) this.recent.set(j.id, { version: 0, doc: c[5] });
  }
}

/** redactedUrl is the URL as it may be logged: without its password (or the text itself if it does not parse). */
export function redactedUrl(url: string): string {
  try {
    const u = new URL(url);
    if (u.password) u.password = '***';
    return u.toString();
  } catch {
    return '(an unparsable URL)';
  }
}

/**
 * requireUtf8 refuses a database whose encoding is not UTF8 (error code store_encoding_not_utf8): the audit chain's hashes
 * are taken over the UTF-8 bytes of each event's JSON, by this process or by the database (cr_append_audit converts its
 * text to UTF8), and text stored in another encoding would not convert back to the same bytes (or not at all), so audit
 * verify would report untouched events as tampered.
 */
async function requireUtf8(pool: pg.Pool): Promise<void> {
  const r = await pool.query<{ server_encoding: string }>('SHOW server_encoding');
  const encoding = r.rows[0]?.server_encoding;
  if (encoding !== 'UTF8') {
    throw Object.assign(new Error(`the database's encoding is ${encoding ?? 'unknown'}, not UTF8: create it with ENCODING 'UTF8' (store_encoding_not_utf8)`), { code: 'store_encoding_not_utf8' });
  }
}

/** describe says what went wrong opening the database, with the server's error code when there is one. */
function describe(e: unknown): string {
  const err = e as Error & { code?: string };
  const message = err.message || String(e);
  if (err.code === 'ECONNREFUSED') return `${message} (is PostgreSQL running and listening there?)`;
  if (err.code === 'ENOTFOUND' || err.code === 'EAI_AGAIN') return `${message} (the host name does not resolve)`;
  if (err.code === '28P01' || err.code === '28000') return `${message} (check the user and password)`;
  if (err.code === '3D000') return `${message} (create the database first)`;
  return err.code && !message.includes(err.code) ? `${message} (${err.code})` : message;
}

function loadText(load: AgentRecord['load']): string | null {
  return load === null ? null : JSON.stringify(load);
}

/** jobFrom reads a stored job; jobs recorded before egress policies existed ran, and run, with no egress. */
function jobFrom(doc: string): Job {
  return { egress: DEFAULT_EGRESS_POLICY, dataGrants: [], ...(JSON.parse(doc) as Partial<Job>) } as Job;
}

/** jobColumns are a job's status, mode, ended_at, expired_at, metadata and doc columns: what queries select on, from the doc. */
/** columnsOf turns rows (one per item) into columns, the arrays a multi-row statement's unnest takes. */
function columnsOf<T>(items: readonly T[], row: (item: T) => unknown[]): unknown[][] {
  const cols: unknown[][] = [];
  for (const item of items) {
    row(item).forEach((v, i) => (cols[i] ??= []).push(v));
  }
  return cols;
}

/** jobRowColumns is columnsOf for rows ending in jobColumns: the last (doc, JSON text) goes as a text[] literal (jsonTextArray). */
function jobRowColumns<T>(items: readonly T[], row: (item: T) => unknown[]): unknown[] {
  const cols: unknown[] = columnsOf(items, row);
  if (cols.length > 0) cols[cols.length - 1] = jsonTextArray(cols[cols.length - 1] as string[]);
  return cols;
}

/** tokenColumns are the columns of token rows, as insertTokens (and insertPlacedJobs) take them. */
function tokenColumns(tokens: readonly TokenRecord[]): unknown[][] {
  const cols = columnsOf(tokens, (t) => [t.jti, t.jobId, t.workspaceId, t.issuedAt, t.expiresAt, t.revokedAt]);
  // No rows: six empty columns (unnest of empty arrays inserts nothing).
  return cols.length ? cols : [[], [], [], [], [], []];
}

function jobColumns(j: Job): JobColumns {
  const metadata = j.mode === 'sandbox' && j.sandbox ? JSON.stringify(j.sandbox.metadata) : null;
  return [j.status, j.mode === 'sandbox' ? 'sandbox' : 'job', j.endedAt ?? null, j.expiredAt ?? null, metadata, JSON.stringify(j)];
}

function objectFrom(r: ObjectRow | undefined): ObjectMeta | null {
  if (!r) return null;
  return { workspaceId: r.workspace_id, key: r.key, objectId: r.object_id, size: r.size, sha256: r.sha256, wrappedKey: r.wrapped_key, createdAt: r.created_at };
}

function keyFrom(r: KeyRow | undefined): ApiKeyRecord | null {
  if (!r) return null;
  return { id: r.id, workspaceId: r.workspace_id, name: r.name, role: r.role, secretHash: r.secret_hash, createdAt: r.created_at, revokedAt: r.revoked_at };
}

function workspaceFrom(r: WorkspaceRow | undefined): Workspace | null {
  if (!r) return null;
  return { id: r.id, name: r.name, createdAt: r.created_at, maxCpu: r.max_cpu, maxMemoryBytes: r.max_memory_bytes, maxTimeoutSeconds: r.max_timeout_seconds, maxDiskBytes: r.max_disk_bytes };
}
