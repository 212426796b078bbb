// The agent's load reports (Contract W): changes within the minimum interval are coalesced into one report of the
// latest load; an unchanged load is not sent on a change notice; the periodic report goes out changed or not.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { LoadReporter } from '../../src/agent/load-reporter.js';
import type { AgentLoad, AgentToControl } from '../../src/shared/wire.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

test('a burst of changes is one report of the latest load, at most one per interval; the heartbeat always reports', async () => {
  let load: AgentLoad = { running: 0, capacity: 4, preparing: 0, warm: [] };
  const sent: AgentLoad[] = [];
  const r = new LoadReporter({ load: () => load, send: (m: AgentToControl) => m.type === 'agent.load' && sent.push(m.load), minIntervalMs: 100, intervalMs: 400 });
  try {
    r.sentInHello(load);
    // Nothing changed: a change notice sends nothing.
    r.changed();
    await sleep(130);
    assert.equal(sent.length, 0);
    // Ten changes in a burst: one report, with the last value.
    for (let i = 1; i <= 10; i++) {
      load = { ...load, running: 1 + (i % 3) };
      r.changed();
    }
    await sleep(20);
    assert.equal(sent.length, 1, 'the first change of a quiet period goes out at once');
    load = { ...load, running: 4, warm: [{ image: null, runtime: 'runc', sizeClass: 'small', cells: 2 }] };
    r.changed();
    r.changed();
    await sleep(40);
    assert.equal(sent.length, 1, 'not again within the minimum interval');
    await sleep(100);
    assert.equal(sent.length, 2);
    assert.deepEqual(sent[1], load);
    // Unchanged: the heartbeat still reports it.
    await sleep(450);
    assert.ok(sent.length >= 3);
    assert.deepEqual(sent.at(-1), load);
  } finally {
    r.close();
  }
});
