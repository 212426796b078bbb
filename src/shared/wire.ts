/**
 * The contract between the control plane and agents over the mutual-TLS channel: one zod schema per message, the
 * TypeScript types derived from them. Each end validates what it receives; every string, array and map is bounded.
 */
import { z } from 'zod';
import { parseCidr } from './net/ipv4.js';
import type { EgressPolicy } from './net/egress-policy.js';
import { DigestSchema as Digest, ImageManifestSchema } from './images/format.js';

/** AGENT_CERT_CN is the subject every agent certificate carries; other certificates of our CA are refused. */
export const AGENT_CERT_CN = 'cleanroom-agent';

/**
 * PROTOCOL_VERSION is the version of this contract; an agent names it in its hello and the control plane refuses any
 * other. 1: hellos without a version (messages unchecked); 2: schemas at both ends, the version, the welcome; 3: images
 * (image.prepare/prepared, image.remove/removed, the hello's prepared images, JobSpec.image).
 */
export const PROTOCOL_VERSION = 3;

/** CHANNEL_CLOSE lists the WebSocket close codes the control plane ends an agent's channel with (the reason says more). */
export const CHANNEL_CLOSE = {
  /** A message that is not JSON or does not match its schema. */
  badMessage: 4000,
  /** The agent's hello names another protocol version. */
  protocolMismatch: 4001,
  /** Messages out of order: something before the hello, or a second hello. */
  protocolViolation: 4002,
  /** The client certificate is not an agent certificate. */
  notAnAgent: 4003,
} as const;

/** MAX_CLOSE_REASON_BYTES is the most a WebSocket close reason can carry (a 125-byte control frame less the code). */
export const MAX_CLOSE_REASON_BYTES = 123;

/** closeReason cuts a close reason to MAX_CLOSE_REASON_BYTES of UTF-8 without splitting a character. */
export function closeReason(text: string): string {
  let out = text.slice(0, MAX_CLOSE_REASON_BYTES);
  while (Buffer.byteLength(out) > MAX_CLOSE_REASON_BYTES || /[\ud800-\udbff]$/.test(out)) out = out.slice(0, -1);
  return out;
}

/** MAX_OUTPUT_CHUNK_BYTES is the most output one job.output carries: one cell frame (MAX_FRAME_BYTES in agent/cells/frames.ts; a unit test keeps the two equal). */
export const MAX_OUTPUT_CHUNK_BYTES = 1 << 20;
/** MAX_AGENT_MESSAGE_BYTES bounds one message from an agent: the largest is a job.output (its chunk in base64) or a hello. */
export const MAX_AGENT_MESSAGE_BYTES = 2 * 1024 * 1024;
/** MAX_CONTROL_MESSAGE_BYTES bounds one message to an agent: an assignment of MAX_ASSIGNMENT_BYTES, JSON-escaped (≤ 6×). */
export const MAX_CONTROL_MESSAGE_BYTES = 8 * 1024 * 1024;
/** MAX_DENIED_PER_MESSAGE bounds the denied-connection records of one network.denied message. */
export const MAX_DENIED_PER_MESSAGE = 1000;
/** MAX_JOB_IDS bounds the job ids of a hello (live and ended, each). */
export const MAX_JOB_IDS = 10_000;
/** MAX_END_MESSAGE_CHARS bounds the message of a job's end; the agent cuts longer ones. */
export const MAX_END_MESSAGE_CHARS = 4096;
/** MAX_POOL_ERROR_CHARS bounds a pool entry's last error; the agent cuts longer ones. */
export const MAX_POOL_ERROR_CHARS = 1024;
/** MAX_IMAGE_LAYERS bounds the layers of one image (the control plane refuses more at import: image_invalid). */
export const MAX_IMAGE_LAYERS = 128;
/** MAX_IMAGES bounds the prepared images an agent names in its hello. */
export const MAX_IMAGES = 4096;

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

/** AGENT_ID_PATTERN is an agent's id: 6 hex digits, made at its first start (it names the agent's host objects). */
export const AGENT_ID_PATTERN = /^[0-9a-f]{6}$/;

