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
 * (image.prepare/prepared, image.remove/removed, the hello's prepared images, JobSpec.image) and sandboxes
 * (JobSpec.mode, sandbox.timeout, proc.*, file.*: Contract C, see "Sandboxes" below); 4: the agent's load (the hello's
 * `load`, agent.load reports: Contract W), which placement reads; later, additively within 4: the load's `offers`
 * (runtimes and size classes; a load without them is taken to offer everything, as before), so placement sends a job
 * only to an agent that can run it. A control plane of this build accepts agents that leave `offers` out; an agent of
 * this build needs a control plane that knows the field (upgrade control planes first). 5: job.report, one message for
 * the reports of a job that are ready at once (its start, output, end and wipe receipt, and the agent's load after
 * them): a short job costs the channel and the control plane's store one pass instead of four or five.
 *
 * Adjacent builds: a control plane accepts hellos of MIN_PROTOCOL_VERSION up to PROTOCOL_VERSION and welcomes an agent
 * with the agent's own version (it then hears that version's messages only); an agent newer than its control plane is
 * refused with CHANNEL_CLOSE.protocolMismatch and a reason that says to upgrade the control plane.
 */
export const PROTOCOL_VERSION = 5;
/** MIN_PROTOCOL_VERSION is the oldest agent protocol this control plane still serves (4: the separate job reports). */
export const MIN_PROTOCOL_VERSION = 4;
/** ProtocolVersionSchema is a version this build speaks. */
const ProtocolVersionSchema = z.number().int().min(MIN_PROTOCOL_VERSION).max(PROTOCOL_VERSION);

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
  /** An operator removed this agent (`cleanroom agents remove`): it is refused until re-admitted (`agents undrain`). */
  agentRemoved: 4004,
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
/** MAX_LOAD_POOLS bounds the warm-pool entries of one AgentLoad. */
export const MAX_LOAD_POOLS = 256;
/** LOAD_REPORT_MIN_INTERVAL_MS: an agent coalesces load changes into at most one agent.load per this interval. */
export const LOAD_REPORT_MIN_INTERVAL_MS = 200;
/** LOAD_REPORT_INTERVAL_MS: an agent reports its load at least this often, changed or not. */
export const LOAD_REPORT_INTERVAL_MS = 5000;

/**
 * MAX_ASSIGNMENT_BYTES is the largest assignment cell init accepts: its command, env and cwd, each NUL-terminated, plus
 * 8 bytes of counts (native/cell-init/cell-init.h MAX_ASSIGNMENT; a unit test keeps the two equal).
 */
export const MAX_ASSIGNMENT_BYTES = 1 << 20;
/** MAX_CELL_FILE_BYTES is the largest file (a token, hosts) cell init accepts (cell-init.h MAX_FILE). */
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
  /** The workload's argv: at least one element for a job, empty for a sandbox (its processes come with proc.start). */
  command: z.array(z.string().max(65536).refine(noNul, 'must not contain NUL bytes')).max(4096),
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
    /**
     * 'job' runs `command` once and ends with it; 'sandbox' keeps the cell up with its supervisor serving proc.* and
     * file.* until cancel or its deadline (timeoutSeconds from job.started, reset by sandbox.timeout). Default 'job'.
     */
    mode: z.enum(['job', 'sandbox']).default('job'),
  })
  .refine((j) => (j.mode === 'job' ? j.command.length > 0 : j.command.length === 0), 'a job needs a command; a sandbox takes none')
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

/** SizeClassNameSchema is a size class's name (agent.classes[].name in the config). */
const SizeClassNameSchema = z.string().regex(/^[a-z][a-z0-9-]{0,15}$/);

/** MAX_OFFERED_CLASSES bounds the size classes an agent offers. */
export const MAX_OFFERED_CLASSES = 64;

/**
 * AgentOffersSchema is what an agent can run: the runtimes its host runs (agent.runtimes less those the host cannot run,
 * see `cleanroom doctor`) and its size classes (a job goes to an agent with a class that fits its cpu, memory and disk;
 * the agent takes the smallest that fits). Fixed for the agent process's life.
 */
