// Host uid ranges are host-global: agents sharing a host claim theirs in one directory, so two agents (even starting
// from the same slot) never hand out the same range while it is live; an agent's restart releases its own stale
// claims and never another agent's.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readdirSync, readlinkSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { releaseUidClaims, UidRanges } from '../../src/agent/cells/uid-ranges.js';

test('two agents on one host never hold the same uid range at once, whatever their offsets', () => {
  const dir = mkdtempSync('/tmp/cleanroom-uids-');
  try {
    const a = new UidRanges(5, { dir, agentId: 'aaaaaa' });
    const b = new UidRanges(5, { dir, agentId: 'bbbbbb' });
    const live = new Map<number, string>();
    // Interleaved churn: each takes, some are released, the walkers cross each other's ranges.
    for (let i = 0; i < 200; i++) {
      for (const [r, who] of [[a, 'a'], [b, 'b']] as const) {
        const base = r.acquire();
        assert.equal(live.has(base), false, `range ${base} handed to ${who} while ${live.get(base)} holds it`);
        live.set(base, who);
        if (i % 3 === 0) {
          r.release(base);
          live.delete(base);
        }
      }
    }
    // The claims on disk are exactly the live ranges, each naming its holder.
    const claimed = readdirSync(dir).map((n) => readlinkSync(join(dir, n)));
    assert.equal(claimed.length, live.size);
    assert.equal(claimed.filter((x) => x === 'aaaaaa').length, [...live.values()].filter((x) => x === 'a').length);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("an agent's new allocator releases its own stale claims (cells gone after reconcile), never another agent's", () => {
  const dir = mkdtempSync('/tmp/cleanroom-uids-');
  try {
    const a = new UidRanges(0, { dir, agentId: 'aaaaaa' });
    const b = new UidRanges(0, { dir, agentId: 'bbbbbb' });
    const fromA = [a.acquire(), a.acquire()];
    const fromB = b.acquire();
    assert.ok(!fromA.includes(fromB));
    // A crashes and starts again: its claims go, B's stays.
    const a2 = new UidRanges(0, { dir, agentId: 'aaaaaa' });
    assert.deepEqual(readdirSync(dir).map((n) => readlinkSync(join(dir, n))), ['bbbbbb']);
    assert.equal(a2.acquire(), fromA[0]);
    assert.notEqual(a2.acquire(), fromB);
    // `cleanroom down` for B (its reconcile found nothing left) releases B's.
    assert.equal(releaseUidClaims({ dir, agentId: 'bbbbbb' }), 1);
    assert.deepEqual(readdirSync(dir).map((n) => readlinkSync(join(dir, n))), ['aaaaaa', 'aaaaaa']);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
