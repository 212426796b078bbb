// FleetOffers: a workload no agent of the fleet (connected or not, not removed, on any replica) can run is refused at
// once with a stable code; one that some agent could run later (full, away) is let through to queue.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { FleetCheck, OfferIndex, REMOTE_VIEW_MAX_AGE_MS, refusal, type KnownAgent, type WorkloadNeeds } from '../../src/control/agents/fleet-offers.js';
import { ApiError } from '../../src/shared/errors.js';
import type { AgentOffers } from '../../src/shared/wire.js';

const MiB = 1024 * 1024;
const SMALL = { name: 'small', cpu: 1, memoryBytes: 512 * MiB, diskBytes: 256 * MiB };
const LARGE = { name: 'large', cpu: 2, memoryBytes: 2048 * MiB, diskBytes: 1024 * MiB };
const offers = (runtimes: AgentOffers['runtimes'], classes = [SMALL]): AgentOffers => ({ runtimes, classes });
const needs = (runtime: WorkloadNeeds['runtime'], cpu = 1, memoryMiB = 256, diskMiB = 256): WorkloadNeeds => ({ runtime, cpu, memoryBytes: memoryMiB * MiB, diskBytes: diskMiB * MiB });
const known = (id: string, o: AgentOffers | undefined, removed = false): KnownAgent => ({ id, removed, offers: o });
const code = (e: ApiError | null) => e?.code ?? null;

test('refusal: runtime_not_offered names what the fleet offers; size_not_offered when the runtime is there but no class fits', () => {
  const fleet = [known('aaaaaa', offers(['runc'])), known('bbbbbb', offers(['runsc', 'runc'], [SMALL, LARGE]))];
  assert.equal(refusal(fleet, needs('runc')), null);
  assert.equal(refusal(fleet, needs('runsc', 2, 2048, 1024)), null);
  const crun = refusal(fleet, needs('crun'));
  assert.equal(code(crun), 'runtime_not_offered');
  assert.equal(crun!.status, 422);
  assert.deepEqual(crun!.details, { runtime: 'crun', offered: ['runc', 'runsc'] });
  assert.match(crun!.message, /no agent offers runtime crun .*runc, runsc.*agent\.runtimes/);
  const big = refusal(fleet, needs('runc', 2, 4096));
  assert.equal(code(big), 'size_not_offered');
  assert.deepEqual(big!.details, { runtime: 'runc', cpu: 2, memoryMiB: 4096, diskMiB: 256 });
});

test('refusal: removed agents do not count; no agent known at all, or one that does not say what it offers, lets it through', () => {
  assert.equal(code(refusal([known('aaaaaa', offers(['crun']), true), known('bbbbbb', offers(['runc']))], needs('crun'))), 'runtime_not_offered');
  assert.equal(refusal([], needs('crun')), null, 'nothing known yet: it waits for the first agent');
  assert.equal(refusal([known('aaaaaa', offers(['crun']), true)], needs('runc')), null, 'only removed agents: as if none were known');
  assert.equal(refusal([known('aaaaaa', offers(['runc'])), known('bbbbbb', undefined)], needs('crun', 64, 99_999)), null);
  assert.equal(code(refusal([known('aaaaaa', offers([]))], needs('runc'))), 'runtime_not_offered', 'a host that runs no runtime');
});

test('OfferIndex counts agents per distinct offers: set again, delete, and runs', () => {
  const ix = new OfferIndex();
  assert.equal(ix.runs(needs('runc')), false);
  ix.set('aaaaaa', offers(['runc']));
  ix.set('bbbbbb', offers(['runc']));
  ix.set('cccccc', offers(['crun']));
  assert.equal([...ix.profiles()].length, 2, 'two distinct offers');
  assert.ok(ix.runs(needs('crun')));
  ix.set('cccccc', offers(['runc'])); // its offers changed (a new connection)
  assert.equal(ix.runs(needs('crun')), false);
  assert.equal([...ix.profiles()].length, 1);
  ix.delete('aaaaaa');
  assert.ok(ix.runs(needs('runc')) && ix.has('bbbbbb') && !ix.has('aaaaaa'));
  ix.delete('bbbbbb');
  ix.delete('cccccc');
  ix.delete('cccccc');
  assert.equal([...ix.profiles()].length, 0);
  ix.set('dddddd', undefined);
  assert.ok(ix.runs(needs('runsc', 99, 99_999, 99_999)), 'an agent that does not say runs anything');
});

test('FleetCheck: local agents answer first; else the store, a yes cached, a no always read fresh; removals here apply', async () => {
  const ix = new OfferIndex();
  const removedHere = new Set<string>();
  const check = new FleetCheck(ix, (id) => removedHere.has(id));
  // No store, nothing known: let through. A local runc agent: crun refused.
  await check.check(needs('crun'));
  ix.set('aaaaaa', offers(['runc']));
  await assert.rejects(check.check(needs('crun')), (e: ApiError) => e.code === 'runtime_not_offered');
  // The store knows another replica's crun agent (disconnected counts too).
  let stored: KnownAgent[] = [known('aaaaaa', offers(['runc'])), known('bbbbbb', offers(['crun']))];
  let reads = 0;
  check.attachRemote(async () => {
    reads++;
    return stored;
  });
  await check.check(needs('crun'));
  await check.check(needs('crun'));
  assert.equal(reads, 1, 'a yes is served from the cached read');
  await check.check(needs('runc'));
  assert.equal(reads, 1, 'a local agent answers without the store');
  // The crun agent is removed on another replica: the cached yes stands until it is older than REMOTE_VIEW_MAX_AGE_MS.
  stored = [known('aaaaaa', offers(['runc'])), known('bbbbbb', offers(['crun']), true)];
  assert.ok(REMOTE_VIEW_MAX_AGE_MS >= 1000);
  await assert.rejects(check.check(needs('runsc')), (e: ApiError) => e.code === 'runtime_not_offered');
  assert.equal(reads, 2, 'a no is read fresh');
  await assert.rejects(check.check(needs('crun')), (e: ApiError) => e.code === 'runtime_not_offered');
  // Removed here (newer than the record read): not counted.
  stored = [known('aaaaaa', offers(['runc'])), known('bbbbbb', offers(['crun']))];
  removedHere.add('bbbbbb');
  await assert.rejects(check.check(needs('crun')), (e: ApiError) => e.code === 'runtime_not_offered');
  // Concurrent misses share one read.
  const before = reads;
  const all = await Promise.allSettled([check.check(needs('runsc')), check.check(needs('runsc')), check.check(needs('runsc'))]);
  assert.ok(all.every((r) => r.status === 'rejected'));
  assert.equal(reads - before, 1);
  // A store that cannot be read lets it through (it queues).
  check.attachRemote(() => Promise.reject(new Error('connection refused')));
  await check.check(needs('runsc'));
});