export const AgentOffersSchema = z.strictObject({
  runtimes: z.array(RuntimeSchema).max(RuntimeSchema.options.length),
  classes: z
    .array(z.strictObject({ name: SizeClassNameSchema, cpu: z.number().positive().max(1024), memoryBytes: Count, diskBytes: Count }))
    .min(1)
    .max(MAX_OFFERED_CLASSES),
});
/** AgentOffers is what an agent can run (runtimes, size classes). */
export type AgentOffers = z.infer<typeof AgentOffersSchema>;

/**
 * AgentLoadSchema is what placement needs to know of an agent (Contract W): the jobs it runs and may run, the cells it is
 * preparing, and its warm (ready, unassigned) cells per (image digest or null for the host root, runtime, size class);
 * and what it offers (carried with the load so that one record, in a replica's memory or the store's agent row, holds
 * all placement reads). `offers` absent: an agent from before offers were reported, taken to offer everything.
 */
export const AgentLoadSchema = z.strictObject({
  running: Count,
  capacity: z.number().int().min(1).max(1000),
  preparing: Count,
  warm: z
    .array(z.strictObject({ image: Digest.nullable(), runtime: RuntimeSchema, sizeClass: SizeClassNameSchema, cells: Count }))
    .max(MAX_LOAD_POOLS),
  offers: AgentOffersSchema.optional(),
});
/** AgentLoad is an agent's load as placement reads it. */
export type AgentLoad = z.infer<typeof AgentLoadSchema>;

/** PoolStatusSchema counts cells per pool key (runtime/class) and state. */
const PoolStatusSchema = z
  .record(
    // runtime/class on the host root; runtime/class@<the first 12 hex digits of the image's digest> on an image.
    z.string().regex(new RegExp(`^(${RUNTIMES.join('|')})/[a-z][a-z0-9-]{0,15}(@[0-9a-f]{12})?$`)),
    z.strictObject({
      target: Count,
      warm: Count,
      preparing: Count,
      busy: Count,
      lastError: z.string().max(MAX_POOL_ERROR_CHARS).nullable(),
      /** The pool's bounds and why its target is what it is (demand-sized between min and max). */
      min: Count.optional(),
      max: Count.optional(),
      reason: z.string().max(200).optional(),
    }),
  )
  .refine((p) => Object.keys(p).length <= 64, 'at most 64 pools');
/** PoolStatus counts cells per pool key and state. */
export type PoolStatus = z.infer<typeof PoolStatusSchema>;

