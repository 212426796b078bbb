/** The validated shape of a job request, and the checks against a workspace's limits. */
import { posix } from 'node:path';
import { z } from 'zod';
import { ApiError } from '../../shared/errors.js';
import { assignmentBytes, MAX_ASSIGNMENT_BYTES, PLATFORM_ENV_RESERVE_BYTES, RUNTIMES, type Runtime, type WorkloadSpec } from '../../shared/wire.js';
import type { DataGrant, ImageRecord, Workspace } from '../model.js';
import { prefixProblem } from '../data/object-key.js';

const NO_NUL = (s: string) => !s.includes('\0');

/** JobRequestSchema is the body of `POST /v1/jobs`. Unknown fields are refused. */
export const JobRequestSchema = z
  .object({
    command: z
      .array(z.string().max(65536).refine(NO_NUL, 'must not contain NUL bytes'))
      .min(1, 'command must have at least one element (the program to run)')
      .max(4096)
      .refine((c) => (c[0] ?? '').length > 0, 'command[0] (the program) must not be empty')
      .optional()
      .describe("argv of the workload; run directly, never through a shell; absent: the image's Entrypoint + Cmd"),
    image: z
      .string()
      .min(1)
      .max(200)
      .optional()
      .describe('NAME[:TAG] (the workspace\'s image, else a public one) or sha256:<digest>; absent: the configured default image'),
    env: z
      .record(z.string(), z.string().max(65536).refine(NO_NUL, 'must not contain NUL bytes'))
      .superRefine((env, ctx) => {
        for (const k of Object.keys(env)) {
          if (!/^[A-Za-z_][A-Za-z0-9_]{0,255}$/.test(k)) ctx.addIssue({ code: 'custom', path: [k], message: `env name "${k}" must be letters, digits and _ (not starting with a digit)` });
          else if (k.startsWith('CLEANROOM_')) ctx.addIssue({ code: 'custom', path: [k], message: `env name "${k}": CLEANROOM_* is reserved for the platform` });
        }
      })
      .optional()
      .describe('environment variables of the workload'),
    cwd: z.string().max(4096).optional().describe("working directory: /work, /tmp, the image's WorkingDir or a path under them; default the image's WorkingDir, else /work"),
    cpu: z.number().optional().describe('CPU cores (fractions allowed)'),
    memoryMiB: z.number().int().optional().describe('memory limit in MiB'),
    timeoutSeconds: z.number().optional().describe('wall-clock limit; the job ends as `timeout` after it'),
    diskMiB: z.number().int().optional().describe('size of the encrypted volume holding /work and /tmp (rounded up to a size class)'),
    runtime: z.string().optional().describe('OCI runtime: crun (default unless the operator configured another), runc (the same confinement) or runsc (gVisor)'),
    data: z
      .array(
        z
          .object({
            prefix: z.string().max(1024).describe('object key prefix in the workspace data store ("" is the whole store)'),
            access: z.enum(['read', 'read-write']),
          })
          .strict(),
      )
      .max(32)
      .optional()
      .describe("what the job's token may do in the workspace data store; nothing if absent"),
  })
  .strict();

/** JobRequest is a parsed request body. */
export type JobRequest = z.infer<typeof JobRequestSchema>;

/** JobDefaults are what a job gets for fields it leaves out. */
export interface JobDefaults {
  cpu: number;
  memoryMiB: number;
  timeoutSeconds: number;
  diskMiB: number;
  /** Output kept per job; the agent drops what comes after it and reports how much. */
  outputLimitBytes: number;
  /** The runtime of a job that names none (limits.defaultRuntime). */
  runtime: Runtime;
}

/** ResolvedJob is a request with defaults applied and limits checked. */
export type ResolvedJob = WorkloadSpec & { dataGrants: DataGrant[] };

/**
 * resolveJobRequest applies defaults and refuses anything outside the workspace's limits (422). With an image, its
 * config fills in what the request leaves out: Entrypoint + Cmd when there is no command, Env under the request's env,
 * WorkingDir as the default cwd.
 */
