// The batch create's queue-quota rule (checkBatchQuota) and its per-item errors (atItem, firstFailure).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ApiError } from '../../src/shared/errors.js';
import { atItem, checkBatchQuota, firstFailure, type QueueState } from '../../src/control/jobs/job-batch.js';

/**
 * admitRefuses is the single-create rule as stated directly (a place in the queue is needed when the creates on their way
 * take all the running room, and there is none left there); admit() now calls checkBatchQuota(…, 1), so this pins it.
 */
function admitRefuses(s: QueueState): boolean {
  const room = Math.max(0, s.maxRunning - s.active);
  const waitingSoon = s.waiting + Math.max(0, s.admitting - room);
  return waitingSoon >= s.maxQueued && s.active + Math.min(s.admitting, room) >= s.maxRunning;
}

const refuses = (s: QueueState, n: number, queued = 0): ApiError | null => {
  try {
    checkBatchQuota(s, n, queued);
    return null;
  } catch (e) {
    assert.ok(e instanceof ApiError);
    return e;
  }
};

test('with one job, the batch rule is the single-create rule (every small state)', () => {
  for (let maxRunning = 0; maxRunning <= 3; maxRunning++)
    for (let maxQueued = 0; maxQueued <= 3; maxQueued++)
      for (let active = 0; active <= 4; active++)
        for (let waiting = 0; waiting <= 4; waiting++)
          for (let admitting = 0; admitting <= 4; admitting++) {
            const s = { waiting, active, admitting, maxRunning, maxQueued };
            const e = refuses(s, 1);
            assert.equal(e !== null, admitRefuses(s), JSON.stringify(s));
            if (e) assert.deepEqual([e.code, e.details], ['quota_exceeded', { quota: 'maxQueuedJobs', limit: maxQueued, retryAfterSeconds: 5 }]);
          }
});

test('a batch fits whole or not at all: free running places first, the rest in the queue', () => {
  const s = { waiting: 0, active: 0, admitting: 0, maxRunning: 2, maxQueued: 3 };
  assert.equal(refuses(s, 5), null);
  const e = refuses(s, 6);
  assert.equal(e?.code, 'quota_exceeded');
  // Six never fit (2 running + 3 waiting): no retry time, split it.
  assert.deepEqual(e?.details, { quota: 'maxQueuedJobs', limit: 3, requested: 6 });
  assert.match(e?.message ?? '', /split it/);
  // Five fit once the queue drains: retry later.
  assert.deepEqual(refuses({ ...s, waiting: 1 }, 5)?.details, { quota: 'maxQueuedJobs', limit: 3, requested: 5, retryAfterSeconds: 5 });
  // Creates on their way take the running room first.
  assert.equal(refuses({ ...s, admitting: 2 }, 3), null);
  assert.notEqual(refuses({ ...s, admitting: 2 }, 4), null);
  // Jobs already waiting take queue places.
  assert.notEqual(refuses({ ...s, active: 2, waiting: 1 }, 3), null);
  assert.equal(refuses({ ...s, active: 2, waiting: 1 }, 2), null);
});

test('an item\'s error keeps its code and names its index; the lowest failed index wins', () => {
  const e = atItem(3, new ApiError('limit_exceeded', 'cpu 99 is over 4', { limit: 4 })) as ApiError;
  assert.equal(e.code, 'limit_exceeded');
  assert.equal(e.status, 422);
  assert.equal(e.message, 'jobs[3]: cpu 99 is over 4');
  assert.deepEqual(e.details, { limit: 4, index: 3 });
  const fault = new Error('disk on fire');
  assert.equal(atItem(1, fault), fault, 'a platform fault passes unchanged');
  const settled: Array<PromiseSettledResult<number>> = [
    { status: 'fulfilled', value: 1 },
    { status: 'rejected', reason: new ApiError('image_not_found', 'no b') },
    { status: 'rejected', reason: new ApiError('image_not_found', 'no c') },
  ];
  assert.throws(() => firstFailure(settled), (x: ApiError) => x.message === 'jobs[1]: no b' && (x.details as { index: number }).index === 1);
  assert.deepEqual(firstFailure([{ status: 'fulfilled', value: 7 }]), [7]);
});

test('jobs of a batch that no agent has room for need places in the queue, whatever the running quota allows', () => {
  const s = { waiting: 1, active: 0, admitting: 0, maxRunning: 4, maxQueued: 3 };
  assert.equal(refuses(s, 3), null, 'the running quota has room for all three');
  assert.equal(refuses(s, 3, 2), null, 'two of them wait: 1 + 2 places of 3');
  const e = refuses(s, 3, 3);
  assert.ok(e, 'three of them wait: 1 + 3 places of 3');
  assert.deepEqual(e.details, { quota: 'maxQueuedJobs', limit: 3, requested: 3, retryAfterSeconds: 5 });
});