// ---- Sandboxes (Contract C) ----
//
// A sandbox is a cell assigned with `job.mode: 'sandbox'`: the same assign, cancel, token.refresh, job.ended and
// job.wiped as a job (its id is a job id here). The agent answers job.started once the in-cell supervisor is ready to
// run processes. Then the control plane drives it with proc.* and file.* messages, all keyed by jobId:
//
// Processes. proc.start runs an argv inside the cell as the workload user (pipes, or a PTY of cols × rows); the agent
// answers proc.started or proc.start.failed. A process's output (stdout and stderr, or the PTY) is ONE byte sequence:
// `seq` is the byte offset of a chunk's first byte in it (stdout and stderr interleave in the order the supervisor read
// them; each chunk says which stream it came from). The agent keeps the last PROC_OUTPUT_RING_BYTES of each process, so
// proc.attach { streamId, fromSeq } resumes a client (or a restarted control plane) from any retained offset; a chunk
// whose seq is above the asked-for offset means the bytes in between were dropped from the ring. A stream is one
// attachment: the agent sends at most PROC_STREAM_WINDOW_BYTES past the stream's last proc.ack (the offset the client
// has consumed to, exclusive); when the slowest attached stream lags a whole ring behind, the supervisor stops reading
// that process's pipe and the process blocks in write() (backpressure; nothing grows). A process with no stream
// attached never blocks: its oldest output leaves the ring. Exited processes keep their output within 16 MiB per
// sandbox (then the oldest exited lose theirs: proc.listed shows firstSeq = nextSeq). proc.start may name a `streamId` to attach from seq 0 at
// once. proc.exited carries `outputSeq`, the end offset of all output: a client has everything once it has consumed
// up to it (it is sent after the last proc.output the supervisor read; on a lagging stream the output is still coming).
// Stdin: proc.stdin chunks go to the process in order; null closes it. The agent answers proc.stdin.ack { seq } (bytes
// the process's stdin has taken); the sender keeps at most PROC_STDIN_WINDOW_BYTES un-acked (more is refused with
// proc.error window_exceeded). Signals go to the process's group (each process leads its own session). A process past
// its timeoutMs is killed (SIGKILL to its group) and reported with timedOut. Errors on an existing request (unknown
// process, stdin after close, …) come back as proc.error.
//
// Files. file.op runs one operation inside the cell as the workload user, resolving the path in the cell's own mount
// namespace (a symlink the workload planted resolves there, with the workload's rights, never on the host).
// - stat, list (entries with their stat, at most MAX_LIST_ENTRIES, then truncated), mkdir (with parents, like mkdir -p;
//   an existing directory is fine), remove (a file, an empty directory, or anything with recursive), rename (path → to):
//   answered by one file.result.
// - read: the agent sends file.data { seq: offset, data } chunks, at most FILE_WINDOW_BYTES past the reader's last
//   file.ack { seq }, then file.data { data: null } at the end, then file.result { ok, bytes }.
// - write (creates or truncates; mode default 0644): the writer sends file.data chunks (seq = offset), at most
//   FILE_WINDOW_BYTES past the agent's last file.ack { seq }, then file.data { data: null }; the agent answers
//   file.result { ok, bytes } once the file is closed. A failure (no_space…) is answered at once with file.result
//   { ok: false }; later file.data for that opId is ignored.
// At most MAX_FILE_OPS_PER_SANDBOX operations run at once per sandbox (more: too_many_operations).
//
// Reconnects. Whenever the agent's channel is welcomed again (a network blip or a restarted control plane), every
// attached stream rewinds to its last proc.ack and sends again from there (so nothing un-acked is lost; a client may
// see a chunk twice, with the same seq); a stream that is neither acked nor re-attached (same streamId) within 30 s
// is dropped, so that a stream of a control plane that forgot it never holds its process back. File operations in
// flight cannot be replayed: they are cancelled and answered file.result { ok: false, code: 'io_error' }.
// A file.op `mode` of 0 (or none) means the default (0644 for a write, 0755 for mkdir).

/** PROC_OUTPUT_RING_BYTES is how much recent output the agent keeps per process (for attach from a seq). */
export const PROC_OUTPUT_RING_BYTES = 1 << 20;
/** PROC_STREAM_WINDOW_BYTES is the most proc.output an attached stream receives past its last proc.ack. */
export const PROC_STREAM_WINDOW_BYTES = 256 * 1024;
/** PROC_STDIN_WINDOW_BYTES is the most stdin a sender may have in flight past the last proc.stdin.ack. */
export const PROC_STDIN_WINDOW_BYTES = 256 * 1024;
/** FILE_WINDOW_BYTES is the most file data in flight past the receiver's last file.ack, each way. */
export const FILE_WINDOW_BYTES = 256 * 1024;
/** MAX_SANDBOX_CHUNK_BYTES bounds the data of one proc.stdin, proc.output or file.data. */
export const MAX_SANDBOX_CHUNK_BYTES = 256 * 1024;
/** MAX_PROCS_PER_SANDBOX bounds the processes a sandbox runs at once (the supervisor's table). */
export const MAX_PROCS_PER_SANDBOX = 64;
/** MAX_PROCS_KEPT bounds the processes (running and ended) the agent remembers per sandbox, for proc.list and attach. */
export const MAX_PROCS_KEPT = 256;
/** MAX_STREAMS_PER_SANDBOX bounds the attached streams of one sandbox. */
export const MAX_STREAMS_PER_SANDBOX = 256;
/** MAX_FILE_OPS_PER_SANDBOX bounds the file operations running at once in one sandbox. */
export const MAX_FILE_OPS_PER_SANDBOX = 16;
/** MAX_LIST_ENTRIES bounds the entries of one list answer (then `truncated`). */
export const MAX_LIST_ENTRIES = 2048;
/** MAX_PROC_TIMEOUT_MS bounds a process's own timeout (24 h; the sandbox's deadline ends it anyway). */
export const MAX_PROC_TIMEOUT_MS = 24 * 3600 * 1000;
/** MAX_SANDBOX_PATH_BYTES bounds a path in a file operation or a process's cwd. */
export const MAX_SANDBOX_PATH_BYTES = 4096;

