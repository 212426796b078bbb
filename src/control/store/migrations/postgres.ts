/**
 * The PostgreSQL store's schema as a versioned history: each migration runs once, in a transaction of its own, and is
 * recorded in `schema_migrations`. A session advisory lock around the whole run makes replicas that start together
 * migrate one after the other (the later ones find the work done).
 */
import type pg from 'pg';
import { API_KEY_ROLES } from '../../model.js';

/** ADVISORY_LOCK_SPACE is the first key of every advisory lock Cleanroom takes ('ClRm'); the second names the lock. */
export const ADVISORY_LOCK_SPACE = 0x436c526d;
/** MIGRATION_LOCK serialises migrations across replicas (session-level, held for the whole run). */
export const MIGRATION_LOCK = 1;
/** AUDIT_LOCK serialises appends to the audit chain across replicas (transaction-level: cr_append_audit of migration 3). */
export const AUDIT_LOCK = 2;
/**
 * QUOTA_LOCK_SPACE is the first key of the workspaces' quota locks (transaction-level; second key hashtext(workspace id)),
 * taken by the functions of migration 2 before they count a workspace's placed jobs (see there): a space of their own, so
 * no workspace's hash can meet a named lock of ADVISORY_LOCK_SPACE.
 */
export const QUOTA_LOCK_SPACE = ADVISORY_LOCK_SPACE + 1;

/** PostgresMigration takes the database from `version - 1` to `version`; `sql` runs in one transaction. */
interface PostgresMigration {
  version: number;
  why: string;
  sql: string;
}

/**
 * Text columns that are compared or sorted use the "C" collation: byte order, as SQLite compares, whatever the
 * database's locale (object key prefixes, ISO times and ids page correctly only in code point order).
 */
