/** The control plane's domain records, independent of storage and transport. */
import type { EgressPolicy } from '../shared/net/egress-policy.js';
import type { AgentLoad, DeniedConnection, ImageManifest, JobImage, TerminalReason, WipeReceipt, WorkloadSpec } from '../shared/wire.js';

/** Workspace is a tenant: its jobs, keys and limits. */
export interface Workspace {
  id: string;
  name: string;
  createdAt: string;
  maxCpu: number;
  maxMemoryBytes: number;
  maxTimeoutSeconds: number;
  maxDiskBytes: number;
}

/**
 * API_KEY_ROLES are what a key may do, most powerful first. platform-admin: every workspace, every key, all audit
 * events and the chain check; workspace-admin: its own workspace's keys and audit events; member: its workspace's jobs,
 * data, network policy and audit events. Every role also does what a member does in its own workspace.
 */
export const API_KEY_ROLES = ['platform-admin', 'workspace-admin', 'member'] as const;

/** ApiKeyRole is one of API_KEY_ROLES. */
export type ApiKeyRole = (typeof API_KEY_ROLES)[number];

/** roleAtLeast says whether `role` includes the rights of `needed` (platform-admin ⊃ workspace-admin ⊃ member). */
export function roleAtLeast(role: ApiKeyRole, needed: ApiKeyRole): boolean {
  return API_KEY_ROLES.indexOf(role) <= API_KEY_ROLES.indexOf(needed);
}

/** ApiKeyRecord is a stored API key: only the hash of its secret is kept. */
export interface ApiKeyRecord {
  id: string;
  workspaceId: string;
  name: string;
  role: ApiKeyRole;
  secretHash: string;
  createdAt: string;
  revokedAt: string | null;
}

/** JobStatus is where a job is; the last six are terminal. */
export type JobStatus = 'queued' | 'assigned' | 'running' | TerminalReason;

/** TERMINAL_STATUSES are the statuses a job never leaves. */
export const TERMINAL_STATUSES: readonly JobStatus[] = ['succeeded', 'failed', 'timeout', 'oom', 'cancelled', 'error'];

/** Job is one run-to-completion workload. */
export interface Job extends WorkloadSpec {
  id: string;
  workspaceId: string;
  status: JobStatus;
  createdAt: string;
  startedAt: string | null;
  endedAt: string | null;
  exitCode: number | null;
  signal: number | null;
  message: string | null;
  cancelRequested: boolean;
  agentId: string | null;
  cellId: string | null;
  timings: Record<string, number>;
  /** How the job's volume was crypto-shredded, once the agent reports it. */
  wipe: WipeReceipt | null;
  /** The workspace's egress policy when the job was created; the job's cell runs under it. */
  egress: EgressPolicy;
  /** What the job's token lets it do in the workspace's data store (nothing unless asked). */
  dataGrants: DataGrant[];
  /** When retention ended: output deleted, command, env, cwd and message shredded with the job's key. */
  expiredAt?: string | null;
  /** Output bytes the agent dropped past the job's output limit (0: the output is complete). */
  outputDroppedBytes?: number;
  /** The image the job runs on (null or absent: the host's /usr root). */
  image?: JobImage;
  /** The image reference the job was created with (name:tag or digest), as the caller wrote it; null for the host root. */
  imageRef?: string | null;
  /** 'sandbox': the cell stays up running processes on request (see SandboxFields); absent on records from before sandboxes. */
  mode?: WorkloadMode;
  /** A sandbox's own fields (mode 'sandbox' only). */
  sandbox?: SandboxFields;
}

/** WorkloadMode says whether a workload runs one command (job) or stays up serving processes and files (sandbox). */
export type WorkloadMode = 'job' | 'sandbox';

/** SandboxEndRequest is why the control plane asked a sandbox's agent to end it (its status then says how it ended). */
export type SandboxEndRequest = 'deleted' | 'idle';

/** SandboxFields are what a sandbox has beyond a job: metadata (kept in clear: it is what list filters on), its idle limit. */
export interface SandboxFields {
  metadata: Record<string, string>;
  /** No API activity and no keep-alive process for this long ends the sandbox (0: never idle). */
  idleTimeoutSeconds: number;
  /** When the sandbox's deadline falls (set when it becomes ready, moved by a timeout change). */
  endsAt: string | null;
  /** Set when the control plane asked for the end (delete, idle); null for ends the agent decided (timeout, error). */
  endRequested: SandboxEndRequest | null;
}