const Seq = Count;
const SandboxPath = z
  .string()
  .min(1)
  .max(MAX_SANDBOX_PATH_BYTES)
  .startsWith('/')
  .refine(noNul, 'must not contain NUL bytes')
  .refine((s) => Buffer.byteLength(s) <= MAX_SANDBOX_PATH_BYTES, `at most ${MAX_SANDBOX_PATH_BYTES} bytes`);
const ChunkBase64 = Base64.refine((s) => s.length <= 4 * Math.ceil(MAX_SANDBOX_CHUNK_BYTES / 3), `at most ${MAX_SANDBOX_CHUNK_BYTES} bytes`);
const TermSize = z.number().int().min(1).max(1000);
const Signal = z.number().int().min(1).max(64);

/** ProcStartSchema asks the sandbox's supervisor to run a process. */
const ProcStartSchema = z
  .strictObject({
    type: z.literal('proc.start'),
    jobId: Id,
    procId: Id,
    argv: z.array(z.string().max(65536).refine(noNul, 'must not contain NUL bytes')).min(1).max(4096),
    /** Added to the sandbox's env (the JobSpec's) and the platform's. */
    env: z.record(z.string().regex(/^[A-Za-z_][A-Za-z0-9_]{0,255}$/), z.string().max(65536).refine(noNul, 'must not contain NUL bytes')),
    /** Created (with parents) if missing, as for a job. */
    cwd: SandboxPath,
    timeoutMs: z.number().int().min(1).max(MAX_PROC_TIMEOUT_MS).nullable(),
    /** A PTY of this size (stdout and stderr merge into stream 'pty'), or pipes. */
    pty: z.strictObject({ cols: TermSize, rows: TermSize }).nullable(),
    /** Whether proc.stdin will feed the process; false gives it /dev/null (a PTY always takes input). */
    stdin: z.boolean(),
    /** Attach this stream from seq 0 at once (as proc.attach would), so no output waits for a round trip. */
    streamId: Id.nullable().optional(),
  })
  .refine((p) => assignmentBytes(p.argv, p.env, p.cwd) <= MAX_ASSIGNMENT_BYTES - PLATFORM_ENV_RESERVE_BYTES, 'argv, env and cwd exceed what a cell accepts');

/** ProcErrorCodeSchema names why a process request failed (stable snake_case). */
const ProcErrorCodeSchema = z.enum([
  'sandbox_not_running', // no running sandbox with that jobId on this agent
  'exists', // the procId (or streamId) is taken
  'not_found', // no such process (or stream)
  'not_running', // the process has exited
  'command_not_found',
  'permission_denied',
  'invalid_cwd',
  'too_many_processes', // MAX_PROCS_PER_SANDBOX
  'too_many_streams', // MAX_STREAMS_PER_SANDBOX
  'stdin_closed', // stdin after close, to a process started without stdin, or one whose stdin the process closed
  'window_exceeded', // more stdin in flight than PROC_STDIN_WINDOW_BYTES
  'start_failed', // anything else; the message says what
]);
/** ProcErrorCode names why a process request failed. */
export type ProcErrorCode = z.infer<typeof ProcErrorCodeSchema>;

/** FileErrorCodeSchema names why a file operation failed (stable snake_case; errno-based inside the cell). */
const FileErrorCodeSchema = z.enum([
  'not_found', // ENOENT
  'exists', // EEXIST
  'not_a_directory', // ENOTDIR
  'is_a_directory', // EISDIR
  'permission_denied', // EACCES, EPERM, EROFS
  'no_space', // ENOSPC, EDQUOT: the sandbox's volume is full
  'invalid_path', // ELOOP, ENAMETOOLONG, EINVAL, EXDEV, not a regular file for read/write
  'not_empty', // ENOTEMPTY: remove of a non-empty directory without recursive
  'io_error', // EIO and anything else; the message carries the errno text
  'too_many_operations', // MAX_FILE_OPS_PER_SANDBOX
  'window_exceeded', // file.data past FILE_WINDOW_BYTES
  'exists_op', // the opId is taken
  'sandbox_not_running',
]);
/** FileErrorCode names why a file operation failed. */
export type FileErrorCode = z.infer<typeof FileErrorCodeSchema>;

