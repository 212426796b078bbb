// Sandbox requests get defaults, the workspace's limits (capped at 24 h) and bounded metadata; processes get argv or a shell.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { resolveSandboxRequest, SandboxRequestSchema, SANDBOX_MAX_TIMEOUT_SECONDS, checkTimeout } from '../../src/control/sandboxes/sandbox-request.js';
import { ProcessRequestSchema, specOf } from '../../src/control/api/routes/sandbox-processes.js';
import { ApiError } from '../../src/shared/errors.js';
import type { Workspace } from '../../src/control/model.js';

const ws: Workspace = { id: 'ws_1', name: 'w', createdAt: '', maxCpu: 2, maxMemoryBytes: 1024 * 1024 * 1024, maxTimeoutSeconds: 3600, maxDiskBytes: 512 * 1024 * 1024 };
const big: Workspace = { ...ws, maxTimeoutSeconds: 7 * 86_400 };
const defaults = { cpu: 1, memoryMiB: 256, timeoutSeconds: 30, diskMiB: 256, outputLimitBytes: 64 << 20, runtime: 'runc' as const };
const code = (f: () => unknown) => {
  try {
    f();
  } catch (e) {
    return e instanceof ApiError ? e.code : 'other';
  }
  return 'none';
};

test('defaults: 300 s, no command, never idle, metadata empty', () => {
  const r = resolveSandboxRequest(SandboxRequestSchema.parse({}), ws, defaults);
  assert.equal(r.spec.timeoutSeconds, 300);
  assert.deepEqual(r.spec.command, []);
  assert.deepEqual(r.sandbox, { metadata: {}, idleTimeoutSeconds: 0, endsAt: null, endRequested: null });
});

test('timeouts: within the workspace limit, never past 24 h', () => {
  assert.equal(code(() => resolveSandboxRequest(SandboxRequestSchema.parse({ timeoutSeconds: 3601 }), ws, defaults)), 'limit_exceeded');
  assert.equal(checkTimeout(big, SANDBOX_MAX_TIMEOUT_SECONDS), SANDBOX_MAX_TIMEOUT_SECONDS);
  assert.equal(code(() => checkTimeout(big, SANDBOX_MAX_TIMEOUT_SECONDS + 1)), 'limit_exceeded');
  assert.equal(code(() => checkTimeout(ws, 0)), 'limit_exceeded');
});

test('metadata is bounded; env names follow the job rules; unknown fields are refused', () => {
  assert.equal(SandboxRequestSchema.safeParse({ metadata: Object.fromEntries(Array.from({ length: 65 }, (_, i) => [`k${i}`, 'v'])) }).success, false);
  assert.equal(SandboxRequestSchema.safeParse({ metadata: { k: 'x'.repeat(1025) } }).success, false);
  assert.equal(SandboxRequestSchema.safeParse({ metadata: { 'a\nb': 'v' } }).success, false);
  assert.equal(SandboxRequestSchema.safeParse({ env: { CLEANROOM_X: '1' } }).success, false);
  assert.equal(SandboxRequestSchema.safeParse({ bogus: 1 }).success, false);
  assert.equal(code(() => resolveSandboxRequest(SandboxRequestSchema.parse({ memoryMiB: 4096 }), ws, defaults)), 'limit_exceeded');
});

test('processes: argv or shell (exactly one), cwd absolute without ..', () => {
  assert.equal(ProcessRequestSchema.safeParse({}).success, false);
  assert.equal(ProcessRequestSchema.safeParse({ cmd: ['a'], shell: 'b' }).success, false);
  assert.deepEqual(specOf(ProcessRequestSchema.parse({ shell: 'echo hi' })).argv, ['/bin/sh', '-c', 'echo hi']);
  const s = specOf(ProcessRequestSchema.parse({ cmd: ['ls'], timeoutSeconds: 1.5, pty: { cols: 80, rows: 24 } }));
  assert.deepEqual({ cwd: s.cwd, timeoutMs: s.timeoutMs, keepAlive: s.keepAlive, stdin: s.stdin }, { cwd: '/work', timeoutMs: 1500, keepAlive: true, stdin: false });
  assert.equal(code(() => specOf(ProcessRequestSchema.parse({ cmd: ['ls'], cwd: '/work/../etc' }))), 'invalid_request');
  assert.equal(code(() => specOf(ProcessRequestSchema.parse({ cmd: ['ls'], cwd: 'rel' }))), 'invalid_request');
});
