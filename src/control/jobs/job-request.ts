/** The validated shape of a job request, and the checks against a workspace's limits. */
import { posix } from 'node:path';
import { z } from 'zod';
import { ApiError } from '../../shared/errors.js';
import { assignmentBytes, MAX_ASSIGNMENT_BYTES, PLATFORM_ENV_RESERVE_BYTES, RUNTIMES, type Runtime, type WorkloadSpec } from '../../shared/wire.js';
import type { DataGrant, Workspace } from '../model.js';
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
      .describe('argv of the workload; run directly, never through a shell'),
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
    cwd: z.string().max(4096).optional().describe('working directory: /work (default) or a path under /work or /tmp'),
    cpu: z.number().optional().describe('CPU cores (fractions allowed)'),
    memoryMiB: z.number().int().optional().describe('memory limit in MiB'),
    timeoutSeconds: z.number().optional().describe('wall-clock limit; the job ends as `timeout` after it'),
    diskMiB: z.number().int().optional().describe('size of the encrypted volume holding /work and /tmp (rounded up to a size class)'),
    runtime: z.string().optional().describe('OCI runtime: runc (default), crun (the same confinement, less CPU per cell) or runsc (gVisor)'),
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
}

/** ResolvedJob is a request with defaults applied and limits checked. */
export type ResolvedJob = WorkloadSpec & { dataGrants: DataGrant[] };

/** resolveJobRequest applies defaults and refuses anything outside the workspace's limits (422). */
export function resolveJobRequest(req: JobRequest, ws: Workspace, d: JobDefaults): ResolvedJob {
  const cpu = req.cpu ?? d.cpu;
  const memoryBytes = (req.memoryMiB ?? d.memoryMiB) * 1024 * 1024;
  const timeoutSeconds = req.timeoutSeconds ?? d.timeoutSeconds;
  const diskBytes = (req.diskMiB ?? d.diskMiB) * 1024 * 1024;
  const runtime = req.runtime ?? 'runc';
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
  const cwd = resolveCwd(req.cwd);
  // What a cell accepts in one assignment (with room for the platform's env): checked here, where it can be refused
  // clearly, rather than in the cell.
  const bytes = assignmentBytes(req.command, req.env ?? {}, cwd);
  const most = MAX_ASSIGNMENT_BYTES - PLATFORM_ENV_RESERVE_BYTES;
  if (bytes > most) throw new ApiError('payload_too_large', `command, env and cwd together take ${bytes} bytes in the cell; at most ${most} are accepted: pass large inputs as a data object instead`);
  return { command: req.command, env: req.env ?? {}, cwd, cpu, memoryBytes, timeoutSeconds, diskBytes, runtime: runtime as Runtime, dataGrants: resolveGrants(req.data ?? []) };
}

function resolveGrants(grants: DataGrant[]): DataGrant[] {
  for (const [i, g] of grants.entries()) {
    const problem = /\s/.test(g.prefix) ? 'a prefix must not contain whitespace' : prefixProblem(g.prefix);
    if (problem) throw new ApiError('invalid_request', `data.${i}.prefix: ${problem}`);
  }
  return grants.map((g) => ({ prefix: g.prefix, access: g.access }));
}

function resolveCwd(cwd: string | undefined): string {
  if (cwd === undefined) return '/work';
  const normal = posix.normalize(cwd);
  if (!cwd.startsWith('/') || cwd.includes('\0') || cwd.split('/').includes('..')) {
    throw new ApiError('invalid_request', `cwd must be an absolute path without "..": got ${JSON.stringify(cwd)}`);
  }
  const ok = ['/work', '/tmp'].some((root) => normal === root || normal.startsWith(root + '/'));
  if (!ok) throw new ApiError('invalid_request', `cwd must be /work, /tmp or a directory under them: got ${JSON.stringify(cwd)}`);
  return normal;
}