/** FileStatSchema is one file's stat, as the workload sees it (lstat: a symlink is reported as one). */
const FileStatSchema = z.strictObject({
  name: z.string().max(1024),
  type: z.enum(['file', 'directory', 'symlink', 'other']),
  size: Count,
  /** Permission bits (with setuid/setgid/sticky). */
  mode: z.number().int().min(0).max(0o7777),
  mtimeMs: z.number().min(0).max(1e15),
});
/** FileStat is one file's stat inside a sandbox. */
export type FileStat = z.infer<typeof FileStatSchema>;

/** ProcInfoSchema is one entry of proc.listed. */
const ProcInfoSchema = z.strictObject({
  procId: Id,
  pid: z.number().int().min(0).max(2 ** 31).nullable(),
  /** The first 16 arguments, each cut to 256 characters. */
  argv: z.array(z.string().max(256)).max(16),
  pty: z.boolean(),
  running: z.boolean(),
  exitCode: z.number().int().min(0).max(255).nullable(),
  signal: z.number().int().min(0).max(255).nullable(),
  timedOut: z.boolean(),
  startedAt: Time,
  /** The oldest retained output offset and the end of the output so far. */
  firstSeq: Seq,
  nextSeq: Seq,
});
/** ProcInfo is one process of a sandbox, for proc.listed. */
export type ProcInfo = z.infer<typeof ProcInfoSchema>;

/** SandboxToAgent are the sandbox messages the control plane sends (part of ControlToAgentSchema). */
const SandboxToAgentMessages = [
  /** Reset the sandbox's deadline to timeoutSeconds from now. */
  z.strictObject({ type: z.literal('sandbox.timeout'), jobId: Id, timeoutSeconds: z.number().positive().max(1e9) }),
  ProcStartSchema,
  z.strictObject({ type: z.literal('proc.stdin'), jobId: Id, procId: Id, data: ChunkBase64.nullable() }),
  z.strictObject({ type: z.literal('proc.signal'), jobId: Id, procId: Id, signal: Signal }),
  z.strictObject({ type: z.literal('proc.resize'), jobId: Id, procId: Id, cols: TermSize, rows: TermSize }),
  z.strictObject({ type: z.literal('proc.attach'), jobId: Id, procId: Id, streamId: Id, fromSeq: Seq }),
  z.strictObject({ type: z.literal('proc.detach'), jobId: Id, streamId: Id }),
  z.strictObject({ type: z.literal('proc.ack'), jobId: Id, streamId: Id, seq: Seq }),
  z.strictObject({ type: z.literal('proc.list'), jobId: Id, requestId: Id }),
  z.strictObject({
    type: z.literal('file.op'),
    jobId: Id,
    opId: Id,
    op: z.enum(['stat', 'list', 'mkdir', 'remove', 'rename', 'read', 'write']),
    path: SandboxPath,
    /** rename's destination. */
    to: SandboxPath.optional(),
    /** remove: a directory with everything in it. */
    recursive: z.boolean().optional(),
    /** write, mkdir: permission bits of what is created (default 0644, 0755). */
    mode: z.number().int().min(0).max(0o777).optional(),
  }).refine((o) => (o.op === 'rename') === (o.to !== undefined), 'rename, and only rename, takes `to`'),
  /** A chunk of a file being written (seq = its offset); data null ends the file. */
  z.strictObject({ type: z.literal('file.data'), jobId: Id, opId: Id, seq: Seq, data: ChunkBase64.nullable() }),
  /** The reader consumed a read's data up to seq (exclusive). */
  z.strictObject({ type: z.literal('file.ack'), jobId: Id, opId: Id, seq: Seq }),
] as const;

