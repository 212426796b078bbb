/** Messages exchanged between the control plane and agents over the mutual-TLS channel. */

import type { EgressPolicy } from './net/egress-policy.js';

/** AGENT_CERT_CN is the subject every agent certificate carries; other certificates of our CA are refused. */
export const AGENT_CERT_CN = 'cleanroom-agent';

/** WorkloadSpec is what runs and within which limits: the resolved request, defaults applied. */
export interface WorkloadSpec {
  command: string[];
  env: Record<string, string>;
  cwd: string;
  cpu: number;
  memoryBytes: number;
  timeoutSeconds: number;
  diskBytes: number;
  runtime: Runtime;
}

/** JobSpec is what an agent needs to run one job; it carries no API key and no tenant secret. */
export interface JobSpec extends WorkloadSpec {
  jobId: string;
  workspaceId: string;
  /** The workspace's egress policy at the time the job was created (validated by the control plane). */
  egress: EgressPolicy;
  /** Output (stdout and stderr together) forwarded at most; the rest is dropped and counted. */
  outputLimitBytes: number;
}

/** WorkloadCredentials is what a workload gets to reach the data service; the agent places it in the cell's private tmpfs only. */
export interface WorkloadCredentials {
  /** The workload's signed access token (a JWT), never logged. */
  token: string;
  /** When the token expires (ISO 8601). */
  expiresAt: string;
}

/**
 * MAX_ASSIGNMENT_BYTES is the largest assignment cell init accepts: its command, env and cwd, each NUL-terminated, plus
 * 8 bytes of counts (native/cell-init/cell-init.c MAX_ASSIGNMENT; a unit test keeps the two equal).
 */
export const MAX_ASSIGNMENT_BYTES = 1 << 20;
/** MAX_CELL_FILE_BYTES is the largest file (a token, hosts) cell init accepts (cell-init.c MAX_FILE). */
export const MAX_CELL_FILE_BYTES = 64 * 1024;
/** PLATFORM_ENV_RESERVE_BYTES is kept in an assignment for the env the platform adds (PATH, CLEANROOM_*…). */
export const PLATFORM_ENV_RESERVE_BYTES = 4096;

/** assignmentBytes is the size cell init sees of a workload's command, env and cwd (without the platform's env). */
export function assignmentBytes(command: readonly string[], env: Readonly<Record<string, string>>, cwd: string): number {
  let n = 8 + Buffer.byteLength(cwd) + 1;
  for (const a of command) n += Buffer.byteLength(a) + 1;
  for (const [k, v] of Object.entries(env)) n += Buffer.byteLength(k) + Buffer.byteLength(v) + 2;
  return n;
}

/** DATA_SERVICE_NAME is the name cells use for the data service; it resolves to their gateway, which forwards to it. */
export const DATA_SERVICE_NAME = 'data.cleanroom.internal';

/** DeniedConnection is one egress attempt the policy denied (or, in dry-run, would have denied). */
export interface DeniedConnection {
  jobId: string | null;
  cellId: string;
  action: 'denied' | 'dry-run';
  destination: string;
  protocol: string;
  port: number | null;
  time: string;
}

/** Runtime names an OCI runtime a cell can run under. */
export type Runtime = 'runc' | 'runsc';

/** RUNTIMES lists every supported runtime. */
export const RUNTIMES: readonly Runtime[] = ['runc', 'runsc'];

/** TerminalReason is how a job ended. */
export type TerminalReason = 'succeeded' | 'failed' | 'timeout' | 'oom' | 'cancelled' | 'error';

/** JobEnd is the final report of a job. */
export interface JobEnd {
  reason: TerminalReason;
  exitCode: number | null;
  signal: number | null;
  message: string | null;
}

/** WipeReceipt records how a cell's volume was crypto-shredded; never any key material. */
export interface WipeReceipt {
  volumeId: string;
  cellId: string | null;
  keyIdentifier: string | null;
  keyStateAfterRemoval: string | null;
  loopDevices: readonly string[];
  startedAt: string;
  finishedAt: string;
  totalMs: number;
  steps: ReadonlyArray<{ step: string; at: string; ms: number; detail?: string }>;
}

/** VolumeCounts counts an agent's volumes by state. */
export interface VolumeCounts {
  warm: number;
  inUse: number;
  wiping: number;
  wiped: number;
  wipeFailed: number;
}

/** PoolStatus counts cells per pool key (runtime/class) and state. */
export type PoolStatus = Record<string, { target: number; warm: number; preparing: number; busy: number; lastError: string | null }>;

/** ControlToAgent are the messages the control plane sends. */
export type ControlToAgent =
  | { type: 'assign'; job: JobSpec; credentials: WorkloadCredentials }
  | { type: 'token.refresh'; jobId: string; credentials: WorkloadCredentials }
  | { type: 'cancel'; jobId: string }
  | { type: 'pool.get'; requestId: string }
  /** The control plane stored these spooled receipts: the agent may forget them. */
  | { type: 'receipts.stored'; volumeIds: string[] };

/** AgentToControl are the messages an agent sends. */
export type AgentToControl =
  /** liveJobIds run (or are starting) here; endedJobIds ended here and their final reports follow the hello. */
  | { type: 'hello'; agentId: string; liveJobIds: string[]; endedJobIds?: string[]; capacity?: number }
  | { type: 'job.started'; jobId: string; cellId: string; timings: Record<string, number> }
  | { type: 'job.output'; jobId: string; stream: 'stdout' | 'stderr'; data: string }
  | { type: 'job.ended'; jobId: string; end: JobEnd; timings: Record<string, number>; outputDroppedBytes?: number }
  /** spooled: the receipt of a volume shredded by reconcile, kept on disk until the control plane acknowledges it. */
  | { type: 'job.wiped'; jobId: string | null; receipt: WipeReceipt; timings?: Record<string, number>; spooled?: boolean }
  | { type: 'network.denied'; records: DeniedConnection[] }
  | { type: 'pool.status'; requestId: string | null; pool: PoolStatus; volumes: VolumeCounts };
