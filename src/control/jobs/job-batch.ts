/**
 * What a batch create (POST /v1/jobs/batch) adds to a single create's rules: its size bound, how an item's error names
 * the item, and the queue quota judged for the batch as a whole.
 */
import { ApiError } from '../../shared/errors.js';

/** JOB_BATCH_MAX bounds the jobs of one batch create (the request body's size limit applies as well). */
export const JOB_BATCH_MAX = 100;

/**
 * atItem gives an item's error the item's index: the same stable code and status, `jobs[i]: ` before the message and
 * `index` in the details, so a client can point at the bad item. Other errors (platform faults) pass unchanged.
 */
export function atItem(index: number, e: unknown): unknown {
  if (!(e instanceof ApiError)) return e;
  const details = typeof e.details === 'object' && e.details !== null ? e.details : e.details === undefined ? {} : { detail: e.details };
  return new ApiError(e.code, `jobs[${index}]: ${e.message}`, { ...details, index });
}

/** firstFailure returns the settled result's values, or throws the error of the lowest failed index (atItem). */
export function firstFailure<T>(results: ReadonlyArray<PromiseSettledResult<T>>): T[] {
  const bad = results.findIndex((r) => r.status === 'rejected');
  if (bad >= 0) throw atItem(bad, (results[bad] as PromiseRejectedResult).reason);
  return results.map((r) => (r as PromiseFulfilledResult<T>).value);
}

/** QueueState is what the queue quota is judged on: a workspace's jobs waiting, running, and being admitted now. */
export interface QueueState {
  waiting: number;
  active: number;
  admitting: number;
  maxRunning: number;
  maxQueued: number;
}

/**
 * checkBatchQuota refuses (429 quota_exceeded) a batch of `n` that would not fit whole: the creates already on their way
 * take the running quota's room first, the batch takes what is left, and the rest of it must fit in the queue. With n = 1
 * this is exactly a single create's rule, code, message and details (admit's check can be this call).
 */
export function checkBatchQuota(s: QueueState, n: number, queued = 0): void {
  const room = Math.max(0, s.maxRunning - s.active);
  const waitingSoon = s.waiting + Math.max(0, s.admitting - room);
  const roomLeft = Math.max(0, room - s.admitting);
  // `queued`: jobs of the batch known to wait (no agent had room for them), whatever the running quota would allow.
  const toQueue = Math.max(queued, n - roomLeft);
  if (toQueue === 0 || waitingSoon + toQueue <= s.maxQueued) return;
  if (n === 1) {
    throw new ApiError('quota_exceeded', `this workspace has ${waitingSoon} jobs waiting; at most ${s.maxQueued} may wait`, { quota: 'maxQueuedJobs', limit: s.maxQueued, retryAfterSeconds: 5 });
  }
  // A batch larger than the running quota and the queue together never fits: retrying it cannot help, splitting it can.
  if (n > s.maxRunning + s.maxQueued) {
    throw new ApiError('quota_exceeded', `this batch of ${n} can never be accepted: this workspace runs at most ${s.maxRunning} jobs and queues at most ${s.maxQueued}; split it (nothing was created)`, { quota: 'maxQueuedJobs', limit: s.maxQueued, requested: n });
  }
  throw new ApiError(
    'quota_exceeded',
    `this batch of ${n} needs ${toQueue} places in the queue; ${waitingSoon} jobs wait and at most ${s.maxQueued} may wait (nothing was created)`,
    { quota: 'maxQueuedJobs', limit: s.maxQueued, requested: n, retryAfterSeconds: 5 },
  );
}
