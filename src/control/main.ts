/** The control plane process: unprivileged; HTTPS API for users, mutual-TLS channel for agents. */
import { parseArgs } from 'node:util';
import { readFileSync } from 'node:fs';
import pino from 'pino';
import { loadConfig } from '../shared/config.js';
import { dataPaths, DEFAULT_DATA_DIR } from '../shared/paths.js';
import { SqliteStore } from './store/sqlite-store.js';
import { OutputHub } from './jobs/output-hub.js';
import { JobService } from './jobs/job-service.js';
import { TenancyService } from './tenancy/tenancy-service.js';
import { NetworkPolicyService } from './network/network-policy-service.js';
import { AgentHub } from './agents/agent-hub.js';
import { buildApiServer } from './api/server.js';

async function main(): Promise<void> {
  const { values } = parseArgs({ options: { 'data-dir': { type: 'string' } } });
  const paths = dataPaths(values['data-dir'] ?? process.env.CLEANROOM_DATA_DIR ?? DEFAULT_DATA_DIR);
  const config = loadConfig(paths.config);
  const logger = pino({ base: { proc: 'control' } });
  const log = (msg: string, extra?: object) => logger.info(extra ?? {}, msg);

  const store = new SqliteStore(paths.control.db);
  const hub = new OutputHub();
  const l = config.limits;
  const network = new NetworkPolicyService(store);
  const jobs = new JobService(store, hub, { cpu: l.defaultCpu, memoryMiB: l.defaultMemoryMiB, timeoutSeconds: l.defaultTimeoutSeconds, diskMiB: l.defaultDiskMiB }, network);
  const tenancy = new TenancyService(store, { maxCpu: l.maxCpu, maxMemoryMiB: l.maxMemoryMiB, maxTimeoutSeconds: l.maxTimeoutSeconds, maxDiskMiB: l.maxDiskMiB });
  const tls = { ca: readFileSync(paths.pki.caCert, 'utf8'), cert: readFileSync(paths.pki.serverCert, 'utf8'), key: readFileSync(paths.pki.serverKey, 'utf8') };
  const agents = new AgentHub(tls, jobs, network, config.control.agentGraceMs, log);
  jobs.attach(agents);
  const { app } = buildApiServer({ tls, tenancy, jobs, network, hub, agents, log });

  // Jobs that were in flight when the control plane stopped wait for their agent's hello to be judged.
  const agentPort = await agents.listen(config.control.host, config.control.agentPort);
  await app.listen({ host: config.control.host, port: config.control.apiPort });
  log('control plane listening', { api: app.server.address(), agentPort });

  let stopping = false;
  const stop = async () => {
    if (stopping) return;
    stopping = true;
    // Live log streams (SSE) keep connections open; do not wait for them forever.
    setTimeout(() => process.exit(0), 3000).unref();
    await app.close();
    await agents.close();
    await store.close();
    process.exit(0);
  };
  process.on('SIGTERM', () => void stop());
  process.on('SIGINT', () => void stop());
}

main().catch((e: Error) => {
  process.stderr.write(`cleanroom control plane: ${e.message}\n`);
  process.exit(1);
});