const MIGRATIONS: readonly PostgresMigration[] = [
  {
    version: 1,
    why: 'the layout of SQLite schema 4: workspaces, keys, jobs and output, policies, denials, audit chain, data, tokens, images, agents, replicas',
    sql: `
CREATE TABLE workspaces (
  id text COLLATE "C" PRIMARY KEY, name text COLLATE "C" NOT NULL UNIQUE, created_at text COLLATE "C" NOT NULL,
  max_cpu double precision NOT NULL, max_memory_bytes bigint NOT NULL, max_timeout_seconds bigint NOT NULL,
  max_disk_bytes bigint NOT NULL);
CREATE TABLE api_keys (
  id text COLLATE "C" PRIMARY KEY, workspace_id text COLLATE "C" NOT NULL REFERENCES workspaces(id), name text NOT NULL,
  role text NOT NULL CHECK (role IN (${API_KEY_ROLES.map((r) => `'${r}'`).join(', ')})), secret_hash text NOT NULL,
  created_at text COLLATE "C" NOT NULL, revoked_at text);
CREATE INDEX api_keys_by_workspace ON api_keys (workspace_id, created_at, id);
-- doc is the job as JSON text, never parsed by the server (PostgreSQL's JSON functions refuse \\u0000, which a job's
-- message may hold): what queries select on has a column of its own, written from the doc, and version makes a
-- read-modify-write of the doc a compare-and-set.
CREATE TABLE jobs (
  id text COLLATE "C" PRIMARY KEY, workspace_id text COLLATE "C" NOT NULL REFERENCES workspaces(id), status text NOT NULL,
  created_at text COLLATE "C" NOT NULL, mode text NOT NULL, ended_at text COLLATE "C", expired_at text, metadata jsonb,
  version bigint NOT NULL DEFAULT 0, doc text NOT NULL);
CREATE INDEX jobs_by_workspace ON jobs (workspace_id, mode, created_at DESC, id DESC);
CREATE INDEX jobs_by_status ON jobs (status);
CREATE INDEX jobs_to_expire ON jobs (ended_at) WHERE expired_at IS NULL;
CREATE TABLE job_output (
  job_id text COLLATE "C" NOT NULL, seq integer NOT NULL, stream text NOT NULL, data bytea NOT NULL, PRIMARY KEY (job_id, seq));
CREATE TABLE egress_policies (
  workspace_id text COLLATE "C" PRIMARY KEY REFERENCES workspaces(id), doc text NOT NULL, updated_at text NOT NULL);
CREATE TABLE denied_connections (
  id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, workspace_id text COLLATE "C" NOT NULL REFERENCES workspaces(id),
  job_id text COLLATE "C" NOT NULL, cell_id text NOT NULL, action text NOT NULL, destination text NOT NULL, protocol text NOT NULL,
  port integer, time text COLLATE "C" NOT NULL);
CREATE INDEX denied_by_workspace ON denied_connections (workspace_id, time DESC, id DESC);
CREATE INDEX denied_by_job ON denied_connections (job_id, time DESC, id DESC);
CREATE TABLE audit_events (
  seq bigint PRIMARY KEY, time text NOT NULL, type text COLLATE "C" NOT NULL, actor text NOT NULL, workspace_id text COLLATE "C",
  subject text, details text NOT NULL, prev_hash text NOT NULL, hash text NOT NULL);
CREATE INDEX audit_by_workspace ON audit_events (workspace_id, seq);
-- Append-only: the platform never updates, deletes or truncates an event (the hash chain catches anyone who does it behind our back).
CREATE FUNCTION cleanroom_audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN RAISE EXCEPTION 'audit events are append-only'; END $$;
CREATE TRIGGER audit_no_change BEFORE UPDATE OR DELETE ON audit_events FOR EACH ROW EXECUTE FUNCTION cleanroom_audit_append_only();
CREATE TRIGGER audit_no_truncate BEFORE TRUNCATE ON audit_events FOR EACH STATEMENT EXECUTE FUNCTION cleanroom_audit_append_only();
CREATE TABLE workspace_keys (
  workspace_id text COLLATE "C" PRIMARY KEY REFERENCES workspaces(id), wrapped bytea NOT NULL, created_at text NOT NULL);
CREATE TABLE objects (
  workspace_id text COLLATE "C" NOT NULL REFERENCES workspaces(id), key text COLLATE "C" NOT NULL, object_id text NOT NULL,
  size bigint NOT NULL, sha256 text NOT NULL, wrapped_key bytea NOT NULL, created_at text NOT NULL, PRIMARY KEY (workspace_id, key));
CREATE TABLE signing_keys (
  kid text COLLATE "C" PRIMARY KEY, public_jwk text NOT NULL, wrapped_private bytea NOT NULL, created_at text COLLATE "C" NOT NULL);
CREATE TABLE tokens (
  jti text COLLATE "C" PRIMARY KEY, job_id text COLLATE "C" NOT NULL, workspace_id text NOT NULL, issued_at text NOT NULL,
  expires_at text COLLATE "C" NOT NULL, revoked_at text);
CREATE INDEX tokens_by_job ON tokens (job_id);
-- owner '' is a public image; a name:tag is unique per owner; an image is content-addressed by its manifest digest.
CREATE TABLE images (
  id text COLLATE "C" PRIMARY KEY, owner text COLLATE "C" NOT NULL, name text COLLATE "C" NOT NULL, tag text COLLATE "C" NOT NULL,
  digest text COLLATE "C", state text NOT NULL, bytes bigint NOT NULL, created_at text COLLATE "C" NOT NULL, doc text NOT NULL,
  UNIQUE (owner, name, tag));
CREATE INDEX images_by_digest ON images (digest);
CREATE TABLE agents (
  id text COLLATE "C" PRIMARY KEY, replica_id text, connected boolean NOT NULL, draining boolean NOT NULL, removed boolean NOT NULL,
  capacity integer NOT NULL, running integer NOT NULL, load text, connected_at text, last_seen_at text NOT NULL);
CREATE TABLE replicas (
  id text COLLATE "C" PRIMARY KEY, api_url text NOT NULL, started_at text COLLATE "C" NOT NULL, heartbeat_at text NOT NULL);
`,
  },
  {
    version: 2,
    why: 'placed jobs recorded and counted against the running quota in one round trip, race-free across replicas',
    // A job placed on an agent by one replica must not take its workspace past its running quota because another replica
    // placed one at the same time. Every count of a workspace's placed jobs takes the workspace's quota lock (transaction
    // level: held until commit) and counts in a statement of its own after it: in READ COMMITTED each statement of a
    // volatile function takes a fresh snapshot, so the count sees every row committed by whoever held the lock before (the
    // store's connections ask for READ COMMITTED, whatever the server's default).
    // cr_insert_placed_jobs inserts the rows, counts and commits while holding the lock, so of two racing placements
    // (creates here, or claims from the queue counted with cr_count_jobs after their commit) the later count sees both:
    // one round trip where an insert and a count after its commit took two. A batch takes its locks in the order of their
    // keys (not of the workspace ids, which two colliding hashes would not keep in one order), so no two batches wait on
    // each other.
    sql: `
CREATE FUNCTION cr_lock_quotas(p_ws text[]) RETURNS void LANGUAGE plpgsql AS $f$
DECLARE k integer;
BEGIN
  FOR k IN SELECT DISTINCT hashtext(w) FROM unnest(p_ws) AS w ORDER BY 1 LOOP
    PERFORM pg_advisory_xact_lock(${QUOTA_LOCK_SPACE}, k);
  END LOOP;
END $f$;
-- The counts run under the lock: an index of the placed jobs keeps them from reading a workspace's whole history.
CREATE INDEX jobs_placed ON jobs (workspace_id) WHERE status IN ('assigned', 'running');
CREATE FUNCTION cr_insert_placed_jobs(p_id text[], p_ws text[], p_created text[], p_status text[], p_mode text[], p_ended text[],
    p_expired text[], p_metadata jsonb[], p_doc text[]) RETURNS TABLE (job_id text, placed integer) LANGUAGE plpgsql AS $f$
BEGIN
  PERFORM cr_lock_quotas(p_ws);
  INSERT INTO jobs (id, workspace_id, created_at, status, mode, ended_at, expired_at, metadata, doc)
    SELECT * FROM unnest(p_id, p_ws, p_created, p_status, p_mode, p_ended, p_expired, p_metadata, p_doc);
  RETURN QUERY SELECT u.i, (SELECT count(*)::integer FROM jobs j WHERE j.workspace_id = u.w AND j.status IN ('assigned', 'running'))
    FROM unnest(p_id, p_ws) AS u(i, w);
END $f$;
CREATE FUNCTION cr_count_jobs(p_ws text[], p_st text[]) RETURNS TABLE (ws text, st text, n integer) LANGUAGE plpgsql AS $f$
BEGIN
  PERFORM cr_lock_quotas(p_ws);
  RETURN QUERY SELECT u.w, u.s, (SELECT count(*)::integer FROM jobs j WHERE j.workspace_id = u.w AND j.status = ANY(string_to_array(u.s, ',')))
    FROM unnest(p_ws, p_st) AS u(w, s);
END $f$;
`,
  },
  {
    version: 3,
    why: 'audit events linked into the chain in the database, under a lock: one round trip per batch whichever replica appended last',
    // Each replica sealed its batch after the last event it knew and inserted it; with two replicas appending, the other
    // had often appended meanwhile, so the insert lost the race for the seq (a unique violation), and the batch was read
    // again, sealed again and sent again. cr_append_audit takes the chain's lock (transaction level), reads the last
    // event and links the batch after it here: hash = sha256(prev_hash || '\n' || pre || seq || post), where pre and post
    // are the event's canonical JSON around its seq (chain.ts chainParts), so the hash is the one eventHash computes and
    // audit verify checks. The seq primary key still refuses a writer that does not take the lock.
    sql: `
CREATE FUNCTION cr_append_audit(p_time text[], p_type text[], p_actor text[], p_ws text[], p_subject text[], p_details text[],
    p_pre text[], p_post text[]) RETURNS TABLE (o_seq bigint, o_prev_hash text, o_hash text) LANGUAGE plpgsql AS $f$
DECLARE
  last_seq bigint;
  last_hash text;
  seqs bigint[] := '{}';
  prevs text[] := '{}';
  hashes text[] := '{}';
BEGIN
  PERFORM pg_advisory_xact_lock(${ADVISORY_LOCK_SPACE}, ${AUDIT_LOCK});
  SELECT a.seq, a.hash INTO last_seq, last_hash FROM audit_events a ORDER BY a.seq DESC LIMIT 1;
  IF last_seq IS NULL THEN
    last_seq := 0;
    last_hash := repeat('0', 64);
  END IF;
  FOR i IN 1 .. coalesce(array_length(p_type, 1), 0) LOOP
    prevs := prevs || last_hash;
    last_seq := last_seq + 1;
    last_hash := encode(sha256(convert_to(last_hash || E'\\n' || p_pre[i] || last_seq::text || p_post[i], 'UTF8')), 'hex');
    seqs := seqs || last_seq;
    hashes := hashes || last_hash;
  END LOOP;
  INSERT INTO audit_events (seq, time, type, actor, workspace_id, subject, details, prev_hash, hash)
    SELECT * FROM unnest(seqs, p_time, p_type, p_actor, p_ws, p_subject, p_details, prevs, hashes);
  RETURN QUERY SELECT u.s, u.p, u.h FROM unnest(seqs, prevs, hashes) WITH ORDINALITY AS u(s, p, h, n) ORDER BY u.n;
END $f$;
`,
  },
];

