/** The validated shape of a sandbox request, and the checks against a workspace's limits. */
import { z } from 'zod';
import { ApiError } from '../../shared/errors.js';
import type { SandboxFields, Workspace } from '../model.js';
import { JobRequestSchema, resolveJobRequest, type JobDefaults, type ResolvedJob } from '../jobs/job-request.js';
import type { ImageRecord } from '../model.js';

/** SANDBOX_DEFAULT_TIMEOUT_SECONDS is a sandbox's life when the request names none. */
export const SANDBOX_DEFAULT_TIMEOUT_SECONDS = 300;
/** SANDBOX_MAX_TIMEOUT_SECONDS caps a sandbox's life whatever the workspace allows (24 h). */
export const SANDBOX_MAX_TIMEOUT_SECONDS = 86_400;
/** MAX_METADATA_PAIRS, MAX_METADATA_KEY_CHARS, MAX_METADATA_VALUE_CHARS bound a sandbox's metadata. */
export const MAX_METADATA_PAIRS = 64;
export const MAX_METADATA_KEY_CHARS = 128;
export const MAX_METADATA_VALUE_CHARS = 1024;

const NO_CONTROL = (s: string) => !/[\u0000-\u001f\u007f]/.test(s);

/** MetadataSchema is a sandbox's metadata: a bounded map of strings, kept in clear (list filters on it). */
export const MetadataSchema = z
  .record(z.string().min(1).max(MAX_METADATA_KEY_CHARS).refine(NO_CONTROL, 'must not contain control characters'), z.string().max(MAX_METADATA_VALUE_CHARS).refine(NO_CONTROL, 'must not contain control characters'))
  .refine((m) => Object.keys(m).length <= MAX_METADATA_PAIRS, `at most ${MAX_METADATA_PAIRS} metadata pairs`);

/** SandboxRequestSchema is the body of `POST /v1/sandboxes`. Unknown fields are refused. */
export const SandboxRequestSchema = z
  .object({
    image: z.string().max(512).optional().describe('image to run (NAME[:TAG] or sha256:…); absent: the configured default image'),
    runtime: z.string().optional().describe('OCI runtime: runc (default) or runsc (gVisor)'),
    cpu: z.number().optional().describe('CPU cores (fractions allowed)'),
    memoryMiB: z.number().int().optional().describe('memory limit in MiB'),
    diskMiB: z.number().int().optional().describe('size of the encrypted volume holding /work and /tmp'),
    timeoutSeconds: z.number().int().optional().describe(`life of the sandbox from when it is ready (default ${SANDBOX_DEFAULT_TIMEOUT_SECONDS}; at most the workspace limit and 24 h); change it with POST …/timeout`),
    idleTimeoutSeconds: z.number().int().min(0).optional().describe('end the sandbox after this long with no API activity and no running process (0 or absent: never idle)'),
    env: JobRequestSchema.shape.env.describe('environment every process of the sandbox starts with'),
    metadata: MetadataSchema.optional().describe('string pairs to find the sandbox by (GET /v1/sandboxes?metadata=…); not secret: kept in clear'),
    data: JobRequestSchema.shape.data.describe("what the sandbox's token may do in the workspace data store; nothing if absent"),
  })
  .strict();

/** SandboxRequest is a parsed request body. */
export type SandboxRequest = z.infer<typeof SandboxRequestSchema>;

/** maxSandboxTimeout is the longest a workspace's sandbox may live. */
export function maxSandboxTimeout(ws: Workspace): number {
  return Math.min(ws.maxTimeoutSeconds, SANDBOX_MAX_TIMEOUT_SECONDS);
}

/** checkTimeout refuses a sandbox timeout outside 1 s … the workspace's maximum (422 limit_exceeded). */
export function checkTimeout(ws: Workspace, t: number): number {
  const max = maxSandboxTimeout(ws);
  if (!(Number.isInteger(t) && t >= 1 && t <= max)) throw new ApiError('limit_exceeded', `timeoutSeconds must be between 1 and ${max} (workspace limit, at most 24 h); got ${t}`);
  return t;
}

/** resolveSandboxRequest applies defaults and the workspace's limits (the job checks for cpu, memory, disk, env, data). */
export function resolveSandboxRequest(req: SandboxRequest, ws: Workspace, d: JobDefaults, image: ImageRecord | null = null): { spec: ResolvedJob; sandbox: SandboxFields } {
  const timeoutSeconds = checkTimeout(ws, req.timeoutSeconds ?? Math.min(SANDBOX_DEFAULT_TIMEOUT_SECONDS, maxSandboxTimeout(ws)));
  // The job's own checks, with a placeholder command (a sandbox has none: its processes come later).
  const { data, env, cpu, memoryMiB, diskMiB, runtime } = req;
  // The image's Env and WorkingDir apply to the sandbox's processes as to a job's command.
  const resolved = resolveJobRequest({ command: ['sandbox'], timeoutSeconds, ...defined({ data, env, cpu, memoryMiB, diskMiB, runtime }) }, ws, d, image);
  return {
    spec: { ...resolved, command: [] },
    sandbox: { metadata: req.metadata ?? {}, idleTimeoutSeconds: req.idleTimeoutSeconds ?? 0, endsAt: null, endRequested: null },
  };
}

function defined<T extends Record<string, unknown>>(o: T): Partial<T> {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as Partial<T>;
}
