/** The JSON shapes the API returns, as zod schemas (documented in OpenAPI) plus mappers from the model. */
import { z } from 'zod';
import { RuntimeSchema } from '../../shared/wire.js';
import type { EgressPolicy } from '../../shared/net/egress-policy.js';
import { AUDIT_EVENT_TYPES } from '../audit/chain.js';
import { API_KEY_ROLES, IMAGE_STATES, TERMINAL_STATUSES, type ApiKeyRecord, type DeniedConnectionRecord, type ImageRecord, type Job, type ObjectMeta, type SandboxEndRequest, type Workspace } from '../model.js';

/** EgressPolicyView is a policy as the API shows it: normalised, in the same shape PUT accepts, so it can be edited and sent back. */
export const EgressPolicyView = z.object({
  allow: z.array(
    z.object({
      cidr: z.string().describe('canonical IPv4 CIDR'),
      protocol: z.enum(['tcp', 'udp', 'icmp', 'any']),
      port: z.union([z.number(), z.string()]).optional().describe('a port, or a range "from-to"; only for tcp and udp'),
    }),
  ),
  dryRun: z.boolean().describe('allow everything but record what the allow-list would have denied'),
});

/** egressPolicyView maps a normalised policy to its API shape. */
export function egressPolicyView(p: EgressPolicy): z.infer<typeof EgressPolicyView> {
  return {
    allow: p.allow.map((r) => ({ cidr: r.cidr, protocol: r.protocol, ...(r.ports ? { port: r.ports.from === r.ports.to ? r.ports.from : `${r.ports.from}-${r.ports.to}` } : {}) })),
    dryRun: p.dryRun,
  };
}

/** JobView is a job as the API shows it. */
export const JobView = z.object({
  id: z.string(),
  workspaceId: z.string(),
  status: z.enum(['queued', 'assigned', 'running', 'succeeded', 'failed', 'timeout', 'oom', 'cancelled', 'error']),
  command: z.array(z.string()),
  cwd: z.string(),
  cpu: z.number(),
  memoryMiB: z.number(),
  timeoutSeconds: z.number(),
  runtime: RuntimeSchema,
  createdAt: z.string(),
  startedAt: z.string().nullable(),
  endedAt: z.string().nullable(),
  exitCode: z.number().nullable().describe('set when the workload exited by itself'),
  signal: z.number().nullable().describe('set when the workload was killed by a signal'),
  message: z.string().nullable().describe('why the job ended, for timeout, oom, cancelled and error'),
  cellId: z.string().nullable(),
  diskMiB: z.number(),
  timings: z.record(z.string(), z.number()).describe('where the time went, in ms'),
  wipe: z
    .object({
      volumeId: z.string(),
      cellId: z.string().nullable(),
      keyIdentifier: z.string().nullable().describe('identifies the key; never the key itself'),
      keyStateAfterRemoval: z.string().nullable(),
      startedAt: z.string(),
      finishedAt: z.string(),
      totalMs: z.number(),
      steps: z.array(z.object({ step: z.string(), at: z.string(), ms: z.number(), detail: z.string().optional() })),
    })
    .nullable()
    .describe("receipt of the crypto-shred of the job's volume, once done"),
  egress: EgressPolicyView.describe("the workspace's egress policy when the job was created; its cell runs under it"),
  outputDroppedBytes: z.number().describe('output dropped past the output limit (limits.maxOutputMiB); 0 when the output is complete'),
  expiredAt: z.string().nullable().describe('when retention ended: output deleted and command, env, cwd and message crypto-shredded'),
  image: z.string().nullable().describe('the image reference the job ran on, as named (or the default image); null: the host root'),
  imageDigest: z.string().nullable().describe("the image's manifest digest"),
});

/** jobView maps a job record to its API shape (env values are never echoed back). */
export function jobView(j: Job): z.infer<typeof JobView> {
  return {
    id: j.id,
    workspaceId: j.workspaceId,
    status: j.status,
    command: j.command,
    cwd: j.cwd,
    cpu: j.cpu,
    memoryMiB: j.memoryBytes / 1024 / 1024,
    timeoutSeconds: j.timeoutSeconds,
    runtime: j.runtime,
    createdAt: j.createdAt,
    startedAt: j.startedAt,
    endedAt: j.endedAt,
    exitCode: j.exitCode,
    signal: j.signal,
    message: j.message,
    cellId: j.cellId,
    diskMiB: j.diskBytes / 1024 / 1024,
    timings: j.timings,
    egress: egressPolicyView(j.egress),
    outputDroppedBytes: j.outputDroppedBytes ?? 0,
    expiredAt: j.expiredAt ?? null,
    image: j.imageRef ?? null,
    imageDigest: j.image?.digest ?? null,
    wipe: j.wipe ? { volumeId: j.wipe.volumeId, cellId: j.wipe.cellId, keyIdentifier: j.wipe.keyIdentifier, keyStateAfterRemoval: j.wipe.keyStateAfterRemoval, startedAt: j.wipe.startedAt, finishedAt: j.wipe.finishedAt, totalMs: j.wipe.totalMs, steps: [...j.wipe.steps] } : null,
  };
}

