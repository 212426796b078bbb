// bench/timed-job.ts: one job through the public HTTPS API exactly as an SDK user runs it, timed at the client.
// The path is the SDK's runJob, as `cleanroom run` uses it: one POST /v1/jobs?follow=true whose response is the job's
// event stream (created, output…, end); the first output byte is the moment the onChunk callback first fires.
import type { CleanroomClient, Job, JobRequest } from '../src/sdk/client.js';

/** TimedJob is one finished job with client-side times (ms from just before the create request was sent). */
export interface TimedJob {
  job: Job;
  /** Create request sent → the `created` event parsed (the job is recorded and placed on an agent). */
  createMs: number;
  /** Create request sent → first output chunk delivered to onChunk. */
  firstByteMs: number;
  /** Create request sent → the end event (the agent reports the end at exit; the wipe follows). */
  endMs: number;
  /** Wall clock (Date.now) when the create request was sent, to place the control plane's ISO timestamps. */
  sentAtEpochMs: number;
  /** Wall clock when the first output chunk arrived. */
  firstByteAtEpochMs: number;
}

/** runTimedJob runs one job to its end; rejects when it produced no output or did not succeed with `expect` as stdout. */
export async function runTimedJob(client: CleanroomClient, req: JobRequest, expect: string): Promise<TimedJob> {
  const sentAtEpochMs = Date.now();
  const t0 = performance.now();
  let createMs = Number.NaN;
  let firstByteMs = Number.NaN;
  let firstByteAtEpochMs = Number.NaN;
  let output = '';
  const job = await client.runJob(
    req,
    (c) => {
      if (Number.isNaN(firstByteMs)) {
        firstByteMs = performance.now() - t0;
        firstByteAtEpochMs = Date.now();
      }
      if (c.stream === 'stdout') output += c.data.toString('utf8');
    },
    () => (createMs = performance.now() - t0),
  );
  const endMs = performance.now() - t0;
  if (job.status !== 'succeeded' || output !== expect) {
    throw new Error(`job ${job.id} ended ${job.status} (${job.message ?? 'no message'}) with stdout ${JSON.stringify(output)}`);
  }
  return { job, createMs, firstByteMs, endMs, sentAtEpochMs, firstByteAtEpochMs };
}

/** WIPE_WAIT_MS bounds how long a wipe receipt may take to reach the job record. */
const WIPE_WAIT_MS = 10_000;

/** awaitWipe re-reads the job until its wipe receipt is recorded, and returns the sample with that job. */
export async function awaitWipe(client: CleanroomClient, s: TimedJob): Promise<TimedJob> {
  const deadline = Date.now() + WIPE_WAIT_MS;
  for (;;) {
    const job = await client.getJob(s.job.id);
    if (job.wipe) return { ...s, job };
    if (Date.now() > deadline) throw new Error(`job ${job.id}: no wipe receipt ${WIPE_WAIT_MS / 1000} s after it ended`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

/** wipeMs is workload exit (the job's endedAt) → volume wipe finished (key removed, storage gone), 1 ms resolution. */
export function wipeMs(job: Job): number {
  return job.wipe && job.endedAt ? Date.parse(job.wipe.finishedAt) - Date.parse(job.endedAt) : Number.NaN;
}