export function resolveJobRequest(req: JobRequest, ws: Workspace, d: JobDefaults, image: ImageRecord | null = null): ResolvedJob {
  const config = image?.manifest?.config ?? null;
  const command = req.command ?? [...(config?.entrypoint ?? []), ...(config?.cmd ?? [])];
  if (command.length === 0 || command[0] === '') {
    throw new ApiError('invalid_request', image ? `body.command: the image ${image.name}:${image.tag} has no Entrypoint or Cmd; give a command` : 'body.command: give the program to run and its arguments');
  }
  const env = { ...imageEnv(config?.env ?? []), ...(req.env ?? {}) };
  const workDir = imageWorkDir(config?.workingDir ?? '');
  const cpu = req.cpu ?? d.cpu;
  const memoryBytes = (req.memoryMiB ?? d.memoryMiB) * 1024 * 1024;
  const timeoutSeconds = req.timeoutSeconds ?? d.timeoutSeconds;
  const diskBytes = (req.diskMiB ?? d.diskMiB) * 1024 * 1024;
  const runtime = req.runtime ?? d.runtime;
  if (!(RUNTIMES as readonly string[]).includes(runtime)) {
    throw new ApiError('unsupported_runtime', `runtime "${runtime}" is not supported; use one of: ${RUNTIMES.join(', ')}`);
  }
  if (!(cpu >= 0.01 && cpu <= ws.maxCpu)) throw new ApiError('limit_exceeded', `cpu must be between 0.01 and ${ws.maxCpu} (workspace limit); got ${cpu}`);
  const maxMiB = ws.maxMemoryBytes / 1024 / 1024;
  if (!(memoryBytes >= 16 * 1024 * 1024 && memoryBytes <= ws.maxMemoryBytes)) {
    throw new ApiError('limit_exceeded', `memoryMiB must be between 16 and ${maxMiB} (workspace limit); got ${memoryBytes / 1024 / 1024}`);
  }
  if (!(timeoutSeconds >= 1 && timeoutSeconds <= ws.maxTimeoutSeconds)) {
    throw new ApiError('limit_exceeded', `timeoutSeconds must be between 1 and ${ws.maxTimeoutSeconds} (workspace limit); got ${timeoutSeconds}`);
  }
  if (!(diskBytes >= 16 * 1024 * 1024 && diskBytes <= ws.maxDiskBytes)) {
    throw new ApiError('limit_exceeded', `diskMiB must be between 16 and ${ws.maxDiskBytes / 1024 / 1024} (workspace limit); got ${diskBytes / 1024 / 1024}`);
  }
  const cwd = resolveCwd(req.cwd, workDir);
  // What a cell accepts in one assignment (with room for the platform's env): checked here, where it can be refused
  // clearly, rather than in the cell.
  const bytes = assignmentBytes(command, env, cwd);
  const most = MAX_ASSIGNMENT_BYTES - PLATFORM_ENV_RESERVE_BYTES;
  if (bytes > most) throw new ApiError('payload_too_large', `command, env and cwd together take ${bytes} bytes in the cell; at most ${most} are accepted: pass large inputs as a data object instead`);
  return { command, env, cwd, cpu, memoryBytes, timeoutSeconds, diskBytes, runtime: runtime as Runtime, dataGrants: resolveGrants(req.data ?? []) };
}

function resolveGrants(grants: DataGrant[]): DataGrant[] {
  for (const [i, g] of grants.entries()) {
    const problem = /\s/.test(g.prefix) ? 'a prefix must not contain whitespace' : prefixProblem(g.prefix);
    if (problem) throw new ApiError('invalid_request', `data.${i}.prefix: ${problem}`);
  }
  return grants.map((g) => ({ prefix: g.prefix, access: g.access }));
}

function resolveCwd(cwd: string | undefined, imageDir: string | null): string {
  if (cwd === undefined) return imageDir ?? '/work';
  const normal = posix.normalize(cwd);
  if (!cwd.startsWith('/') || cwd.includes('\0') || cwd.split('/').includes('..')) {
    throw new ApiError('invalid_request', `cwd must be an absolute path without "..": got ${JSON.stringify(cwd)}`);
  }
  const roots = ['/work', '/tmp', ...(imageDir ? [imageDir] : [])];
  const ok = roots.some((root) => normal === root || normal.startsWith(root === '/' ? '/' : root + '/'));
  if (!ok || underPlatformDir(normal)) throw new ApiError('invalid_request', `cwd must be ${imageDir ? "/work, /tmp, the image's WorkingDir" : '/work, /tmp'} or a directory under them: got ${JSON.stringify(cwd)}`);
  return normal;
}

/** PLATFORM_DIRS are never a workload's cwd, whatever an image says (the kernel's and the platform's own mounts). */
const PLATFORM_DIRS = ['/proc', '/sys', '/dev', '/run'];

function underPlatformDir(path: string): boolean {
  return PLATFORM_DIRS.some((d) => path === d || path.startsWith(d + '/'));
}

/** imageWorkDir is the image's WorkingDir if it is a usable cwd (absolute, normal, not a platform directory), else null. */
function imageWorkDir(dir: string): string | null {
  if (!dir.startsWith('/') || dir.split('/').includes('..') || dir.includes('\0') || dir.length > 4096) return null;
  const normal = posix.normalize(dir).replace(/(.)\/$/, '$1');
  return underPlatformDir(normal) ? null : normal;
}

/** imageEnv reads an image's Env (KEY=VALUE) into a map; names a job could not set (CLEANROOM_*, odd names) are left out. */
function imageEnv(list: readonly string[]): Record<string, string> {
  const env: Record<string, string> = {};
  for (const kv of list) {
    const i = kv.indexOf('=');
    const k = i < 0 ? kv : kv.slice(0, i);
    if (!/^[A-Za-z_][A-Za-z0-9_]{0,255}$/.test(k) || k.startsWith('CLEANROOM_')) continue;
    env[k] = i < 0 ? '' : kv.slice(i + 1);
  }
  return env;
}
