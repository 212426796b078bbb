// Job requests get defaults and are held to the workspace's limits; cwd cannot escape /work or /tmp.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { JobRequestSchema, resolveJobRequest } from '../../src/control/jobs/job-request.js';
import { ApiError } from '../../src/shared/errors.js';
import { ConfigSchema } from '../../src/shared/config.js';
import type { Workspace } from '../../src/control/model.js';

const ws: Workspace = { id: 'ws_1', name: 'w', createdAt: '', maxCpu: 2, maxMemoryBytes: 1024 * 1024 * 1024, maxTimeoutSeconds: 60, maxDiskBytes: 512 * 1024 * 1024 };
const defaults = { cpu: 1, memoryMiB: 256, timeoutSeconds: 30, diskMiB: 256, outputLimitBytes: 64 << 20, runtime: 'runc' as const };
const code = (f: () => unknown) => {
  try {
    f();
  } catch (e) {
    return e instanceof ApiError ? e.code : 'other';
  }
  return 'none';
};

test('defaults apply', () => {
  const r = resolveJobRequest(JobRequestSchema.parse({ command: ['true'] }), ws, defaults);
  assert.deepEqual(r, { command: ['true'], env: {}, cwd: '/work', cpu: 1, memoryBytes: 256 * 1024 * 1024, timeoutSeconds: 30, diskBytes: 256 * 1024 * 1024, runtime: 'runc', dataGrants: [] });
});

test('a job that names no runtime gets the configured default; the shipped default is crun', () => {
  assert.equal(resolveJobRequest(JobRequestSchema.parse({ command: ['true'] }), ws, { ...defaults, runtime: 'crun' }).runtime, 'crun');
  assert.equal(resolveJobRequest(JobRequestSchema.parse({ command: ['true'], runtime: 'runc' }), ws, { ...defaults, runtime: 'crun' }).runtime, 'runc');
  assert.equal(ConfigSchema.parse({}).limits.defaultRuntime, 'crun');
});

test('data grants: prefixes are checked like object keys and may not hold whitespace', () => {
  const parse = (data: unknown) => JobRequestSchema.parse({ command: ['true'], data });
  assert.deepEqual(resolveJobRequest(parse([{ prefix: 'in/', access: 'read' }]), ws, defaults).dataGrants, [{ prefix: 'in/', access: 'read' }]);
  for (const prefix of ['../', 'a b/', '/abs', 'a//b/']) assert.equal(code(() => resolveJobRequest(parse([{ prefix, access: 'read' }]), ws, defaults)), 'invalid_request', prefix);
  assert.throws(() => parse([{ prefix: 'x', access: 'admin' }]));
});

test('limits and runtimes are checked', () => {
  const parse = (o: object) => JobRequestSchema.parse({ command: ['true'], ...o });
  assert.equal(code(() => resolveJobRequest(parse({ cpu: 3 }), ws, defaults)), 'limit_exceeded');
  assert.equal(code(() => resolveJobRequest(parse({ cpu: 0 }), ws, defaults)), 'limit_exceeded');
  assert.equal(code(() => resolveJobRequest(parse({ memoryMiB: 2048 }), ws, defaults)), 'limit_exceeded');
  assert.equal(code(() => resolveJobRequest(parse({ timeoutSeconds: 61 }), ws, defaults)), 'limit_exceeded');
  assert.equal(code(() => resolveJobRequest(parse({ diskMiB: 1024 }), ws, defaults)), 'limit_exceeded');
  assert.equal(code(() => resolveJobRequest(parse({ runtime: 'docker' }), ws, defaults)), 'unsupported_runtime');
  assert.equal(code(() => resolveJobRequest(parse({ runtime: 'runsc' }), ws, defaults)), 'none');
});

test('cwd stays under /work or /tmp', () => {
  const cwd = (c: string) => code(() => resolveJobRequest(JobRequestSchema.parse({ command: ['true'], cwd: c }), ws, defaults));
  for (const ok of ['/work', '/work/a/b', '/tmp', '/tmp/x']) assert.equal(cwd(ok), 'none', ok);
  for (const bad of ['/proc/self', '/', 'work', '/work/../proc', '/workx', '/tmp/../etc']) assert.equal(cwd(bad), 'invalid_request', bad);
});

test('the schema refuses unknown fields, empty commands and reserved env names', () => {
  assert.equal(JobRequestSchema.safeParse({ command: ['true'], extra: 1 }).success, false);
  assert.equal(JobRequestSchema.safeParse({ command: [] }).success, false);
  assert.equal(JobRequestSchema.safeParse({ command: [''] }).success, false);
  assert.equal(JobRequestSchema.safeParse({ command: ['true'], env: { CLEANROOM_X: '1' } }).success, false);
  assert.equal(JobRequestSchema.safeParse({ command: ['true'], env: { '1BAD': '1' } }).success, false);
  assert.equal(JobRequestSchema.safeParse({ command: ['true'], env: { GOOD_1: 'v' } }).success, true);
});