/** DataGrant lets a workload read (or read and write) the objects under one key prefix of its workspace. */
export interface DataGrant {
  prefix: string;
  access: 'read' | 'read-write';
}

/** ObjectMeta is a stored object's record: the ciphertext lives in a file named by `objectId`. */
export interface ObjectMeta {
  workspaceId: string;
  key: string;
  objectId: string;
  size: number;
  sha256: string;
  /** The object's data key, wrapped under the workspace key. */
  wrappedKey: Buffer;
  createdAt: string;
}

/** SigningKeyRecord is a token signing key; the private half is stored wrapped under the KEK. */
export interface SigningKeyRecord {
  kid: string;
  publicJwk: string;
  wrappedPrivate: Buffer;
  createdAt: string;
}

/** TokenRecord is a minted workload token's identity (never the token itself). */
export interface TokenRecord {
  jti: string;
  jobId: string;
  workspaceId: string;
  issuedAt: string;
  expiresAt: string;
  revokedAt: string | null;
}

/** DEFAULT_EGRESS_POLICY is a workspace's policy until it sets one: no egress at all. */
export const DEFAULT_EGRESS_POLICY: EgressPolicy = Object.freeze({ allow: Object.freeze([]), dryRun: false });

/** DeniedConnectionRecord is a denied (or, in dry-run, would-be denied) connection of a job, as stored. */
export interface DeniedConnectionRecord extends DeniedConnection {
  workspaceId: string;
  jobId: string;
}

/** OutputChunk is a piece of a job's stdout or stderr, in order. */
export interface OutputChunk {
  seq: number;
  stream: 'stdout' | 'stderr';
  data: Buffer;
}

/** IMAGE_STATES are where an image's import is: pulling (blobs arriving), unpacking (agents preparing), ready, failed. */
export const IMAGE_STATES = ['pulling', 'unpacking', 'ready', 'failed'] as const;
/** ImageState is one of IMAGE_STATES. */
export type ImageState = (typeof IMAGE_STATES)[number];

/** ImageRecord is one name:tag of a workspace (or a public one) and the image it names, by manifest digest. */
export interface ImageRecord {
  id: string;
  /** The owning workspace; null for a public image (published by a platform admin), usable by every workspace. */
  workspaceId: string | null;
  name: string;
  tag: string;
  /** The manifest digest, known once the blobs are in the store. */
  digest: string | null;
  state: ImageState;
  /** Where it came from, without credentials: `docker://host/repo:tag`, `archive:docker-archive`, `oci-layout:<dir>`. */
  source: string;
  /** Transfer progress while pulling; bytesTotal null while unknown. */
  bytesDone: number;
  bytesTotal: number | null;
  /** Bytes of the image's blobs (manifest, config, compressed layers) in the store; shared blobs counted per image. */
  bytes: number;
  /** Bytes of the unpacked layers, as the agent reported them. */
  unpackedBytes: number | null;
  manifest: ImageManifest | null;
  /** Every blob the image needs in the store (manifest, config, layers), once known. */
  blobs: string[];
  /** Why the import failed (state failed): a stable code and a message. */
  error: { code: string; message: string } | null;
  createdAt: string;
  updatedAt: string;
  createdBy: string;
}

/** AGENT_STATES are what an agent can be to the control plane: on a replica's channel, off it, draining, or removed. */
export const AGENT_STATES = ['connected', 'disconnected', 'draining', 'removed'] as const;
/** AgentState is one of AGENT_STATES. */
export type AgentState = (typeof AGENT_STATES)[number];

/** AgentRecord is an agent as every replica sees it: where it is connected, whether it takes work, its last load. */
export interface AgentRecord {
  id: string;
  /** The replica whose channel the agent is on (null: not connected). */
  replicaId: string | null;
  connected: boolean;
  /** No new placements; running work finishes. */
  draining: boolean;
  /** Forgotten by an operator: refused until it is re-admitted. */
  removed: boolean;
  capacity: number;
  running: number;
  /** As last reported on the wire. */
  load: AgentLoad | null;
  connectedAt: string | null;
  lastSeenAt: string;
}

/** ReplicaRecord is a running control-plane replica: where its API is, and when it last said it is alive. */
export interface ReplicaRecord {
  id: string;
  apiUrl: string;
  startedAt: string;
  heartbeatAt: string;
}