// ---- Building blocks ----

const noNul = (s: string) => !s.includes('\0');
/** An id the platform made (job_…, ws_…, a cell's or volume's hex id, a UUID): never free text. */
const Id = z.string().min(1).max(64).regex(/^[A-Za-z0-9][A-Za-z0-9_.:-]*$/);
const Time = z.iso.datetime();
/** An error code (snake_case, as in shared/errors.ts and the image codes). */
const Code = z.string().regex(/^[a-z][a-z0-9_]{0,63}$/);
const Count = z.number().int().min(0).max(Number.MAX_SAFE_INTEGER);
const Base64 = z
  .string()
  .min(4)
  .max(4 * Math.ceil(MAX_OUTPUT_CHUNK_BYTES / 3))
  .refine((s) => s.length % 4 === 0 && /^[A-Za-z0-9+/]*={0,2}$/.test(s), 'must be base64');

/** Timings are named durations (ms) and flags: at most 64, lower-case names. */
const TimingsSchema = z
  .record(z.string().regex(/^[a-z][a-z0-9_]{0,63}$/), z.number().min(-1e12).max(1e12))
  .refine((t) => Object.keys(t).length <= 64, 'at most 64 timings');

/**
 * RuntimeSchema names an OCI runtime a cell can run under: runc and crun run the workload on the host kernel (same spec,
 * same confinement; crun is the C implementation, a fraction of runc's CPU per container), runsc under gVisor's.
 */
export const RuntimeSchema = z.enum(['runc', 'runsc', 'crun']);
/** Runtime names an OCI runtime a cell can run under. */
export type Runtime = z.infer<typeof RuntimeSchema>;
/** RUNTIMES lists every supported runtime. */
export const RUNTIMES: readonly Runtime[] = RuntimeSchema.options;

/** EgressPolicySchema is a normalised egress policy (as validateEgressPolicy makes it: canonical CIDRs, explicit protocol). */
const EgressPolicySchema = z.strictObject({
  allow: z
    .array(
      z.strictObject({
        cidr: z
          .string()
          .max(18)
          .refine((s) => s.includes('/') && parseCidr(s)?.canonical === true, 'must be a canonical IPv4 CIDR'),
        protocol: z.enum(['tcp', 'udp', 'icmp', 'any']),
        ports: z
          .strictObject({ from: z.number().int().min(1).max(65535), to: z.number().int().min(1).max(65535) })
          .refine((p) => p.from <= p.to, 'from must not exceed to')
          .optional(),
      }),
    )
    .max(256)
    .readonly(),
  dryRun: z.boolean(),
}) satisfies z.ZodType<EgressPolicy>;

/** WorkloadSpecSchema is what runs and within which limits: the resolved request, defaults applied. */
const WorkloadSpecSchema = z.strictObject({
  command: z.array(z.string().max(65536).refine(noNul, 'must not contain NUL bytes')).min(1).max(4096),
  env: z.record(z.string().regex(/^[A-Za-z_][A-Za-z0-9_]{0,255}$/), z.string().max(65536).refine(noNul, 'must not contain NUL bytes')),
  cwd: z.string().min(1).max(4096).startsWith('/').refine(noNul, 'must not contain NUL bytes'),
  cpu: z.number().positive().max(1024),
  memoryBytes: z.number().int().positive().max(Number.MAX_SAFE_INTEGER),
  timeoutSeconds: z.number().positive().max(1e9),
  diskBytes: z.number().int().positive().max(Number.MAX_SAFE_INTEGER),
  runtime: RuntimeSchema,
});
/** WorkloadSpec is what runs and within which limits. */
export type WorkloadSpec = z.infer<typeof WorkloadSpecSchema>;

/** ImageManifestSchema (src/shared/images/format.ts, Contract A) is an imported image as both ends use it. */
export { ImageManifestSchema, type ImageManifest } from './images/format.js';

/**
 * JobImageSchema is the image a job runs on: null is the host's /usr root (the behaviour before images). uid and gid
 * are set when the image's User is numeric; otherwise null, and the agent resolves the user it found at prepare time
 * (or the workload uid).
 */
