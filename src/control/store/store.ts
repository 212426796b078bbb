/** Store is the control plane's persistence port; SQLite is the embedded adapter (async so a PostgreSQL adapter fits). */
import type { EgressPolicy } from '../../shared/net/egress-policy.js';
import type { ApiKeyRecord, DeniedConnectionRecord, Job, OutputChunk, Workspace } from '../model.js';

/** DeniedQuery selects a workspace's denied connections: newest first, at most `limit`, optionally of one job. */
export interface DeniedQuery {
  limit: number;
  jobId?: string;
}

/** Store keeps workspaces, keys, jobs, job output, egress policies and denied connections. */
export interface Store {
  createWorkspace(w: Workspace): Promise<void>;
  getWorkspace(id: string): Promise<Workspace | null>;
  getWorkspaceByName(name: string): Promise<Workspace | null>;
  listWorkspaces(): Promise<Workspace[]>;

  createApiKey(k: ApiKeyRecord): Promise<void>;
  getApiKey(id: string): Promise<ApiKeyRecord | null>;
  countApiKeys(): Promise<number>;

  createJob(j: Job): Promise<void>;
  getJob(id: string): Promise<Job | null>;
  /** listJobs returns a workspace's jobs, newest first. */
  listJobs(workspaceId: string, limit: number): Promise<Job[]>;
  /** jobsWithStatus returns jobs in any of the given statuses (all workspaces). */
  jobsWithStatus(statuses: readonly string[]): Promise<Job[]>;
  updateJob(id: string, patch: Partial<Job>): Promise<void>;

  appendOutput(jobId: string, chunk: OutputChunk): Promise<void>;
  /** output returns a job's chunks with seq > afterSeq, in order. */
  output(jobId: string, afterSeq: number): Promise<OutputChunk[]>;

  /** getEgressPolicy returns the workspace's stored policy, or null if it never set one. */
  getEgressPolicy(workspaceId: string): Promise<EgressPolicy | null>;
  /** setEgressPolicy replaces the workspace's policy (already validated and normalised). */
  setEgressPolicy(workspaceId: string, policy: EgressPolicy): Promise<void>;

  /** addDeniedConnections stores records atomically. */
  addDeniedConnections(records: readonly DeniedConnectionRecord[]): Promise<void>;
  /** listDeniedConnections returns a workspace's records, newest first. */
  listDeniedConnections(workspaceId: string, q: DeniedQuery): Promise<DeniedConnectionRecord[]>;

  close(): Promise<void>;
}