/** AgentToSandbox are the sandbox messages an agent sends (part of AgentToControlSchema). */
const SandboxFromAgentMessages = [
  z.strictObject({ type: z.literal('proc.started'), jobId: Id, procId: Id, pid: z.number().int().min(1).max(2 ** 31) }),
  z.strictObject({ type: z.literal('proc.start.failed'), jobId: Id, procId: Id, code: ProcErrorCodeSchema, message: z.string().max(1024) }),
  z.strictObject({ type: z.literal('proc.output'), jobId: Id, procId: Id, streamId: Id, seq: Seq, stream: z.enum(['stdout', 'stderr', 'pty']), data: ChunkBase64 }),
  z.strictObject({
    type: z.literal('proc.exited'),
    jobId: Id,
    procId: Id,
    exitCode: z.number().int().min(0).max(255).nullable(),
    signal: z.number().int().min(0).max(255).nullable(),
    timedOut: z.boolean(),
    /** The end offset of the process's output. */
    outputSeq: Seq,
  }),
  /** The process's stdin has taken everything up to seq (bytes since its start). */
  z.strictObject({ type: z.literal('proc.stdin.ack'), jobId: Id, procId: Id, seq: Seq }),
  /** A request on a process or stream failed (signal, resize, stdin, attach, detach, ack). */
  z.strictObject({ type: z.literal('proc.error'), jobId: Id, procId: Id.nullable(), streamId: Id.nullable(), code: ProcErrorCodeSchema, message: z.string().max(1024) }),
  z.strictObject({ type: z.literal('proc.listed'), jobId: Id, requestId: Id, procs: z.array(ProcInfoSchema).max(MAX_PROCS_KEPT) }),
  /** A chunk of a file being read (seq = its offset); data null: the end of the file. */
  z.strictObject({ type: z.literal('file.data'), jobId: Id, opId: Id, seq: Seq, data: ChunkBase64.nullable() }),
  /** The agent took a write's data up to seq (exclusive): the writer may send FILE_WINDOW_BYTES past it. */
  z.strictObject({ type: z.literal('file.ack'), jobId: Id, opId: Id, seq: Seq }),
  z.strictObject({
    type: z.literal('file.result'),
    jobId: Id,
    opId: Id,
    ok: z.boolean(),
    /** list: the directory's entries. */
    entries: z.array(FileStatSchema).max(MAX_LIST_ENTRIES).optional(),
    /** list: more entries existed than MAX_LIST_ENTRIES. */
    truncated: z.boolean().optional(),
    /** stat: the file's stat. */
    stat: FileStatSchema.optional(),
    /** read, write: the bytes transferred. */
    bytes: Count.optional(),
    code: FileErrorCodeSchema.optional(),
    message: z.string().max(1024).optional(),
  }),
] as const;

// ---- Messages ----

/** HelloSchema is an agent's first message on every connection. */
export const HelloSchema = z.strictObject({
  type: z.literal('hello'),
  /** The agent's PROTOCOL_VERSION (a hello without one is protocol 1); the control plane serves MIN_PROTOCOL_VERSION on. */
  protocol: ProtocolVersionSchema,
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
  /** The agent's load now (then agent.load reports keep it current). */
  load: AgentLoadSchema,
});

/** AgentHello is an agent's hello. */
export type AgentHello = z.infer<typeof HelloSchema>;

/** MAX_REPORT_OUTPUTS bounds the output chunks of one job.report. */
export const MAX_REPORT_OUTPUTS = 64;
/** MAX_REPORT_OUTPUT_CHARS bounds the base64 output of one job.report (a larger chunk goes as its own job.output). */
export const MAX_REPORT_OUTPUT_CHARS = 256 * 1024;

const OutputStreamSchema = z.enum(['stdout', 'stderr']);
const JobStartedPart = z.strictObject({ cellId: Id, timings: TimingsSchema });
const JobEndedPart = z.strictObject({ end: JobEndSchema, timings: TimingsSchema, outputDroppedBytes: Count.optional() });
const JobWipedPart = z.strictObject({ receipt: WipeReceiptSchema, timings: TimingsSchema.optional() });

/**
 * JobReportSchema (protocol 5) is what happened to one job since its last report, in this order: it started, wrote
 * output, ended, and its volume was wiped; any part may be absent, not all. It means exactly what job.started,
 * job.output…, job.ended and job.wiped would, sent one after the other. `load` is the agent's load after it (as an
 * agent.load would say). An agent sends one when several reports of a job are ready in the same turn.
 */
