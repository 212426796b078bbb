/** servedOpenApiDocument builds the API server on a throw-away store and returns the OpenAPI document it serves. */
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadConfig } from '../shared/config.js';
import { dataPaths } from '../shared/paths.js';
import { ensurePki } from '../supervisor/pki.js';
import { AgentHub } from '../control/agents/agent-hub.js';
import { createServices } from '../control/services.js';
import { SqliteStore } from '../control/store/sqlite-store.js';
import { buildApiServer } from '../control/api/server.js';

/** servedOpenApiDocument returns the document `GET /openapi.json` answers with, and the routes fastify registered. */
export async function servedOpenApiDocument(): Promise<{ doc: Record<string, unknown>; served: string[] }> {
  const dir = mkdtempSync(join(tmpdir(), 'cleanroom-openapi-'));
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
    const doc = routes.openapi();
    await app.close();
    await agents.close().catch(() => {});
    return { doc, served };
  } finally {
    await store.close();
    rmSync(dir, { recursive: true, force: true });
  }
}
