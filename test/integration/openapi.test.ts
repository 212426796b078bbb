// The served OpenAPI document describes exactly the routes the server answers.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { dataPaths } from '../../src/shared/paths.js';
import { ensurePki } from '../../src/supervisor/pki.js';
import { join } from 'node:path';
import { buildApiServer } from '../../src/control/api/server.js';
import { SqliteStore } from '../../src/control/store/sqlite-store.js';
import { randomBytes } from 'node:crypto';
import { AgentHub } from '../../src/control/agents/agent-hub.js';
import { createServices } from '../../src/control/services.js';
import { loadConfig } from '../../src/shared/config.js';

test('OpenAPI paths and fastify routes are the same set', async () => {
  const dir = mkdtempSync('/tmp/cleanroom-openapi-');
  const store = new SqliteStore(join(dir, 'db'));
  try {
    const config = loadConfig(join(dir, 'no-config.json'));
    const services = createServices({ store, config, kek: randomBytes(32), objectsDir: join(dir, 'objects'), imagesDir: join(dir, 'images'), defaultImageSource: join(dir, 'no-layout') });
    const paths = dataPaths(dir);
    await ensurePki(paths, 0, 0, ['127.0.0.1']);
    const tls = { ca: readFileSync(paths.pki.caCert, 'utf8'), cert: readFileSync(paths.pki.serverCert, 'utf8'), key: readFileSync(paths.pki.serverKey, 'utf8') };
    const agents = new AgentHub(tls, services.jobs, services.network, 1000, () => {});
    const served: string[] = [];
    const { app, routes } = buildApiServer({ tls, timeouts: config.control.timeouts, services, agents, log: () => {}, onRoute: (method, url) => served.push(`${method} ${url}`) });
    await app.ready();
    const doc = routes.openapi() as { paths: Record<string, Record<string, { operationId: string; responses: Record<string, unknown> }>> };
    const documented = Object.entries(doc.paths).flatMap(([p, ops]) => Object.keys(ops).map((m) => `${m.toUpperCase()} ${p.replace(/\{key\}$/, '*').replace(/\{(\w+)\}/g, ':$1')}`));
    const actual = served.filter((r) => !r.startsWith('HEAD '));
    assert.deepEqual([...documented].sort(), [...actual].sort());
    const ids = Object.values(doc.paths).flatMap((ops) => Object.values(ops).map((o) => o.operationId));
    assert.equal(new Set(ids).size, ids.length, 'operationIds are unique');
    for (const ops of Object.values(doc.paths)) for (const op of Object.values(ops)) assert.ok(Object.keys(op.responses).length > 0);
    await app.close();
    await agents.close().catch(() => {});
  } finally {
    await store.close();
    rmSync(dir, { recursive: true, force: true });
  }
});