const JobImageSchema = z
  .strictObject({
    digest: Digest,
    uid: z.number().int().min(0).max(65535).nullable(),
    gid: z.number().int().min(0).max(65535).nullable(),
  })
  .nullable();
/** JobImage is the image a job runs on (null: the host root). */
export type JobImage = z.infer<typeof JobImageSchema>;

/** ImageErrorSchema is why an agent could not prepare an image: a stable code (image_layer_invalid, image_too_large,
 *  image_digest_mismatch, image_blob_missing, …) and a message. */
const ImageErrorSchema = z.strictObject({ code: Code, message: z.string().max(MAX_END_MESSAGE_CHARS) });

/** JobSpecSchema is what an agent needs to run one job; it carries no API key and no tenant secret. */
export const JobSpecSchema = WorkloadSpecSchema
  .extend({
    jobId: Id,
    workspaceId: Id,
    /** The workspace's egress policy at the time the job was created (validated by the control plane). */
    egress: EgressPolicySchema,
    /** Output (stdout and stderr together) forwarded at most; the rest is dropped and counted. */
    outputLimitBytes: Count,
    /** The image the job's cell runs on; null (or absent, from protocol 2 code) is the host's /usr root. */
    image: JobImageSchema.default(null),
  })
  .refine((j) => assignmentBytes(j.command, j.env, j.cwd) <= MAX_ASSIGNMENT_BYTES - PLATFORM_ENV_RESERVE_BYTES, 'command, env and cwd exceed what a cell accepts');
/** JobSpec is what an agent needs to run one job. */
export type JobSpec = z.infer<typeof JobSpecSchema>;

/** WorkloadCredentialsSchema is what a workload gets to reach the data service; the agent places it in the cell's private tmpfs only. */
const WorkloadCredentialsSchema = z.strictObject({
  /** The workload's signed access token (a compact JWS), never logged. */
  token: z.string().max(MAX_CELL_FILE_BYTES).regex(/^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$/),
  /** When the token expires (ISO 8601). */
  expiresAt: Time,
});
/** WorkloadCredentials is a workload's token and its expiry. */
export type WorkloadCredentials = z.infer<typeof WorkloadCredentialsSchema>;

/** TerminalReasonSchema is how a job ended. */
const TerminalReasonSchema = z.enum(['succeeded', 'failed', 'timeout', 'oom', 'cancelled', 'error']);
/** TerminalReason is how a job ended. */
export type TerminalReason = z.infer<typeof TerminalReasonSchema>;

/** JobEnd is the final report of a job. */
const JobEndSchema = z.strictObject({
  reason: TerminalReasonSchema,
  exitCode: z.number().int().min(0).max(255).nullable(),
  signal: z.number().int().min(0).max(255).nullable(),
  message: z.string().max(MAX_END_MESSAGE_CHARS).nullable(),
});
/** JobEnd is the final report of a job. */
export type JobEnd = z.infer<typeof JobEndSchema>;

/** WipeReceiptSchema records how a cell's volume was crypto-shredded; never any key material. */
const WipeReceiptSchema = z.strictObject({
  volumeId: Id,
  cellId: Id.nullable(),
  keyIdentifier: z.string().max(128).regex(/^[0-9a-f]*$/).nullable(),
  keyStateAfterRemoval: z.enum(['absent', 'present', 'incompletely-removed']).nullable(),
  loopDevices: z.array(z.string().max(64).regex(/^\/dev\/loop\d+$/)).max(64).readonly(),
  startedAt: Time,
  finishedAt: Time,
  totalMs: z.number().min(0).max(1e12),
  steps: z
    .array(z.strictObject({ step: z.string().max(64), at: Time, ms: z.number().min(0).max(1e12), detail: z.string().max(4096).optional() }))
    .max(256)
    .readonly(),
});
/** WipeReceipt records how a cell's volume was crypto-shredded. */
export type WipeReceipt = z.infer<typeof WipeReceiptSchema>;

