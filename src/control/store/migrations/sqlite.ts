/** The SQLite store's schema and its versioned history (PRAGMA user_version): v1 (no version) to SCHEMA_VERSION. */
import type Database from 'better-sqlite3';
import { API_KEY_ROLES } from '../../model.js';

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
CREATE TABLE IF NOT EXISTS agents (
  id TEXT PRIMARY KEY, replica_id TEXT, connected INTEGER NOT NULL, draining INTEGER NOT NULL, removed INTEGER NOT NULL,
  capacity INTEGER NOT NULL, running INTEGER NOT NULL, load TEXT, connected_at TEXT, last_seen_at TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS replicas (
  id TEXT PRIMARY KEY, api_url TEXT NOT NULL, started_at TEXT NOT NULL, heartbeat_at TEXT NOT NULL) WITHOUT ROWID;
`;

/**
 * SCHEMA_VERSION is the database layout this code reads and writes, kept in `PRAGMA user_version`. A database made
 * before versioning existed reads 0 and is version 1; each MIGRATIONS entry takes the database from the version before
 * it to its own. All of them and the version bump run in one transaction, so a crash leaves the old layout or the new.
 */
export const SCHEMA_VERSION = 4;

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
  {
    version: 4,
    why: 'agents and replicas: the fleet as every replica sees it (connection, drain, removal, load) and the live replicas; SCHEMA creates them',
    up() {},
  },
];

/** migrateSqlite brings an existing database to SCHEMA_VERSION, or lays out a new one; refuses a database newer than this code. */
export function migrateSqlite(db: Database.Database): void {
  // One IMMEDIATE transaction: a second process opening the same file waits, then finds the work done.
  db.transaction(() => {
    let version = db.pragma('user_version', { simple: true }) as number;
    if (version === 0) {
      const legacy = db.prepare("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'api_keys'").get();
      version = legacy ? 1 : SCHEMA_VERSION; // a new file gets the current layout from SCHEMA below
    }
    if (version > SCHEMA_VERSION) throw new Error(`the SQLite database has schema version ${version}, newer than this Cleanroom (${SCHEMA_VERSION}): run the newer Cleanroom (a database is never migrated down)`);
    for (const m of MIGRATIONS) if (m.version > version) m.up(db);
    db.exec(SCHEMA);
    db.pragma(`user_version = ${SCHEMA_VERSION}`);
  }).immediate();
}