/** WipeReceiptView is the receipt of a crypto-shred, as on a job and a sandbox. */
const WipeReceiptView = JobView.shape.wipe;

/** SANDBOX_END_REASONS say why a sandbox ended. */
export const SANDBOX_END_REASONS = ['deleted', 'timeout', 'idle', 'oom', 'error', 'exited'] as const;

/** SandboxView is a sandbox as the API shows it (its env is never echoed back). */
export const SandboxView = z.object({
  id: z.string(),
  workspaceId: z.string(),
  state: z.enum(['starting', 'running', 'ended']).describe('starting: waiting for a cell; running: processes and files may be used; ended: its cell is gone'),
  endReason: z.enum(SANDBOX_END_REASONS).nullable().describe('why it ended: deleted, timeout, idle (idleTimeoutSeconds without activity), oom, error (e.g. its agent was lost), exited (its supervisor stopped)'),
  message: z.string().nullable(),
  metadata: z.record(z.string(), z.string()),
  runtime: RuntimeSchema,
  cpu: z.number(),
  memoryMiB: z.number(),
  diskMiB: z.number(),
  timeoutSeconds: z.number().describe('life from ready (or from the last timeout change)'),
  idleTimeoutSeconds: z.number().describe('0: never idle'),
  createdAt: z.string(),
  startedAt: z.string().nullable().describe('when it became ready'),
  endsAt: z.string().nullable().describe('when its deadline falls, while it runs'),
  endedAt: z.string().nullable(),
  cellId: z.string().nullable(),
  timings: z.record(z.string(), z.number()),
  egress: EgressPolicyView,
  wipe: WipeReceiptView,
});

/** SandboxViewShape is a sandbox as the API returns it. */
export type SandboxViewShape = z.infer<typeof SandboxView>;

/** sandboxView maps a sandbox's record to its API shape. */
export function sandboxView(j: Job): SandboxViewShape {
  const sb = j.sandbox ?? { metadata: {}, idleTimeoutSeconds: 0, endsAt: null, endRequested: null };
  const view = jobView(j);
  const ended = TERMINAL_STATUSES.includes(j.status);
  return {
    id: j.id,
    workspaceId: j.workspaceId,
    state: ended ? 'ended' : j.status === 'running' ? 'running' : 'starting',
    endReason: ended ? endReasonOf(j.status, sb.endRequested) : null,
    message: j.message,
    metadata: sb.metadata,
    runtime: j.runtime,
    cpu: j.cpu,
    memoryMiB: view.memoryMiB,
    diskMiB: view.diskMiB,
    timeoutSeconds: j.timeoutSeconds,
    idleTimeoutSeconds: sb.idleTimeoutSeconds,
    createdAt: j.createdAt,
    startedAt: j.startedAt,
    endsAt: ended ? null : sb.endsAt,
    endedAt: j.endedAt,
    cellId: j.cellId,
    timings: j.timings,
    egress: view.egress,
    wipe: view.wipe,
  };
}

function endReasonOf(status: Job['status'], requested: SandboxEndRequest | null): (typeof SANDBOX_END_REASONS)[number] {
  if (requested !== null && status === 'cancelled') return requested;
  switch (status) {
    case 'timeout':
    case 'oom':
    case 'error':
      return status;
    case 'cancelled':
      return 'deleted';
    default:
      return 'exited';
  }
}

/** WorkspaceView is a workspace as the API shows it. */
export const WorkspaceView = z.object({
  id: z.string(),
  name: z.string(),
  createdAt: z.string(),
  maxCpu: z.number(),
  maxMemoryMiB: z.number(),
  maxTimeoutSeconds: z.number(),
  maxDiskMiB: z.number(),
});

/** workspaceView maps a workspace record to its API shape. */
export function workspaceView(w: Workspace): z.infer<typeof WorkspaceView> {
  return { id: w.id, name: w.name, createdAt: w.createdAt, maxCpu: w.maxCpu, maxMemoryMiB: w.maxMemoryBytes / 1024 / 1024, maxTimeoutSeconds: w.maxTimeoutSeconds, maxDiskMiB: w.maxDiskBytes / 1024 / 1024 };
}

/** ApiKeyRoleView documents the roles a key can have. */
export const ApiKeyRoleView = z
  .enum(API_KEY_ROLES)
  .describe("platform-admin: every workspace, every key, all audit events, the chain check; workspace-admin: its own workspace's keys and audit events; member: its workspace's jobs, data, network policy and audit events");

