/** Store is the control plane's persistence port; SQLite is the embedded adapter (async so a PostgreSQL adapter fits). */
import type { ApiKeyRecord, Job, OutputChunk, Workspace } from '../model.js';

/** Store keeps workspaces, keys, jobs and job output. */
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

  close(): Promise<void>;
}
