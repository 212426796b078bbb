/** The control plane process: unprivileged; HTTPS API for users, mutual-TLS channel for agents. */
import { parseArgs } from 'node:util';
import { readFileSync } from 'node:fs';
import pino from 'pino';
import { loadConfig } from '../shared/config.js';
import { dataPaths, DEFAULT_DATA_DIR, imageDirs } from '../shared/paths.js';
import { openStore } from './store/open-store.js';
import { groupCommit } from './store/group-commit.js';
import { AgentHub } from './agents/agent-hub.js';
import { buildApiServer, buildDataServer } from './api/server.js';
import { loadKek } from './data/keyring.js';
import { createServices, type ControlServices } from './services.js';
import { startCluster } from './cluster/cluster.js';
import { SandboxForwarder } from './cluster/sandbox-forwarder.js';
import { envdSandboxIdOf } from './api/e2b/envd-gateway.js';

/** LOG_BUFFER_BYTES is the log output gathered before a write (below sonic-boom's maxWrite, 16 KiB); LOG_FLUSH_MS bounds how long a line waits for one. */
const LOG_BUFFER_BYTES = 8 * 1024;
const LOG_FLUSH_MS = 100;

async function main(): Promise<void> {
  const { values } = parseArgs({ options: { 'data-dir': { type: 'string' } } });
  const paths = dataPaths(values['data-dir'] ?? process.env.CLEANROOM_DATA_DIR ?? DEFAULT_DATA_DIR);
  const config = loadConfig(paths.config);
  // Buffered and written asynchronously: lines go out in writes of LOG_BUFFER_BYTES, or LOG_FLUSH_MS after they were
  // logged at the latest (a line per request was a write per request, on the event loop). pino flushes what is left
  // when the process exits (also on a crash); a SIGKILL may lose the last LOG_FLUSH_MS of lines.
  const logDest = pino.destination({ dest: 1, sync: false, minLength: LOG_BUFFER_BYTES });
  setInterval(() => {
    try {
      logDest.flush();
    } catch {
      // closed: the process is exiting, and its exit flushed what was left
    }
  }, LOG_FLUSH_MS).unref();
  const logger = pino({ base: { proc: 'control' } }, logDest);
  const log = (msg: string, extra?: object) => logger.info(extra ?? {}, msg);

  const opened = await openStore(config.store, paths.control.db, (e) => logger.warn({ error: e.message }, 'store: a pooled database connection broke'));
  // Opt-in: SQLite group commit (group-commit.ts) cut the control plane's CPU per job by a quarter under a fleet's load
  // (bench/fleet.ts) but added ~3 ms to a quiet warm start's p50 (each awaited write waits for its turn's commit).
  const store = process.env.CLEANROOM_SQLITE_GROUP_COMMIT === '1' ? groupCommit(opened) : opened;
  const kek = loadKek(config.data.kekFile ?? paths.control.kek);
  const imageStore = imageDirs(paths, config.images);
  const services = createServices({ store, config, kek, objectsDir: paths.control.objects, imagesDir: imageStore.root, defaultImageSource: imageStore.defaultSource, log });
  await services.images.init();
  kek.fill(0);
  const tls = { ca: readFileSync(paths.pki.caCert, 'utf8'), cert: readFileSync(paths.pki.serverCert, 'utf8'), key: readFileSync(paths.pki.serverKey, 'utf8') };
  const classes = config.agent.classes.map((c) => ({ name: c.name, cpu: c.cpu, memoryBytes: c.memoryMiB * 1024 * 1024, diskBytes: c.diskMiB * 1024 * 1024 }));
  const agents = new AgentHub(tls, services.jobs, services.network, config.control.agentGraceMs, log, { classes });
  services.jobs.attach(agents);
  services.metrics.watchAgents(agents);
  services.images.attach(agents);
  agents.attachImages(services.images);
  services.connectAgents(agents);
  await services.sandboxes.restore();
  services.sandboxes.start();
  const timeouts = config.control.timeouts;
  // The replica set: a shared PostgreSQL store makes this one replica of several (SQLite: the only one).
  const cluster = await startCluster({
    store,
    replicaId: config.control.replicaId,
    advertiseUrl: config.control.advertiseUrl ?? `https://${config.control.host}:${config.control.apiPort}`,
    pgUrl: config.store.kind === 'postgres' ? config.store.url : null,
    jobs: services.jobs,
    agents,
    tenancy: services.tenancy,
    log,
  });
  const forwarder = cluster.shared
    ? new SandboxForwarder({ store, registry: cluster.registry, holds: (id) => agents.holds(id), envdSandboxIdOf, ca: tls.ca, log })
    : null;
  const { app } = buildApiServer({ tls, timeouts, services, agents, log, forwarder });
  const data = buildDataServer({ tls, timeouts, services, agents, log }).app;

  // Jobs that were in flight when the control plane stopped wait for their agent's hello to be judged.
  const agentPort = await agents.listen(config.control.host, config.control.agentPort);
  agents.expectAgents(await services.jobs.agentsWithUnfinishedJobs());
  await app.listen({ host: config.control.host, port: config.control.apiPort });
  await data.listen({ host: config.control.host, port: config.control.dataPort });
  log('control plane listening', { api: app.server.address(), data: data.server.address(), agentPort, store: config.store.kind });
  startRetention(services.jobs, config.limits.retentionDays * 86_400_000, log);
  // The default image (a public image) is imported from the layout the install step built, when it is absent.
  log(`images: ${await services.images.ensureDefaultImage()}`);

  let stopping = false;
  const stop = async () => {
    if (stopping) return;
    stopping = true;
    // Live log streams (SSE) keep connections open; do not wait for them forever.
    setTimeout(() => process.exit(0), 3000).unref();
    services.tokens.close();
    services.metrics.history.stop();
    await Promise.all([app.close(), data.close()]);
    await agents.close();
    forwarder?.close();
    await cluster.stop();
    await services.denials.flush();
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

/** RETENTION_SWEEP_MAX_MS bounds how long an expired job's output waits for the sweep that shreds it. */
const RETENTION_SWEEP_MAX_MS = 3600_000;

/** startRetention crypto-shreds the output and records of jobs past retention, at start and then periodically. */
function startRetention(jobs: ControlServices['jobs'], retentionMs: number, log: (msg: string, extra?: object) => void): void {
  const sweep = () =>
    jobs.expireEnded(retentionMs).then(
      (n) => n > 0 && log('retention: jobs shredded', { jobs: n }),
      (e: Error) => log('retention sweep failed', { error: e.message }),
    );
  void sweep();
  setInterval(sweep, Math.max(1000, Math.min(RETENTION_SWEEP_MAX_MS, retentionMs / 4))).unref();
}
