// Pure parts of least privilege: object key rules, scope strings and checks, and the audit hash chain.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { keyProblem, prefixProblem } from '../../../src/control/data/object-key.js';
import { allows, parseScopes, scopeString } from '../../../src/control/tokens/scopes.js';
import { auditInput, chainParts, ChainVerifier, sealEvent, type AuditEvent, type AuditEventInput } from '../../../src/control/audit/chain.js';

test('object keys: relative names without traversal, empty segments, control characters or trailing slash', () => {
  for (const ok of ['a', 'in/data.csv', 'a b/c d.txt', 'ünïcödé/ключ', 'x..y/z', '.hidden']) assert.equal(keyProblem(ok), null, ok);
  for (const bad of ['', '/abs', '../x', 'a/../b', 'a/./b', 'a//b', 'dir/', 'x\u0000y', 'x\ny', 'a\\b', 'k'.repeat(1025)]) assert.notEqual(keyProblem(bad), null, JSON.stringify(bad));
  assert.equal(prefixProblem(''), null);
  assert.equal(prefixProblem('logs/'), null);
  assert.equal(prefixProblem('logs/2026-'), null);
  assert.notEqual(prefixProblem('../'), null);
});

test('scopes: read-write grants both actions; a scope covers keys under its prefix only', () => {
  const s = scopeString([{ prefix: 'in/', access: 'read' }, { prefix: 'out/', access: 'read-write' }]);
  assert.equal(s, 'data:read:in/ data:read:out/ data:write:out/');
  const scopes = parseScopes(s + ' openid data:delete:x');
  assert.equal(scopes.length, 3, 'unknown entries grant nothing');
  assert.ok(allows(scopes, 'read', 'in/a.csv'));
  assert.ok(!allows(scopes, 'write', 'in/a.csv'));
  assert.ok(allows(scopes, 'write', 'out/r'));
  assert.ok(!allows(scopes, 'read', 'input/x'), '"in/" does not cover "input/"');
  assert.ok(!allows(scopes, 'read', ''), 'listing the whole store needs a grant on ""');
  assert.ok(allows(parseScopes('data:read:'), 'read', 'anything'));
});

test('audit chain: intact chains verify; altered, removed or reordered events are found at the first broken link', () => {
  const events: AuditEvent[] = [];
  for (let i = 0; i < 5; i++) events.push(sealEvent({ type: 'token.minted', actor: 'system', workspaceId: 'ws', subject: `job_${i}`, details: { n: i, nested: { b: 1, a: 2 } } }, events.at(-1) ?? null));
  const verify = (list: AuditEvent[]) => {
    const v = new ChainVerifier();
    for (const e of list) v.add(e);
    return v.verdict();
  };
  assert.deepEqual(verify(events), { ok: true, events: 5, lastHash: events[4]!.hash });
  const altered = events.map((e) => (e.seq === 3 ? { ...e, details: { ...e.details, n: 99 } } : e));
  assert.deepEqual(pick(verify(altered)), { ok: false, brokenAt: 3 });
  const removed = events.filter((e) => e.seq !== 2);
  assert.deepEqual(pick(verify(removed)), { ok: false, brokenAt: 3 });
  // Rewriting an event and its own hash is caught by the next event's link.
  const rehashed = events.map((e) => (e.seq === 2 ? sealEvent({ ...e, subject: 'forged' }, events[0]!, new Date(e.time)) : e));
  assert.deepEqual(pick(verify(rehashed)), { ok: false, brokenAt: 3 });
  // Key order inside details does not matter (canonical JSON).
  const reordered = events.map((e) => (e.seq === 4 ? { ...e, details: { nested: { a: 2, b: 1 }, n: 3 } } : e));
  assert.equal(verify(reordered).ok, true);
});

function pick(v: { ok: boolean; brokenAt?: number }): { ok: boolean; brokenAt?: number } {
  return { ok: v.ok, brokenAt: v.brokenAt };
}

test('chainParts splits the canonical JSON eventHash hashes around the seq: a store can link an event after any last one', () => {
  const inputs: AuditEventInput[] = [
    { type: 'token.minted', actor: 'system', workspaceId: 'ws', subject: 'job_1', details: { n: 1, nested: { b: 1, a: [2, 'x'] } } },
    { type: 'wipe.done', actor: 'agent:a00001', workspaceId: null, subject: null, details: {} },
    { type: 'access.denied', actor: 'workload:job_2', workspaceId: 'ws', subject: 'x', details: { text: 'żółw ✓ "q" \\ \u2028 \n', seq: 7, time: 'inner' } },
  ];
  let prev: { seq: number; hash: string } | null = null;
  for (const [i, input] of inputs.entries()) {
    const time = new Date(1_800_000_000_000 + i);
    const e: AuditEvent = sealEvent(input, prev, time);
    const { pre, post } = chainParts(input, time.toISOString());
    const hash = createHash('sha256').update(`${e.prevHash}\n${pre}${e.seq}${post}`).digest('hex');
    assert.equal(hash, e.hash);
    prev = e;
  }
  assert.throws(() => chainParts({ ...inputs[0]!, details: { n: 1n } }, new Date().toISOString()), /BigInt/);
});

test('an event is hashed as its row stores it: details by their JSON (toJSON, undefined members), the five fields only', () => {
  const odd = { type: 'token.minted', actor: 'system', workspaceId: 'ws', subject: 'job_1', details: { at: new Date(0), gone: undefined, list: [1, undefined] }, extra: 'not stored' } as unknown as AuditEventInput;
  const e = sealEvent(odd, null);
  // What a store reads back: the row's columns, details parsed from the JSON it stored.
  const row: AuditEvent = { seq: e.seq, time: e.time, type: e.type, actor: e.actor, workspaceId: e.workspaceId, subject: e.subject, details: JSON.parse(JSON.stringify(e.details)) as Record<string, unknown>, prevHash: e.prevHash, hash: e.hash };
  const v = new ChainVerifier();
  v.add(row);
  assert.deepEqual(v.verdict(), { ok: true, events: 1, lastHash: e.hash });
  assert.deepEqual(e.details, { at: '1970-01-01T00:00:00.000Z', list: [1, null] });
  const { pre, post } = chainParts(auditInput(odd), e.time);
  assert.equal(createHash('sha256').update(`${e.prevHash}\n${pre}${e.seq}${post}`).digest('hex'), e.hash);
  for (const details of [undefined, () => 1, 'text', [1]]) {
    assert.throws(() => sealEvent({ ...odd, details: details as unknown as Record<string, unknown> }, null), /audit details must be a JSON object/);
  }
});
