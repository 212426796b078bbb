/** The agent process: privileged, one per host; dials the control plane and runs cells. */
import { parseArgs } from 'node:util';
import { chmodSync, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import pino from 'pino';
import { loadConfig } from '../shared/config.js';
import { dataPaths, DEFAULT_DATA_DIR } from '../shared/paths.js';
import type { DeniedConnection, Runtime } from '../shared/wire.js';
import { OciRuntime } from './runtime/oci-runtime.js';
import { findExecutable, sealedExecutable } from './runtime/host-calls.js';
import type { CellRuntime } from './runtime/cell-runtime.js';
import { buildRootfs } from './runtime/rootfs.js';
import { CellPool } from './cells/pool.js';
import { UidRanges } from './cells/uid-ranges.js';
import { sizeClassesFromConfig } from './cells/size-class.js';
import { networkPrefix, reconcileHost } from './reconcile/reconcile.js';
import { reconcileNetworks } from './network/reconcile.js';
import { CellNetworkHost } from './network/cell-network.js';
import { Ipam } from './network/ipam.js';
import { checkStorageSupport } from './storage/doctor.js';
import { ensureSharedRoot, releaseSharedRoot } from './storage/shared-root.js';
import { reconcileVolumes } from './storage/reconcile.js';
import { ControlChannel } from './channel.js';
import { GatewayServices } from './gateway/gateway-services.js';
import { Agent } from './agent.js';

/** SHUTDOWN_DEADLINE_MS bounds a graceful stop; `cleanroom down` waits a little longer before SIGKILL. */
const SHUTDOWN_DEADLINE_MS = 25_000;

const REPO_ROOT = join(dirname(fileURLToPath(import.meta.url)), '../../..');

async function main(): Promise<void> {
  const { values } = parseArgs({ options: { 'data-dir': { type: 'string' } } });
  const paths = dataPaths(values['data-dir'] ?? process.env.CLEANROOM_DATA_DIR ?? DEFAULT_DATA_DIR);
  const config = loadConfig(paths.config);
  const logger = pino({ base: { proc: 'agent' } });
  const log = (msg: string, extra?: object) => logger.info(extra ?? {}, msg);

  // 0711 on the way down to every cell: runc resolves bind-mount sources as the cell's (unmapped) root.
  mkdirSync(paths.agent.dir, { recursive: true });
  chmodSync(paths.agent.dir, 0o711);
  if (!existsSync(paths.agent.id)) writeFileSync(paths.agent.id, randomBytes(3).toString('hex'));
  const agentId = readFileSync(paths.agent.id, 'utf8').trim();

  const runtimes = new Map<Runtime, CellRuntime>();
  for (const name of config.agent.runtimes) {
    // runc runs from a sealed in-memory copy: it then skips protecting itself anew for every container (runtime.c).
    const binary = name === 'runc' ? sealedExecutable(findExecutable('runc')) : undefined;
    runtimes.set(name, new OciRuntime({ name, binary, stateRoot: name === 'runc' ? paths.agent.runcRoot : paths.agent.runscRoot }));
  }
  // Never a silent fallback to unencrypted storage: no cells at all if the host cannot encrypt them.
  const support = await checkStorageSupport();
  if (!support.ok) {
    const failed = support.checks.filter((c) => !c.ok).map((c) => `${c.name}: ${c.detail}`);
    throw new Error(`this host cannot give cells encrypted storage; refusing to start cells (${failed.join('; ')}). Run: cleanroom doctor`);
  }
  const ipam = new Ipam({ pool: config.network.pool }); // validates the pool before anything is touched
  mkdirSync(paths.agent.volumes, { recursive: true, mode: 0o711 });
  await ensureSharedRoot(paths.agent.volumes);
  const report = await reconcileHost({ agentId, runtimes: runtimes.values(), cellsDir: paths.agent.cells, volumesDir: paths.agent.volumes });
  log('reconciled host', { containers: report.containers, cgroups: report.cgroups, directories: report.directories, wiped: report.wipes.length, wipeFailures: report.wipeFailures });
  const tls = {
    ca: readFileSync(paths.pki.caCert, 'utf8'),
    cert: readFileSync(paths.pki.agentCert, 'utf8'),
    key: readFileSync(paths.pki.agentKey, 'utf8'),
  };
  buildRootfs(paths.agent.rootfs, join(REPO_ROOT, 'build/cell-init'), tls.ca);

  const gateway = new GatewayServices({
    dataService: { host: config.control.host === '0.0.0.0' ? '127.0.0.1' : config.control.host, port: config.control.dataPort },
    dataPort: config.network.dataGatewayPort,
    dnsUpstream: config.network.dnsUpstream,
    log,
  });
  const networkHost = await CellNetworkHost.open({ prefix: networkPrefix(agentId), pool: config.network.pool, onGateway: (address) => gateway.openOn(address) });
  const classes = new Map(sizeClassesFromConfig(config.agent.classes).map((c) => [c.name, c]));
  const targets = config.agent.pool
    .filter((p) => runtimes.has(p.runtime))
    .map((p) => ({ runtime: p.runtime, sizeClass: classes.get(p.class)!, warm: p.warm }));
  const pool = new CellPool(
    {
      agentId,
      cellsDir: paths.agent.cells,
      volumesDir: paths.agent.volumes,
      wipeStats: { wiping: 0, wiped: report.wipes.length, wipeFailed: report.wipeFailures.length },
      networking: { host: networkHost, ipam, gateway },
      rootfs: paths.agent.rootfs,
      nofile: config.agent.nofile,
      exitGraceMs: config.agent.exitGraceMs,
    },
    runtimes,
    new UidRanges(parseInt(agentId, 16)),
    targets,
    log,
    config.agent.refillDelayMs,
  );

  const url = `wss://${config.control.host}:${config.control.agentPort}/v1/agent`;
  let agent: Agent | null = null;
  const channel = new ControlChannel(url, tls, () => agent!.hello());
  agent = new Agent(agentId, config, pool, channel, log);
  channel.on('open', () => log('connected to control plane', { url }));
  forwardDenied(networkHost, agent, channel);
  channel.on('dial-error', (e: Error) => log('control plane unreachable', { error: e.message }));
  // Receipts of crash-recovery wipes reach the control plane once the channel is up (queued until then).
  for (const w of report.wipes) channel.send({ type: 'job.wiped', jobId: w.jobId, receipt: w.receipt });
  pool.refill();
  channel.connect();

  let shuttingDown = false;
  const shutdown = async (signal: string) => {
    if (shuttingDown) return;
    shuttingDown = true;
    log('shutting down: wiping every cell', { signal });
    const force = setTimeout(() => {
      log('shutdown took too long; exiting (reconcile at next start cleans up)');
      process.exit(1);
    }, SHUTDOWN_DEADLINE_MS);
    try {
      await agent!.shutdown();
      // Every cell is wiped by now; a volume still bound to a loop device here is a leak the cells' own wipes missed.
      const swept = await reconcileVolumes(paths.agent.volumes, []);
      if (swept.wiped.some((r) => r.loopDevices.length > 0) || swept.failed.length) {
        log('swept leftover volumes at shutdown', { loopDevices: swept.wiped.flatMap((r) => r.loopDevices), failed: swept.failed.map((f) => `${f.volumeId}: ${f.error.message}`) });
      }
      await gateway.close();
      await networkHost.close();
      // With every cell gone, the agent's table and gateway interface go too: nothing is left on the host.
      await reconcileNetworks(networkPrefix(agentId), []);
      await releaseSharedRoot(paths.agent.volumes);
      log('stopped');
    } catch (e) {
      log('shutdown failed; reconcile at next start cleans up', { error: (e as Error).message });
    }
    clearTimeout(force);
    channel.close();
    process.exit(0);
  };
  process.on('SIGTERM', () => void shutdown('SIGTERM'));
  process.on('SIGINT', () => void shutdown('SIGINT'));
}

/** DENIED_FLUSH_MS batches denied-connection records on their way to the control plane. */
const DENIED_FLUSH_MS = 500;

function forwardDenied(host: CellNetworkHost, agent: Agent, channel: ControlChannel): void {
  let batch: DeniedConnection[] = [];
  host.onDenied((r) => {
    if (batch.length === 0) {
      setTimeout(() => {
        channel.send({ type: 'network.denied', records: batch });
        batch = [];
      }, DENIED_FLUSH_MS);
    }
    if (batch.length < 1000 && r.cellId) {
      batch.push({ jobId: agent.jobOfCell(r.cellId), cellId: r.cellId, action: r.action, destination: r.destination, protocol: r.protocol, port: r.port ?? null, time: r.time.toISOString() });
    }
  });
}

main().catch((e: Error) => {
  process.stderr.write(`cleanroom agent: ${e.message}\n`);
  process.exit(1);
});