/** POSTGRES_SCHEMA_VERSION is the database layout this code reads and writes: the last migration's version. */
export const POSTGRES_SCHEMA_VERSION = MIGRATIONS[MIGRATIONS.length - 1]!.version;

/** migratePostgres brings the database to POSTGRES_SCHEMA_VERSION, or lays out an empty one; refuses a database newer than this code. */
export async function migratePostgres(pool: pg.Pool, migrations: readonly PostgresMigration[] = MIGRATIONS): Promise<void> {
  const latest = migrations[migrations.length - 1]!.version;
  const client = await pool.connect();
  let broken: Error | undefined;
  try {
    await client.query('SELECT pg_advisory_lock($1, $2)', [ADVISORY_LOCK_SPACE, MIGRATION_LOCK]);
    try {
      await client.query(`CREATE TABLE IF NOT EXISTS schema_migrations (
        version integer PRIMARY KEY, why text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())`);
      const found = await client.query<{ v: number | null }>('SELECT max(version) AS v FROM schema_migrations');
      const current = found.rows[0]?.v ?? 0;
      if (current > latest) throw new Error(`the PostgreSQL database has schema version ${current}, newer than this Cleanroom (${latest}): run the newer Cleanroom (a database is never migrated down)`);
      for (const m of migrations) {
        if (m.version <= current) continue;
        await client.query('BEGIN');
        try {
          await client.query(m.sql);
          await client.query('INSERT INTO schema_migrations (version, why) VALUES ($1, $2)', [m.version, m.why]);
          await client.query('COMMIT');
        } catch (e) {
          await client.query('ROLLBACK').catch(() => {});
          throw new Error(`migrating the PostgreSQL database to schema version ${m.version} failed (it stays at ${m.version - 1}): ${(e as Error).message}`);
        }
      }
    } finally {
      await client.query('SELECT pg_advisory_unlock($1, $2)', [ADVISORY_LOCK_SPACE, MIGRATION_LOCK]).catch((e: Error) => (broken = e));
    }
  } finally {
    // A connection whose unlock failed is dropped, not pooled: closing it releases the lock.
    client.release(broken);
  }
}

/** POSTGRES_MIGRATIONS is the whole history (the store contract test replays part of it, and a newer one). */
export const POSTGRES_MIGRATIONS = MIGRATIONS;
export type { PostgresMigration };
