// Pure helpers: sizes and durations, size classes, API key format, uid ranges, config validation, seccomp profile shape.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { parseDurationSeconds, parseSize } from '../../src/shared/units.js';
import { pickSizeClass } from '../../src/agent/cells/size-class.js';
import { mintApiKey, parseApiKey, secretMatches } from '../../src/control/auth/api-keys.js';
import { UidRanges } from '../../src/agent/cells/uid-ranges.js';
import { loadConfig } from '../../src/shared/config.js';
import { cellSeccompProfile, FORBIDDEN_SYSCALLS } from '../../src/agent/runtime/seccomp.js';
import { exitCodeOf } from '../../src/cli/commands/run.js';
import type { Job } from '../../src/sdk/client.js';
import { RUNTIMES } from '../../src/shared/wire.js';

test('sizes and durations', () => {
  assert.equal(parseSize('256M'), 256 * 1024 * 1024);
  assert.equal(parseSize('1GiB'), 1024 ** 3);
  assert.equal(parseSize('4096'), 4096);
  assert.equal(parseSize('lots'), null);
  assert.equal(parseDurationSeconds('90s'), 90);
  assert.equal(parseDurationSeconds('5m'), 300);
  assert.equal(parseDurationSeconds('1h'), 3600);
  assert.equal(parseDurationSeconds('soon'), null);
});

test('the smallest fitting size class is picked', () => {
  const classes = [
    { name: 'large', cpu: 2, memoryBytes: 2048, pids: 1, diskBytes: 1024 },
    { name: 'small', cpu: 1, memoryBytes: 512, pids: 1, diskBytes: 256 },
  ];
  assert.equal(pickSizeClass(classes, 1, 256, 1)?.name, 'small');
  assert.equal(pickSizeClass(classes, 1.5, 256, 1)?.name, 'large');
  assert.equal(pickSizeClass(classes, 1, 1024, 1)?.name, 'large');
  assert.equal(pickSizeClass(classes, 1, 256, 512)?.name, 'large');
  assert.equal(pickSizeClass(classes, 4, 1, 1), null);
});

test('API keys: only a hash is stored, and only the right secret matches', () => {
  const k = mintApiKey('ws_1', 'n', 'member');
  const p = parseApiKey(k.plaintext)!;
  assert.equal(JSON.stringify(k.record).includes(p.secret), false, 'the secret is stored');
  assert.equal(p.id, k.record.id);
  assert.equal(secretMatches(p.secret, k.record.secretHash), true);
  assert.equal(secretMatches(p.secret.replace(/.$/, (c) => (c === 'A' ? 'B' : 'A')), k.record.secretHash), false);
  assert.equal(parseApiKey('crk_short_x'), null);
});

test('uid ranges are distinct while in use and never include host root', () => {
  const r = new UidRanges(7);
  const a = r.acquire();
  const b = r.acquire();
  assert.notEqual(a, b);
  for (const base of [a, b]) assert.ok(base >= 1 << 24, `uid range at ${base} overlaps the host's own uids`);
  r.release(a);
  assert.notEqual(r.acquire(), b);
});

test('config: defaults, then unknown keys and bad cross-references are refused with the path', () => {
  const dir = mkdtempSync('/tmp/cleanroom-config-');
  try {
    const path = join(dir, 'config.json');
    const c = loadConfig(path);
    assert.equal(c.control.apiPort, 7443);
    assert.ok(Object.isFrozen(c.agent.pool));
    writeFileSync(path, JSON.stringify({ control: { apiPortt: 1 } }));
    assert.throws(() => loadConfig(path), /apiPortt/);
    writeFileSync(path, JSON.stringify({ agent: { pool: [{ runtime: 'runc', class: 'huge', warm: 1 }] } }));
    assert.throws(() => loadConfig(path), /unknown class "huge"/);
    // Every listener deadline is set and bounded; the headers are part of the request.
    for (const ms of Object.values(c.control.timeouts)) assert.ok(ms > 0 && ms <= 600_000);
    writeFileSync(path, JSON.stringify({ control: { timeouts: { headersMs: 20_000, requestMs: 10_000 } } }));
    assert.throws(() => loadConfig(path), /headersMs must not exceed requestMs/);
    writeFileSync(path, JSON.stringify({ control: { timeouts: { requestMs: 0 } } }));
    assert.throws(() => loadConfig(path), /control\.timeouts\.requestMs/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('the seccomp profile is default-deny and allows none of the forbidden calls', () => {
  for (const runtime of RUNTIMES) {
    const p = cellSeccompProfile(runtime);
    assert.equal(p.defaultAction, 'SCMP_ACT_ERRNO');
    assert.deepEqual(p.architectures, ['SCMP_ARCH_X86_64'], 'only the native ABI: i386 and x32 calls must not reach the allowlist');
    const allowed = new Set(p.syscalls.filter((s) => s.action === 'SCMP_ACT_ALLOW' && !s.args).flatMap((s) => s.names));
    for (const name of FORBIDDEN_SYSCALLS) assert.equal(allowed.has(name), false, name);
    const clone = p.syscalls.find((s) => s.names.includes('clone'));
    assert.ok(clone?.args?.length, 'clone is allowed only without namespace flags');
  }
});

test('job ends map to process exit codes', () => {
  const j = (status: Job['status'], exitCode: number | null = null, signal: number | null = null) => ({ status, exitCode, signal }) as Job;
  assert.equal(exitCodeOf(j('succeeded', 0)), 0);
  assert.equal(exitCodeOf(j('failed', 3)), 3);
  assert.equal(exitCodeOf(j('failed', null, 9)), 137);
  assert.equal(exitCodeOf(j('timeout')), 124);
  assert.equal(exitCodeOf(j('oom')), 137);
  assert.equal(exitCodeOf(j('cancelled')), 130);
  assert.equal(exitCodeOf(j('error')), 125);
});
