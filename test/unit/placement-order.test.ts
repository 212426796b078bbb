// PlacementOrder reads agents least loaded first and stops at the first with a warm cell that fits: its choice must be
// choosePlacement's (the rules of placement.ts) for every fleet and want, also as loads change between placements.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { choosePlacement, type AgentCandidate, type PlacementWant } from '../../src/control/agents/placement.js';
import { PlacementOrder } from '../../src/control/agents/placement-order.js';
import type { AgentLoad } from '../../src/shared/wire.js';

const IMG = `sha256:${'b'.repeat(64)}`;

/** rng is a small seeded generator, so a failure names a fleet that can be rebuilt. */
function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return s / 2 ** 32;
  };
}

function randomAgent(r: () => number, i: number): AgentCandidate {
  const capacity = [0, 1, 2, 4, 4, 4, 8][Math.floor(r() * 7)]!;
  const warm: AgentLoad['warm'] = [];
  if (r() < 0.6) warm.push({ image: r() < 0.7 ? null : IMG, runtime: r() < 0.8 ? 'runc' : 'runsc', sizeClass: r() < 0.8 ? 'small' : 'large', cells: Math.floor(r() * 3) });
  const offers = r() < 0.3 ? { runtimes: r() < 0.5 ? (['runc'] as const).slice() : (['runc', 'runsc'] as const).slice(), classes: [{ name: 'small', cpu: 1, memoryBytes: 256 << 20, diskBytes: 1 << 30 }] } : undefined;
  return {
    agentId: (0xa00000 + i).toString(16),
    capacity,
    running: Math.floor(r() * (capacity + 1)),
    draining: r() < 0.05,
    removed: r() < 0.03,
    load: r() < 0.05 ? null : { running: 0, capacity, preparing: 0, warm, ...(offers ? { offers } : {}) },
    images: r() < 0.5 ? new Set([IMG]) : new Set(),
  };
}

const wants: PlacementWant[] = [
  { image: null, runtime: 'runc', sizeClass: 'small' },
  { image: null, runtime: 'runsc', sizeClass: 'small' },
  { image: IMG, runtime: 'runc', sizeClass: 'small', size: { cpu: 1, memoryBytes: 128 << 20, diskBytes: 1 << 29 } },
  { image: null, runtime: 'runc', sizeClass: null },
  { image: null, runtime: 'runc', sizeClass: 'large', size: { cpu: 4, memoryBytes: 4 << 30, diskBytes: 1 << 30 } },
];

test('the order\'s choice is choosePlacement\'s, for random fleets, wants and load changes', () => {
  for (let seed = 1; seed <= 60; seed++) {
    const r = rng(seed);
    const agents = Array.from({ length: 1 + Math.floor(r() * 40) }, (_, i) => randomAgent(r, i));
    const order = new PlacementOrder<AgentCandidate>((c) => c);
    for (const a of agents) order.update(a);
    for (let step = 0; step < 80; step++) {
      const want = wants[Math.floor(r() * wants.length)]!;
      const expected = choosePlacement(agents, want);
      assert.equal(order.choose(want, () => true)?.agentId ?? null, expected, `seed ${seed}, step ${step}`);
      // Place it (as the hub does), or end a job somewhere, or change an agent's capacity.
      // Only the agent that changed is updated, as the hub does.
      const a = agents[Math.floor(r() * agents.length)]!;
      const roll = r();
      let changed: AgentCandidate | null = a;
      if (roll < 0.5 && expected) (changed = agents.find((x) => x.agentId === expected)!).running++;
      else if (roll < 0.8 && a.running > 0) a.running--;
      else if (roll < 0.8) changed = null;
      else a.capacity = [0, 1, 2, 4, 8][Math.floor(r() * 5)]!;
      if (changed) order.update(changed);
      assert.deepEqual(order.stale(), [], `seed ${seed}, step ${step}`);
    }
  }
});

test('least loaded first, ties by hash; a deleted or dead item is not chosen', () => {
  const mk = (id: string, running: number, capacity = 4): AgentCandidate => ({ agentId: id, capacity, running, draining: false, removed: false, load: { running, capacity, preparing: 0, warm: [] } });
  const a = mk('aaaaaa', 2);
  const b = mk('bbbbbb', 1);
  const c = mk('cccccc', 3, 8);
  const order = new PlacementOrder<AgentCandidate>((x) => x);
  for (const x of [a, b, c]) order.update(x);
  assert.deepEqual(order.items().map((x) => x.agentId).slice(0, 1), ['bbbbbb']);
  assert.equal(order.choose(wants[0]!, () => true), b);
  assert.equal(order.choose(wants[0]!, (x) => x !== b), c);
  order.delete(b);
  assert.equal(order.size, 2);
  assert.equal(order.choose(wants[0]!, () => true), c);
  c.running = 8;
  order.update(c);
  assert.equal(order.choose(wants[0]!, () => true), a);
});
