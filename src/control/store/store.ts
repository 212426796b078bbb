/** Store is the control plane's persistence port: SQLite (embedded, one process) and PostgreSQL (shared by replicas) adapters. */
import type { EgressPolicy } from '../../shared/net/egress-policy.js';
import type { AuditEvent, AuditEventInput } from '../audit/chain.js';
import type { AgentLoad } from '../../shared/wire.js';
import type { AgentRecord, ApiKeyRecord, ApiKeyRole, DeniedConnectionRecord, ImageRecord, ImageState, Job, JobStatus, ObjectMeta, OutputChunk, ReplicaRecord, SigningKeyRecord, TokenRecord, Workspace } from '../model.js';

/** DeniedQuery selects a workspace's denied connections: newest first, at most `limit`, optionally of one job. */
export interface DeniedQuery {
  limit: number;
  jobId?: string;
}

/** AuditQuery selects audit events: by workspace and type, after/before a sequence number, in either order. */
export interface AuditQuery {
  limit: number;
  order: 'asc' | 'desc';
  workspaceId?: string;
  type?: string;
  afterSeq?: number;
  beforeSeq?: number;
}

/** ObjectQuery lists a workspace's objects by key prefix, in key order, after a key (for paging). */
export interface ObjectQuery {
  prefix: string;
  after?: string;
  limit: number;
}

/** SandboxQuery lists a workspace's sandboxes, newest first: by metadata (every pair must match), by state, after a cursor. */
export interface SandboxQuery {
  metadata: Record<string, string>;
  /** live: not ended; ended: ended; all: both. */
  state: 'live' | 'ended' | 'all';
  /** Only sandboxes older than this one (createdAt, id): the last of the previous page. */
  before?: { createdAt: string; id: string };
  limit: number;
}

/** Store keeps workspaces, keys, jobs, job output, egress policies and denied connections. */
export interface Store {
  createWorkspace(w: Workspace): Promise<void>;
  getWorkspace(id: string): Promise<Workspace | null>;
  getWorkspaceByName(name: string): Promise<Workspace | null>;
  listWorkspaces(): Promise<Workspace[]>;

  createApiKey(k: ApiKeyRecord): Promise<void>;
  getApiKey(id: string): Promise<ApiKeyRecord | null>;
  /** listApiKeys returns the keys of one workspace (or of all), revoked ones included, oldest first. */
  listApiKeys(workspaceId?: string): Promise<ApiKeyRecord[]>;
  countApiKeys(): Promise<number>;
  /** countActiveApiKeys counts the unrevoked keys with a role. */
  countActiveApiKeys(role: ApiKeyRole): Promise<number>;

  createJob(j: Job): Promise<void>;
  /**
   * createPlacedJob records a job already placed on an agent (status assigned) and resolves with its workspace's count of
   * placed (assigned or running) jobs, this one included, taken race-free against placements by other replicas: of two
   * placements of one workspace made at the same time, by createPlacedJob or by a claim followed by countJobs, at least
   * the later one counts both. With `token`, the job's first token is recorded in the same write (all or none). PostgreSQL:
   * one round trip (migration 2), one statement.
   */
  createPlacedJob(j: Job, token?: TokenRecord): Promise<number>;
  getJob(id: string): Promise<Job | null>;
  /** listJobs returns a workspace's jobs (not its sandboxes), newest first. */
  listJobs(workspaceId: string, limit: number): Promise<Job[]>;
  /** listSandboxes returns a workspace's sandboxes (jobs of mode 'sandbox'), newest first. */
  listSandboxes(workspaceId: string, q: SandboxQuery): Promise<Job[]>;
  /** jobsWithStatus returns jobs in any of the given statuses (all workspaces). */
  jobsWithStatus(statuses: readonly string[]): Promise<Job[]>;
  /** updateJob merges `patch` into the job's top-level fields (a nested object is replaced whole); unknown ids are ignored. */
  updateJob(id: string, patch: Partial<Job>): Promise<void>;
  /** countJobs counts a workspace's jobs in any of the given statuses (the running quota across replicas). */
  countJobs(workspaceId: string, statuses: readonly string[]): Promise<number>;
  /** claimJob applies `patch` only if the job's status is still `from`; true if it did (atomic: no job placed twice). */
  claimJob(id: string, from: JobStatus, patch: Partial<Job>): Promise<boolean>;
  /**
   * transitionJob applies the patch `change` makes of the job's current record (null: leave it), atomically: the patch
   * is made from the stored record it is written over (`change` may be called again, on a newer record, so it must not
   * act, only judge). Returns the record written, or null if the job is unknown or `change` left it. One round trip in
   * the usual case: an agent's report applied without a read first.
   */
  transitionJob(id: string, change: (job: Job) => Partial<Job> | null): Promise<Job | null>;

  appendOutput(jobId: string, chunk: OutputChunk): Promise<void>;
  /** output returns a job's chunks with seq > afterSeq, in order, at most `limit` of them (all if omitted). */
  output(jobId: string, afterSeq: number, limit?: number): Promise<OutputChunk[]>;
  /** lastOutputSeq returns the highest seq stored for a job (0 if none). */
  lastOutputSeq(jobId: string): Promise<number>;
  /** jobsEndedBefore returns the ids of ended jobs whose end is before `before` (ISO) and that have not expired. */
  jobsEndedBefore(before: string, limit: number): Promise<string[]>;
  /** expireJob deletes a job's output and marks its record expired at `at` (retention ended). */
  expireJob(jobId: string, at: string): Promise<void>;