/** DeniedConnectionSchema is one egress attempt the policy denied (or, in dry-run, would have denied). */
const DeniedConnectionSchema = z.strictObject({
  jobId: Id.nullable(),
  cellId: Id,
  action: z.enum(['denied', 'dry-run']),
  destination: z.string().min(1).max(64),
  protocol: z.string().min(1).max(16),
  port: z.number().int().min(0).max(65535).nullable(),
  time: Time,
});
/** DeniedConnection is one egress attempt the policy denied. */
export type DeniedConnection = z.infer<typeof DeniedConnectionSchema>;

/** VolumeCounts counts an agent's volumes by state. */
const VolumeCountsSchema = z.strictObject({ warm: Count, inUse: Count, wiping: Count, wiped: Count, wipeFailed: Count });
/** VolumeCounts counts an agent's volumes by state. */
export type VolumeCounts = z.infer<typeof VolumeCountsSchema>;

/** PoolStatusSchema counts cells per pool key (runtime/class) and state. */
const PoolStatusSchema = z
  .record(
    // runtime/class on the host root; runtime/class@<the first 12 hex digits of the image's digest> on an image.
    z.string().regex(new RegExp(`^(${RUNTIMES.join('|')})/[a-z][a-z0-9-]{0,15}(@[0-9a-f]{12})?$`)),
    z.strictObject({ target: Count, warm: Count, preparing: Count, busy: Count, lastError: z.string().max(MAX_POOL_ERROR_CHARS).nullable() }),
  )
  .refine((p) => Object.keys(p).length <= 64, 'at most 64 pools');
/** PoolStatus counts cells per pool key and state. */
export type PoolStatus = z.infer<typeof PoolStatusSchema>;

// ---- Messages ----

/** HelloSchema is an agent's first message on every connection. */
export const HelloSchema = z.strictObject({
  type: z.literal('hello'),
  /** The agent's PROTOCOL_VERSION; a hello without one is protocol 1. */
  protocol: z.literal(PROTOCOL_VERSION),
  agentId: z.string().regex(AGENT_ID_PATTERN),
  /** Jobs that run (or are starting) here. */
  liveJobIds: z.array(Id).max(MAX_JOB_IDS),
  /** Jobs that ended here; their final reports follow the hello. */
  endedJobIds: z.array(Id).max(MAX_JOB_IDS),
  /** Jobs the agent runs at once (agent.maxRunningJobs); the control plane queues the rest. */
  capacity: z.number().int().min(1).max(1000),
  /** Manifest digests of the images this agent has prepared (unpacked and ready); the control plane sends image.prepare
   *  for ready images missing here. */
  images: z.array(Digest).max(MAX_IMAGES),
});

/** AgentHello is an agent's hello. */
export type AgentHello = z.infer<typeof HelloSchema>;

/** AgentToControlSchema are the messages an agent sends. */
export const AgentToControlSchema = z.discriminatedUnion('type', [
  HelloSchema,
  z.strictObject({ type: z.literal('job.started'), jobId: Id, cellId: Id, timings: TimingsSchema }),
  z.strictObject({ type: z.literal('job.output'), jobId: Id, stream: z.enum(['stdout', 'stderr']), data: Base64 }),
  z.strictObject({ type: z.literal('job.ended'), jobId: Id, end: JobEndSchema, timings: TimingsSchema, outputDroppedBytes: Count.optional() }),
  /** spooled: the receipt of a volume shredded by reconcile, kept on disk until the control plane acknowledges it. */
  z.strictObject({ type: z.literal('job.wiped'), jobId: Id.nullable(), receipt: WipeReceiptSchema, timings: TimingsSchema.optional(), spooled: z.boolean().optional() }),
  z.strictObject({ type: z.literal('network.denied'), records: z.array(DeniedConnectionSchema).max(MAX_DENIED_PER_MESSAGE) }),
  z.strictObject({ type: z.literal('pool.status'), requestId: Id.nullable(), pool: PoolStatusSchema, volumes: VolumeCountsSchema }),
  /** The answer to image.prepare: the image's layers are unpacked and its top layer built (error null), or why not. */
  z.strictObject({ type: z.literal('image.prepared'), digest: Digest, unpackedBytes: Count, error: ImageErrorSchema.nullable() }),
  /** The answer to image.remove: its warm cells are drained and the layers no other image uses are deleted. */
  z.strictObject({ type: z.literal('image.removed'), digest: Digest }),
]);
/** AgentToControl are the messages an agent sends. */
export type AgentToControl = z.infer<typeof AgentToControlSchema>;

