// Placement (Contract W): never a draining, removed or full agent; a warm cell of the job's (image, runtime, class)
// first; then the least loaded; ties spread by the agent id's hash. And the hub's guess: a warm cell taken per assign.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { agentHash, canRun, choosePlacement, jobSizeClass, offeredClass, takeWarmCell, warmCells, type AgentCandidate, type PlacementWant } from '../../src/control/agents/placement.js';
import type { AgentLoad, AgentOffers } from '../../src/shared/wire.js';

const IMG = `sha256:${'a'.repeat(64)}`;
const want: PlacementWant = { image: null, runtime: 'runc', sizeClass: 'small' };
const load = (warm: AgentLoad['warm'] = [], capacity = 10): AgentLoad => ({ running: 0, capacity, preparing: 0, warm });
const agent = (agentId: string, o: Partial<AgentCandidate> = {}): AgentCandidate => ({ agentId, capacity: 10, running: 0, draining: false, removed: false, load: load(), ...o });
const warm = (cells: number, o: Partial<AgentLoad['warm'][number]> = {}) => load([{ image: null, runtime: 'runc', sizeClass: 'small', cells, ...o }]);

test('no candidates, or none that may take work: null', () => {
  assert.equal(choosePlacement([], want), null);
  assert.equal(choosePlacement([agent('aaaaaa', { draining: true }), agent('bbbbbb', { removed: true }), agent('cccccc', { running: 10 })], want), null);
  assert.equal(choosePlacement([agent('aaaaaa', { capacity: 0 })], want), null);
});

test('draining, removed and full agents are skipped even when they hold warm cells', () => {
  const cands = [
    agent('aaaaaa', { draining: true, load: warm(5) }),
    agent('bbbbbb', { removed: true, load: warm(5) }),
    agent('cccccc', { running: 10, load: warm(5) }),
    agent('dddddd', { running: 9 }),
  ];
  assert.equal(choosePlacement(cands, want), 'dddddd');
});

test('an agent with a warm cell of the job\'s image, runtime and class wins over a less loaded one without', () => {
  const cands = [agent('aaaaaa', { running: 0 }), agent('bbbbbb', { running: 8, load: warm(1) })];
  assert.equal(choosePlacement(cands, want), 'bbbbbb');
  // The same cell counts only for its own image, runtime and class.
  assert.equal(choosePlacement(cands, { ...want, runtime: 'runsc' }), 'aaaaaa');
  assert.equal(choosePlacement(cands, { ...want, image: IMG }), 'aaaaaa');
  assert.equal(choosePlacement(cands, { ...want, sizeClass: 'large' }), 'aaaaaa');
  // A job that maps to no class takes any class's warm cell of its image and runtime.
  assert.equal(choosePlacement(cands, { ...want, sizeClass: null }), 'bbbbbb');
  // An image's warm cells count for jobs on that image only.
  const img = [agent('aaaaaa'), agent('bbbbbb', { running: 5, load: warm(2, { image: IMG }) })];
  assert.equal(choosePlacement(img, { ...want, image: IMG }), 'bbbbbb');
  assert.equal(choosePlacement(img, want), 'aaaaaa');
  // A pool entry with 0 cells is no warm cell; an agent that has not reported its load has none.
  assert.equal(choosePlacement([agent('aaaaaa', { running: 1 }), agent('bbbbbb', { load: warm(0) })], want), 'bbbbbb');
  assert.equal(choosePlacement([agent('aaaaaa', { load: null }), agent('bbbbbb', { running: 3, load: warm(1) })], want), 'bbbbbb');
});

test('among equals in warmth, the least loaded (running / capacity) wins', () => {
  assert.equal(choosePlacement([agent('aaaaaa', { running: 3 }), agent('bbbbbb', { running: 2 }), agent('cccccc', { running: 4 })], want), 'bbbbbb');
  // By fraction, not count: 4 of 40 is less loaded than 2 of 10.
  assert.equal(choosePlacement([agent('aaaaaa', { running: 2, capacity: 10 }), agent('bbbbbb', { running: 4, capacity: 40 })], want), 'bbbbbb');
  assert.equal(choosePlacement([agent('aaaaaa', { running: 2, load: warm(1) }), agent('bbbbbb', { running: 1, load: warm(3) })], want), 'bbbbbb');
});