export const JobReportSchema = z
  .strictObject({
    type: z.literal('job.report'),
    jobId: Id,
    started: JobStartedPart.optional(),
    output: z.array(z.strictObject({ stream: OutputStreamSchema, data: Base64 })).min(1).max(MAX_REPORT_OUTPUTS).optional(),
    ended: JobEndedPart.optional(),
    wiped: JobWipedPart.optional(),
    load: AgentLoadSchema.optional(),
  })
  .refine((r) => r.started !== undefined || r.output !== undefined || r.ended !== undefined || r.wiped !== undefined, 'a job.report needs started, output, ended or wiped')
  .refine((r) => (r.output ?? []).reduce((n, o) => n + o.data.length, 0) <= MAX_REPORT_OUTPUT_CHARS, `at most ${MAX_REPORT_OUTPUT_CHARS} characters of output`);
/** JobReport is a job's reports of one turn, in one message (protocol 5). */
export type JobReport = z.infer<typeof JobReportSchema>;

/** unpackJobReport is what a job.report means: the single messages it stands for, in order (its load last). */
export function unpackJobReport(r: JobReport): AgentToControl[] {
  const { jobId } = r;
  const out: AgentToControl[] = [];
  if (r.started) out.push({ type: 'job.started', jobId, ...r.started });
  for (const o of r.output ?? []) out.push({ type: 'job.output', jobId, ...o });
  if (r.ended) out.push({ type: 'job.ended', jobId, ...r.ended });
  if (r.wiped) out.push({ type: 'job.wiped', jobId, ...r.wiped });
  if (r.load) out.push({ type: 'agent.load', load: r.load });
  return out;
}

/** AgentToControlSchema are the messages an agent sends. */
export const AgentToControlSchema = z.discriminatedUnion('type', [
  HelloSchema,
  JobReportSchema,
  z.strictObject({ type: z.literal('job.started'), jobId: Id, ...JobStartedPart.shape }),
  z.strictObject({ type: z.literal('job.output'), jobId: Id, stream: OutputStreamSchema, data: Base64 }),
  z.strictObject({ type: z.literal('job.ended'), jobId: Id, ...JobEndedPart.shape }),
  /** spooled: the receipt of a volume shredded by reconcile, kept on disk until the control plane acknowledges it. */
  z.strictObject({ type: z.literal('job.wiped'), jobId: Id.nullable(), receipt: WipeReceiptSchema, timings: TimingsSchema.optional(), spooled: z.boolean().optional() }),
  z.strictObject({ type: z.literal('network.denied'), records: z.array(DeniedConnectionSchema).max(MAX_DENIED_PER_MESSAGE) }),
  z.strictObject({ type: z.literal('pool.status'), requestId: Id.nullable(), pool: PoolStatusSchema, volumes: VolumeCountsSchema }),
  /** The answer to image.prepare: the image's layers are unpacked and its top layer built (error null), or why not. */
  z.strictObject({ type: z.literal('image.prepared'), digest: Digest, unpackedBytes: Count, error: ImageErrorSchema.nullable() }),
  /** The answer to image.remove: its warm cells are drained and the layers no other image uses are deleted. */
  z.strictObject({ type: z.literal('image.removed'), digest: Digest }),
  /** The agent's load: on change (coalesced, at most every LOAD_REPORT_MIN_INTERVAL_MS) and every LOAD_REPORT_INTERVAL_MS. */
  z.strictObject({ type: z.literal('agent.load'), load: AgentLoadSchema }),
  ...SandboxFromAgentMessages,
]);
/** AgentToControl are the messages an agent sends. */
export type AgentToControl = z.infer<typeof AgentToControlSchema>;

/** ControlToAgentSchema are the messages the control plane sends. */
export const ControlToAgentSchema = z.discriminatedUnion('type', [
  /** The hello is accepted: the agent may replay what it kept. `protocol` is the agent's own (the one both speak). */
  z.strictObject({ type: z.literal('welcome'), protocol: ProtocolVersionSchema }),
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
  ...SandboxToAgentMessages,
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
