// The served OpenAPI document describes exactly the routes the server answers, and the SDK's generated types are its own.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { servedOpenApiDocument } from '../../src/tools/served-openapi.js';
import { GENERATED_PATH, generateSdkTypes } from '../../src/tools/gen-sdk.js';
import { REPO_ROOT } from '../support/cluster.js';

test('OpenAPI paths and fastify routes are the same set', async () => {
  const { doc: raw, served } = await servedOpenApiDocument();
  const doc = raw as { paths: Record<string, Record<string, { operationId: string; responses: Record<string, unknown> }>> };
  const documented = Object.entries(doc.paths).flatMap(([p, ops]) => Object.keys(ops).map((m) => `${m.toUpperCase()} ${p.replace(/\{key\}$/, '*').replace(/\{(\w+)\}/g, ':$1')}`));
  const actual = served.filter((r) => !r.startsWith('HEAD '));
  assert.deepEqual([...documented].sort(), [...actual].sort());
  const ids = Object.values(doc.paths).flatMap((ops) => Object.values(ops).map((o) => o.operationId));
  assert.equal(new Set(ids).size, ids.length, 'operationIds are unique');
  for (const ops of Object.values(doc.paths)) for (const op of Object.values(ops)) assert.ok(Object.keys(op.responses).length > 0);
  // Every sandbox operation is in the document.
  for (const id of ['createSandbox', 'listSandboxes', 'getSandbox', 'deleteSandbox', 'setSandboxTimeout', 'startProcess', 'listProcesses', 'getProcess', 'streamProcessOutput', 'writeProcessStdin', 'signalProcess', 'resizeProcess', 'processSocket', 'readSandboxFile', 'writeSandboxFile', 'listSandboxFiles', 'statSandboxFile', 'makeSandboxDir', 'removeSandboxFile', 'renameSandboxFile']) {
    assert.ok(ids.includes(id), `${id} is documented`);
  }
});

test('the SDK types in src/sdk/generated are generated from the served document (npm run gen:sdk when this fails)', async () => {
  const committed = readFileSync(join(REPO_ROOT, GENERATED_PATH), 'utf8');
  assert.ok(committed === (await generateSdkTypes()), `${GENERATED_PATH} is stale: run npm run gen:sdk and commit it`);
});