/** ApiKeyView is a key as the API lists it: never its secret or the secret's hash. */
export const ApiKeyView = z.object({
  id: z.string(),
  workspaceId: z.string(),
  name: z.string(),
  role: ApiKeyRoleView,
  createdAt: z.string(),
  revokedAt: z.string().nullable(),
});

/** apiKeyView maps a stored key to its API shape. */
export function apiKeyView(k: ApiKeyRecord): z.infer<typeof ApiKeyView> {
  return { id: k.id, workspaceId: k.workspaceId, name: k.name, role: k.role, createdAt: k.createdAt, revokedAt: k.revokedAt };
}

/** OutputChunkView is one piece of output; data is base64 because output may not be UTF-8. */
export const OutputChunkView = z.object({ seq: z.number(), stream: z.enum(['stdout', 'stderr']), data: z.string().describe('base64') });

/** DeniedConnectionView is one egress attempt the policy denied (or, in dry-run, would have denied). */
export const DeniedConnectionView = z.object({
  jobId: z.string(),
  cellId: z.string(),
  action: z.enum(['denied', 'dry-run']).describe('dry-run: allowed, but the allow-list would have denied it'),
  destination: z.string().describe('destination IPv4 address'),
  protocol: z.string(),
  port: z.number().nullable().describe('destination port, for tcp and udp'),
  time: z.string(),
});

/** deniedConnectionView maps a stored record to its API shape. */
export function deniedConnectionView(r: DeniedConnectionRecord): z.infer<typeof DeniedConnectionView> {
  return { jobId: r.jobId, cellId: r.cellId, action: r.action, destination: r.destination, protocol: r.protocol, port: r.port, time: r.time };
}

/** ObjectView is a stored object's record as the API shows it (never its keys or file name). */
export const ObjectView = z.object({ key: z.string(), size: z.number(), sha256: z.string().describe('SHA-256 of the plaintext'), createdAt: z.string() });

/** objectView maps an object's record to its API shape. */
export function objectView(m: ObjectMeta): z.infer<typeof ObjectView> {
  return { key: m.key, size: m.size, sha256: m.sha256, createdAt: m.createdAt };
}

/** AuditEventView is one chained audit event, with the hashes a reader can re-check. */
export const AuditEventView = z.object({
  seq: z.number(),
  time: z.string(),
  type: z.enum(AUDIT_EVENT_TYPES),
  actor: z.string(),
  workspaceId: z.string().nullable(),
  subject: z.string().nullable(),
  details: z.record(z.string(), z.unknown()),
  prevHash: z.string(),
  hash: z.string(),
});

/** ImageView is an image as the API shows it (never credentials). */
export const ImageView = z.object({
  id: z.string().describe('NAME:TAG, the id to use in GET/DELETE /v1/images/:id (or use `digest`)'),
  name: z.string(),
  tag: z.string(),
  digest: z.string().nullable().describe('manifest digest, once the blobs are in'),
  public: z.boolean().describe('published by a platform admin; every workspace may use it'),
  workspaceId: z.string().nullable(),
  state: z.enum(IMAGE_STATES).describe('pulling (bytesDone/bytesTotal), unpacking (agents preparing it), ready, failed (error)'),
  source: z.string(),
  bytesDone: z.number(),
  bytesTotal: z.number().nullable(),
  bytes: z.number().describe("bytes of the image's blobs in the store (compressed layers, config, manifest)"),
  unpackedBytes: z.number().nullable(),
  layers: z.number(),
  config: z
    .object({ env: z.array(z.string()), workingDir: z.string(), entrypoint: z.array(z.string()).nullable(), cmd: z.array(z.string()).nullable(), user: z.string() })
    .nullable(),
  error: z.object({ code: z.string(), message: z.string() }).nullable().describe('why the import failed: a stable code (image_*) and a message'),
  createdAt: z.string(),
  updatedAt: z.string(),
});

/** imageView maps an image record to its API shape. */
export function imageView(r: ImageRecord): z.infer<typeof ImageView> {
  return {
    id: `${r.name}:${r.tag}`,
    name: r.name,
    tag: r.tag,
    digest: r.digest,
    public: r.workspaceId === null,
    workspaceId: r.workspaceId,
    state: r.state,
    source: r.source,
    bytesDone: r.bytesDone,
    bytesTotal: r.bytesTotal,
    bytes: r.bytes,
    unpackedBytes: r.unpackedBytes,
    layers: r.manifest?.layers.length ?? 0,
    config: r.manifest ? { ...r.manifest.config } : null,
    error: r.error,
    createdAt: r.createdAt,
    updatedAt: r.updatedAt,
  };
}