/** ControlToAgentSchema are the messages the control plane sends. */
export const ControlToAgentSchema = z.discriminatedUnion('type', [
  /** The hello is accepted: the agent may replay what it kept. */
  z.strictObject({ type: z.literal('welcome'), protocol: z.literal(PROTOCOL_VERSION) }),
  z.strictObject({ type: z.literal('assign'), job: JobSpecSchema, credentials: WorkloadCredentialsSchema }),
  z.strictObject({ type: z.literal('token.refresh'), jobId: Id, credentials: WorkloadCredentialsSchema }),
  z.strictObject({ type: z.literal('cancel'), jobId: Id }),
  z.strictObject({ type: z.literal('pool.get'), requestId: Id }),
  /** The control plane stored these spooled receipts: the agent may forget them. */
  z.strictObject({ type: z.literal('receipts.stored'), volumeIds: z.array(Id).max(1000) }),
  /** Verify and unpack the image's layers (at most maxUnpackedBytes in all), build its top layer; answer image.prepared. */
  z.strictObject({ type: z.literal('image.prepare'), image: ImageManifestSchema, maxUnpackedBytes: Count }),
  /** Drain the image's warm cells and delete the unpacked layers no other prepared image uses; answer image.removed. */
  z.strictObject({ type: z.literal('image.remove'), digest: Digest }),
]);
/** ControlToAgent are the messages the control plane sends. */
export type ControlToAgent = z.infer<typeof ControlToAgentSchema>;

/** WireParse is a received message, checked: the message, or why it was refused (and the parsed JSON, if it was JSON). */
export type WireParse<T> = { ok: true; msg: T } | { ok: false; problem: string; value: unknown };

/** parseAgentMessage checks a raw message from an agent (never throws). */
export function parseAgentMessage(raw: string): WireParse<AgentToControl> {
  return parseWith(AgentToControlSchema, raw);
}

/** parseControlMessage checks a raw message from the control plane (never throws). */
export function parseControlMessage(raw: string): WireParse<ControlToAgent> {
  return parseWith(ControlToAgentSchema, raw);
}

/**
 * helloProtocol reads the protocol version a would-be hello names, whatever else it holds (another version's hello has
 * another shape): 1 for a hello without one, 'unreadable' for a version that is not a positive integer, null if the
 * value is no hello at all.
 */
export function helloProtocol(value: unknown): number | 'unreadable' | null {
  if (typeof value !== 'object' || value === null || (value as { type?: unknown }).type !== 'hello') return null;
  if (!Object.hasOwn(value, 'protocol')) return 1;
  const p = (value as { protocol: unknown }).protocol;
  return typeof p === 'number' && Number.isSafeInteger(p) && p > 0 ? p : 'unreadable';
}

/** describeProblem renders the first schema issue briefly, without the offending value (it may be huge or secret). */
export function describeProblem(error: z.ZodError): string {
  const issue = error.issues[0];
  if (!issue) return 'invalid message';
  const path = issue.path.slice(0, 6).map((p) => String(p).slice(0, 40)).join('.');
  return `${path || 'message'}: ${issue.message.slice(0, 120)}`;
}

function parseWith<T>(schema: z.ZodType<T>, raw: string): WireParse<T> {
  let value: unknown;
  try {
    value = JSON.parse(raw);
  } catch {
    return { ok: false, problem: 'not JSON', value: undefined };
  }
  try {
    const r = schema.safeParse(value);
    return r.success ? { ok: true, msg: r.data } : { ok: false, problem: describeProblem(r.error), value };
  } catch (e) {
    // safeParse reports problems as issues; this guards against the unforeseen (a stack overflow, say).
    return { ok: false, problem: `unreadable message (${(e as Error).name})`, value };
  }
}