test('ties go by the agent id\'s hash, whatever the candidates\' order: the same winner, and not the smallest id', () => {
  const ids = Array.from({ length: 50 }, (_, i) => (0x100000 + i * 7919).toString(16).slice(-6));
  const cands = ids.map((id) => agent(id));
  const first = choosePlacement(cands, want);
  assert.equal(choosePlacement([...cands].reverse(), want), first);
  const byHash = [...ids].sort((a, b) => agentHash(a) - agentHash(b))[0];
  assert.equal(first, byHash);
  assert.notEqual(agentHash('aaaaaa'), agentHash('aaaaab'));
});

test('successive placements spread over equal agents as the hub counts each assignment', () => {
  const cands = ['a1a1a1', 'b2b2b2', 'c3c3c3', 'd4d4d4'].map((id) => agent(id, { capacity: 4 }));
  const placed = new Map<string, number>();
  for (let i = 0; i < 16; i++) {
    const id = choosePlacement(cands, want)!;
    placed.set(id, (placed.get(id) ?? 0) + 1);
    cands.find((c) => c.agentId === id)!.running++;
  }
  assert.deepEqual([...placed.values()], [4, 4, 4, 4]);
  assert.equal(choosePlacement(cands, want), null, 'all full');
});

test('warm cells move the hub\'s choice until they are used up: takeWarmCell subtracts one per assignment', () => {
  const a = agent('aaaaaa', { load: warm(2) });
  const b = agent('bbbbbb');
  const order: string[] = [];
  for (let i = 0; i < 4; i++) {
    const id = choosePlacement([a, b], want)!;
    order.push(id);
    const c = id === a.agentId ? a : b;
    c.running++;
    c.load = takeWarmCell(c.load!, want);
  }
  // Two warm starts on a; then no warm cell is left anywhere and the least loaded wins: b (0, then 1 of 10, vs a's 2).
  assert.deepEqual(order, ['aaaaaa', 'aaaaaa', 'bbbbbb', 'bbbbbb']);
  assert.equal(warmCells(a.load!, want), 0);
  // Taking from a load without a fitting cell changes nothing (and never goes negative).
  const l = warm(0);
  assert.equal(takeWarmCell(l, want), l);
  const mixed = load([{ image: null, runtime: 'runc', sizeClass: 'large', cells: 1 }, { image: null, runtime: 'runc', sizeClass: 'small', cells: 1 }]);
  assert.deepEqual(takeWarmCell(mixed, want).warm.map((w) => w.cells), [1, 0]);
  assert.deepEqual(mixed.warm.map((w) => w.cells), [1, 1], 'the reported load is not mutated');
});

test('jobSizeClass maps a job to the smallest class that fits, as the agent does; null when none fits', () => {
  const MiB = 1024 * 1024;
  const classes = [
    { name: 'large', cpu: 2, memoryBytes: 2048 * MiB, diskBytes: 1024 * MiB },
    { name: 'small', cpu: 1, memoryBytes: 512 * MiB, diskBytes: 256 * MiB },
  ];
  assert.equal(jobSizeClass(classes, 1, 256 * MiB, 256 * MiB), 'small');
  assert.equal(jobSizeClass(classes, 1.5, 256 * MiB, 256 * MiB), 'large');
  assert.equal(jobSizeClass(classes, 1, 1024 * MiB, 256 * MiB), 'large');
  assert.equal(jobSizeClass(classes, 1, 256 * MiB, 512 * MiB), 'large');
  assert.equal(jobSizeClass(classes, 4, 256 * MiB, 256 * MiB), null);
  assert.equal(jobSizeClass([], 1, 1, 1), null);
});

test('one pass: 10 000 candidates are placed without sorting them', () => {
  const cands = Array.from({ length: 10_000 }, (_, i) => agent(i.toString(16).padStart(6, '0'), { running: 1 + (i % 7), load: warm(i === 9_999 ? 1 : 0) }));
  assert.equal(choosePlacement(cands, want), '00270f');
});

const MiB = 1024 * 1024;
const SMALL = { name: 'small', cpu: 1, memoryBytes: 512 * MiB, diskBytes: 256 * MiB };
const LARGE = { name: 'large', cpu: 2, memoryBytes: 2048 * MiB, diskBytes: 1024 * MiB };
const offers = (runtimes: AgentOffers['runtimes'], classes = [SMALL, LARGE]): AgentOffers => ({ runtimes, classes });
const sized = (o: Partial<PlacementWant> = {}, cpu = 1, memoryMiB = 256, diskMiB = 256): PlacementWant => ({ ...want, size: { cpu, memoryBytes: memoryMiB * MiB, diskBytes: diskMiB * MiB }, ...o });

