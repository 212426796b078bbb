/** The JSON shapes the API returns, as zod schemas (documented in OpenAPI) plus mappers from the model. */
import { z } from 'zod';
import type { Job, Workspace } from '../model.js';

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
  runtime: z.enum(['runc', 'runsc']),
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
    wipe: j.wipe ? { volumeId: j.wipe.volumeId, cellId: j.wipe.cellId, keyIdentifier: j.wipe.keyIdentifier, keyStateAfterRemoval: j.wipe.keyStateAfterRemoval, startedAt: j.wipe.startedAt, finishedAt: j.wipe.finishedAt, totalMs: j.wipe.totalMs, steps: [...j.wipe.steps] } : null,
  };
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

/** OutputChunkView is one piece of output; data is base64 because output may not be UTF-8. */
export const OutputChunkView = z.object({ seq: z.number(), stream: z.enum(['stdout', 'stderr']), data: z.string().describe('base64') });
