/** SqliteStore is the embedded Store adapter (better-sqlite3, WAL). */
import Database from 'better-sqlite3';
import type { EgressPolicy } from '../../shared/net/egress-policy.js';
import { DEFAULT_EGRESS_POLICY, type ApiKeyRecord, type DeniedConnectionRecord, type Job, type OutputChunk, type Workspace } from '../model.js';
import type { DeniedQuery, Store } from './store.js';

const SCHEMA = `
CREATE TABLE IF NOT EXISTS workspaces (
  id TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE, created_at TEXT NOT NULL,
  max_cpu REAL NOT NULL, max_memory_bytes INTEGER NOT NULL, max_timeout_seconds INTEGER NOT NULL,
  max_disk_bytes INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS api_keys (
  id TEXT PRIMARY KEY, workspace_id TEXT NOT NULL REFERENCES workspaces(id), name TEXT NOT NULL,
  admin INTEGER NOT NULL, secret_hash TEXT NOT NULL, created_at TEXT NOT NULL, revoked_at TEXT);
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
`;

interface WorkspaceRow { id: string; name: string; created_at: string; max_cpu: number; max_memory_bytes: number; max_timeout_seconds: number; max_disk_bytes: number }
interface DeniedRow { workspace_id: string; job_id: string; cell_id: string; action: 'denied' | 'dry-run'; destination: string; protocol: string; port: number | null; time: string }
interface KeyRow { id: string; workspace_id: string; name: string; admin: number; secret_hash: string; created_at: string; revoked_at: string | null }

/** SqliteStore keeps state in one SQLite file; a job is one row plus its output chunks. */
export class SqliteStore implements Store {
  private readonly db: Database.Database;
  private readonly stmts;

  constructor(path: string) {
    this.db = new Database(path);
    this.db.pragma('journal_mode = WAL');
    // NORMAL in WAL mode: commits are durable across a process crash; an OS crash may lose the last few.
    this.db.pragma('synchronous = NORMAL');
    this.db.pragma('foreign_keys = ON');
    this.db.exec(SCHEMA);
    const d = this.db;
    this.stmts = {
      insertWorkspace: d.prepare('INSERT INTO workspaces VALUES (@id, @name, @createdAt, @maxCpu, @maxMemoryBytes, @maxTimeoutSeconds, @maxDiskBytes)'),
      workspace: d.prepare<[string], WorkspaceRow>('SELECT * FROM workspaces WHERE id = ?'),
      workspaceByName: d.prepare<[string], WorkspaceRow>('SELECT * FROM workspaces WHERE name = ?'),
      workspaces: d.prepare<[], WorkspaceRow>('SELECT * FROM workspaces ORDER BY created_at'),
      insertKey: d.prepare('INSERT INTO api_keys VALUES (@id, @workspaceId, @name, @admin, @secretHash, @createdAt, @revokedAt)'),
      key: d.prepare<[string], KeyRow>('SELECT * FROM api_keys WHERE id = ?'),
      countKeys: d.prepare<[], { n: number }>('SELECT count(*) AS n FROM api_keys'),
      insertJob: d.prepare('INSERT INTO jobs VALUES (?, ?, ?, ?, ?)'),
      job: d.prepare<[string], { doc: string }>('SELECT doc FROM jobs WHERE id = ?'),
      jobs: d.prepare<[string, number], { doc: string }>('SELECT doc FROM jobs WHERE workspace_id = ? ORDER BY created_at DESC, id DESC LIMIT ?'),
      updateJob: d.prepare('UPDATE jobs SET status = ?, doc = ? WHERE id = ?'),
      insertOutput: d.prepare('INSERT INTO job_output VALUES (?, ?, ?, ?)'),
      output: d.prepare<[string, number], { seq: number; stream: 'stdout' | 'stderr'; data: Buffer }>(
        'SELECT seq, stream, data FROM job_output WHERE job_id = ? AND seq > ? ORDER BY seq',
      ),
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
    this.stmts.insertKey.run({ ...k, admin: k.admin ? 1 : 0 });
  }

  async getApiKey(id: string): Promise<ApiKeyRecord | null> {
    const r = this.stmts.key.get(id);
    if (!r) return null;
    return { id: r.id, workspaceId: r.workspace_id, name: r.name, admin: r.admin === 1, secretHash: r.secret_hash, createdAt: r.created_at, revokedAt: r.revoked_at };
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

  async jobsWithStatus(statuses: readonly string[]): Promise<Job[]> {
    const marks = statuses.map(() => '?').join(',');
    return this.db
      .prepare<string[], { doc: string }>(`SELECT doc FROM jobs WHERE status IN (${marks}) ORDER BY created_at`)
      .all(...statuses)
      .map((r) => jobFrom(r.doc));
  }

  async updateJob(id: string, patch: Partial<Job>): Promise<void> {
    const tx = this.db.transaction(() => {
      const r = this.stmts.job.get(id);
      if (!r) return;
      const job = { ...jobFrom(r.doc), ...patch };
      this.stmts.updateJob.run(job.status, JSON.stringify(job), id);
    });
    tx();
  }

  async appendOutput(jobId: string, chunk: OutputChunk): Promise<void> {
    this.stmts.insertOutput.run(jobId, chunk.seq, chunk.stream, chunk.data);
  }

  async output(jobId: string, afterSeq: number): Promise<OutputChunk[]> {
    return this.stmts.output.all(jobId, afterSeq);
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

  async close(): Promise<void> {
    this.db.close();
  }
}

/** jobFrom parses a stored job; jobs recorded before egress policies existed ran, and run, with no egress. */
function jobFrom(doc: string): Job {
  return { egress: DEFAULT_EGRESS_POLICY, ...(JSON.parse(doc) as Partial<Job>) } as Job;
}

function workspaceFrom(r: WorkspaceRow | undefined): Workspace | null {
  if (!r) return null;
  return { id: r.id, name: r.name, createdAt: r.created_at, maxCpu: r.max_cpu, maxMemoryBytes: r.max_memory_bytes, maxTimeoutSeconds: r.max_timeout_seconds, maxDiskBytes: r.max_disk_bytes };
}