test('an agent is chosen only if it offers the job\'s runtime and a class that fits it; one that does not say offers all', () => {
  const runcOnly = agent('aaaaaa', { load: { ...load(), offers: offers(['runc']) } });
  const crunSmall = agent('bbbbbb', { running: 9, load: { ...load(), offers: offers(['crun'], [SMALL]) } });
  assert.equal(choosePlacement([runcOnly, crunSmall], sized({ runtime: 'crun' })), 'bbbbbb', 'the only crun agent, though far busier');
  assert.equal(choosePlacement([runcOnly, crunSmall], sized({ runtime: 'runsc' })), null, 'nobody offers runsc');
  assert.equal(choosePlacement([runcOnly, crunSmall], sized({ runtime: 'crun' }, 2, 1024)), null, 'crun, but no class of the crun agent fits');
  assert.equal(choosePlacement([runcOnly, crunSmall], sized({}, 2, 1024)), 'aaaaaa');
  // Full, draining or removed agents stay out even when they are the only ones offering it.
  assert.equal(choosePlacement([runcOnly, { ...crunSmall, running: 10 }], sized({ runtime: 'crun' })), null);
  // An agent of an earlier build (no offers) takes anything, as before.
  const old = agent('cccccc', { running: 5 });
  assert.equal(choosePlacement([runcOnly, old], sized({ runtime: 'runsc' }, 64, 999_999)), 'cccccc');
  // A want without a size is checked on the runtime only.
  assert.equal(choosePlacement([crunSmall], { ...want, runtime: 'crun', sizeClass: 'large' }), 'bbbbbb');
});

test('warm cells count in the class the agent will take (its own smallest fit), not the control plane\'s guess', () => {
  // The control plane maps the job to 'small'; this agent's classes are named otherwise: its 'tiny' is what it takes.
  const tiny = { name: 'tiny', cpu: 1, memoryBytes: 256 * MiB, diskBytes: 256 * MiB };
  const own = agent('aaaaaa', { running: 5, load: { ...load([{ image: null, runtime: 'runc', sizeClass: 'tiny', cells: 1 }]), offers: offers(['runc'], [tiny, LARGE]) } });
  const other = agent('bbbbbb');
  const w = sized();
  assert.equal(offeredClass(own.load!.offers, w), 'tiny');
  assert.equal(choosePlacement([own, other], w), 'aaaaaa', 'its warm tiny cell counts');
  assert.equal(warmCells(own.load!, w, 'tiny'), 1);
  assert.equal(takeWarmCell(own.load!, w, 'tiny').warm[0]!.cells, 0);
  // A job too big for tiny goes to its large class, where it has no warm cell: the less loaded agent wins.
  assert.equal(offeredClass(own.load!.offers, sized({}, 1, 1024)), 'large');
  assert.equal(choosePlacement([own, other], sized({}, 1, 1024)), 'bbbbbb');
});

test('offeredClass and canRun: false for a runtime not offered or no class that fits; an agent that does not say runs all', () => {
  const o = offers(['runc', 'runsc'], [SMALL]);
  assert.equal(offeredClass(o, sized()), 'small');
  assert.equal(offeredClass(o, sized({ runtime: 'crun' })), false);
  assert.equal(offeredClass(o, sized({}, 1, 513)), false);
  assert.equal(offeredClass(undefined, sized({ sizeClass: 'whatever' })), 'whatever');
  assert.equal(canRun(o, 'runsc', { cpu: 0.5, memoryBytes: 64 * MiB, diskBytes: 16 * MiB }), true);
  assert.equal(canRun(o, 'runsc', { cpu: 1.5, memoryBytes: 64 * MiB, diskBytes: 16 * MiB }), false);
  assert.equal(canRun(offers([]), 'runc', { cpu: 1, memoryBytes: 1, diskBytes: 1 }), false, 'an agent whose host runs no runtime runs nothing');
  assert.equal(canRun(undefined, 'crun', { cpu: 1000, memoryBytes: 1, diskBytes: 1 }), true);
});

test('a job on an image goes only to an agent that has prepared it (when the candidate says which it has)', () => {
  const has = agent('aaaaaa', { running: 8, images: new Set([IMG]) });
  const lacks = agent('bbbbbb', { images: new Set() });
  const unknown = agent('cccccc', { running: 9 });
  assert.equal(choosePlacement([has, lacks], { ...want, image: IMG }), 'aaaaaa', 'the busier agent that has it');
  assert.equal(choosePlacement([lacks], { ...want, image: IMG }), null);
  assert.equal(choosePlacement([lacks, unknown], { ...want, image: IMG }), 'cccccc', 'an agent that does not say which images it has is not checked');
  assert.equal(choosePlacement([has, lacks], want), 'bbbbbb', 'the host root needs no image');
});