  /** getEgressPolicy returns the workspace's stored policy, or null if it never set one. */
  getEgressPolicy(workspaceId: string): Promise<EgressPolicy | null>;
  /** setEgressPolicy replaces the workspace's policy (already validated and normalised). */
  setEgressPolicy(workspaceId: string, policy: EgressPolicy): Promise<void>;

  /** addDeniedConnections stores records atomically. */
  addDeniedConnections(records: readonly DeniedConnectionRecord[]): Promise<void>;
  /** listDeniedConnections returns a workspace's records, newest first. */
  listDeniedConnections(workspaceId: string, q: DeniedQuery): Promise<DeniedConnectionRecord[]>;

  /** revokeApiKey marks a key revoked; false if it was unknown or already revoked. */
  revokeApiKey(id: string, at: string): Promise<boolean>;

  /**
   * appendAudit seals an event after the current last one (as chain.ts sealEvent does, at the time of the call) and
   * stores it, atomically; details that are not JSON fail this append alone.
   */
  appendAudit(input: AuditEventInput): Promise<AuditEvent>;
  listAudit(q: AuditQuery): Promise<AuditEvent[]>;

  /** workspaceKey returns the workspace's wrapped data key, storing `candidate` first if it has none (first writer wins). */
  workspaceKey(workspaceId: string, candidate: () => Buffer): Promise<Buffer>;

  getObject(workspaceId: string, key: string): Promise<ObjectMeta | null>;
  /** putObject stores or replaces an object's record; returns the record it replaced. */
  putObject(meta: ObjectMeta): Promise<ObjectMeta | null>;
  /** deleteObject removes an object's record; returns it, or null if there was none. */
  deleteObject(workspaceId: string, key: string): Promise<ObjectMeta | null>;
  listObjects(workspaceId: string, q: ObjectQuery): Promise<ObjectMeta[]>;
  /** objectUsage counts a workspace's objects and their bytes. */
  objectUsage(workspaceId: string): Promise<{ count: number; bytes: number }>;

  listSigningKeys(): Promise<SigningKeyRecord[]>;
  addSigningKey(k: SigningKeyRecord): Promise<void>;
  deleteSigningKey(kid: string): Promise<void>;

  addToken(t: TokenRecord): Promise<void>;
  getToken(jti: string): Promise<TokenRecord | null>;
  /** revokeTokensOfJob revokes every unrevoked token of a job; returns the ids it revoked. */
  revokeTokensOfJob(jobId: string, at: string): Promise<string[]>;
  /** deleteTokensExpiredBefore forgets tokens that can no longer verify anyway. */
  deleteTokensExpiredBefore(at: string): Promise<void>;

  /** createImage stores a new image record; false if the owner already has that name:tag. */
  createImage(r: ImageRecord): Promise<boolean>;
  getImage(id: string): Promise<ImageRecord | null>;
  /** findImage returns the owner's (null: public) image of a name:tag, or with a digest (the oldest of them). */
  findImage(workspaceId: string | null, by: { name: string; tag: string } | { digest: string }): Promise<ImageRecord | null>;
  /** listImages returns a workspace's images, and the public ones if asked, oldest first. */
  listImages(workspaceId: string, withPublic: boolean): Promise<ImageRecord[]>;
  /** imagesWithDigest returns every record (any owner) of a manifest digest. */
  imagesWithDigest(digest: string): Promise<ImageRecord[]>;
  /** imagesInStates returns every record in any of the states. */
  imagesInStates(states: readonly ImageState[]): Promise<ImageRecord[]>;
  updateImage(id: string, patch: Partial<ImageRecord>): Promise<void>;
  deleteImage(id: string): Promise<void>;
  /** imageBytes sums the blob bytes of a workspace's images that did not fail. */
  imageBytes(workspaceId: string): Promise<number>;

  /** upsertAgent stores an agent's record whole, replacing any earlier one. */
  upsertAgent(a: AgentRecord): Promise<void>;
  getAgent(id: string): Promise<AgentRecord | null>;
  /** listAgents returns every agent record, by id. */
  listAgents(): Promise<AgentRecord[]>;
  /** updateAgent sets the patched fields of an agent's record; unknown ids are ignored. */
  updateAgent(id: string, patch: Partial<AgentRecord>): Promise<void>;
  /** touchAgents marks agents as connected to a replica and seen at `at`, all in one statement; unknown ids are ignored. */
  touchAgents(ids: readonly string[], replicaId: string, at: string): Promise<void>;
  /** storeAgentFigures sets the running count, capacity and (when given) load of several agents, in one statement. */
  storeAgentFigures(figures: readonly AgentFiguresRow[]): Promise<void>;
  deleteAgent(id: string): Promise<void>;

  /** upsertReplica stores a replica's record whole (its heartbeat, too). */
  upsertReplica(r: ReplicaRecord): Promise<void>;
  /** listReplicas returns every replica record, oldest start first. */
  listReplicas(): Promise<ReplicaRecord[]>;
  deleteReplica(id: string): Promise<void>;

  close(): Promise<void>;

  /** createJobs stores several new jobs at once, all or none of them (one transaction; on PostgreSQL one statement). */
  createJobs(jobs: readonly Job[]): Promise<void>;
}

/** AgentFiguresRow is what a replica stores of an agent on its channel at a heartbeat; load undefined: unchanged. */
export interface AgentFiguresRow {
  id: string;
  running: number;
  capacity: number;
  load?: AgentLoad;
}
