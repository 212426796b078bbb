/** The agent process: privileged, one per host; dials the control plane and runs cells. */
import { parseArgs } from 'node:util';
import { chmodSync, existsSync, mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import pino from 'pino';
import { loadConfig } from '../shared/config.js';
import { dataPaths, DEFAULT_DATA_DIR, imageDirs } from '../shared/paths.js';
import { AGENT_ID_PATTERN, CHANNEL_CLOSE, MAX_DENIED_PER_MESSAGE, PROTOCOL_VERSION, type DeniedConnection, type Runtime } from '../shared/wire.js';
import { OciRuntime } from './runtime/oci-runtime.js';
import { threadPoolWarning } from './thread-pool-size.js';
import { prepareCrunHost } from './runtime/crun-host.js';
import { useBackgroundCgroup } from './runtime/background.js';
import { findExecutable, sealedExecutable } from './runtime/host-calls.js';
import type { CellRuntime } from './runtime/cell-runtime.js';
import { buildRootfs } from './runtime/rootfs.js';
import { CellPool } from './cells/pool.js';
import { releaseUidClaims, UID_CLAIMS_DIR, UidRanges } from './cells/uid-ranges.js';
import { sizeClassesFromConfig } from './cells/size-class.js';
import { networkPrefix, reconcileHost, retryLeftovers, type Leftover, type ReconcileOptions } from './reconcile/reconcile.js';
import { ReceiptSpool } from './reconcile/receipt-spool.js';
import { CellNetworkHost } from './network/cell-network.js';
import { Ipam } from './network/ipam.js';
import { poolClash } from './network/pool-clash.js';
import { checkStorageSupport } from './storage/doctor.js';
import { ensureSharedRoot, releaseSharedRoot } from './storage/shared-root.js';
import { ensureStateTmpfs, releaseStateTmpfs } from './state-tmpfs.js';
import { ControlChannel } from './channel.js';
import { GatewayServices } from './gateway/gateway-services.js';
import { Agent } from './agent.js';
import { ImageStore } from './images/image-store.js';
import { checkImageRootSupport } from './images/image-support.js';
import { ImageService, type ImagePoolTarget } from './images/image-service.js';

/** SHUTDOWN_DEADLINE_MS bounds a graceful stop; `cleanroom down` waits a little longer before SIGKILL. */
const SHUTDOWN_DEADLINE_MS = 25_000;

const REPO_ROOT = join(dirname(fileURLToPath(import.meta.url)), '../../..');

/** LEFTOVER_RETRY_MS is how often what reconcile could not remove is tried again. */
const LEFTOVER_RETRY_MS = 10_000;

async function main(): Promise<void> {
  const { values } = parseArgs({ options: { 'data-dir': { type: 'string' }, reconcile: { type: 'boolean' } } });
  const paths = dataPaths(values['data-dir'] ?? process.env.CLEANROOM_DATA_DIR ?? DEFAULT_DATA_DIR);
  const config = loadConfig(paths.config);
  const logger = pino({ base: { proc: 'agent' } });
  const log = (msg: string, extra?: object) => logger.info(extra ?? {}, msg);
  const poolWarning = threadPoolWarning(process.env);
  if (poolWarning && !values.reconcile) logger.warn(poolWarning);

  // 0711 on the way down to every cell: runc resolves bind-mount sources as the cell's (unmapped) root.
  mkdirSync(paths.agent.dir, { recursive: true });
  chmodSync(paths.agent.dir, 0o711);
  const agentId = agentIdOf(paths.agent.id, config.agent.id);

  const runtimes = new Map<Runtime, CellRuntime>();
  const stateRoots: Record<Runtime, string> = { runc: paths.agent.runcRoot, runsc: paths.agent.runscRoot, crun: paths.agent.crunRoot };
  for (const name of config.agent.runtimes) {
    let binary: string | undefined;
    // runc runs from a sealed in-memory copy: it then skips protecting itself anew for every container (runtime.c).
    if (name === 'runc') binary = sealedExecutable(findExecutable('runc'));
    if (name === 'crun') {
      const crun = await prepareCrunHost();
      if (!crun.ok) {
        log('crun is not offered on this host', { reason: crun.reason });
        continue;
      }
      if (crun.moved.length) log('moved cgroup controllers out of cgroup v2 for crun', { controllers: crun.moved });
      // Also sealed: libcrun re-executes every crun command from a fresh copy of itself (a read-only bind mount of
      // /proc/self/exe via a temp file in /tmp, then fexecve: a second exec and dynamic link per call) unless it runs
      // from a fully sealed memfd, as runc does.
      binary = sealedExecutable(crun.binary);
    }
    runtimes.set(name, new OciRuntime({ name, binary, stateRoot: stateRoots[name] }));
  }
  const spool = new ReceiptSpool(paths.agent.receipts);
  const reconcileOptions: ReconcileOptions = { agentId, runtimes: [...runtimes.values()], cellsDir: paths.agent.cells, volumesDir: paths.agent.volumes, spool };
  if (values.reconcile) return reconcileOnly(reconcileOptions, paths.agent.volumes, Object.values(stateRoots), { dir: UID_CLAIMS_DIR, agentId });

  // Never a silent fallback to unencrypted storage: no cells at all if the host cannot encrypt them.
  const support = await checkStorageSupport();
  if (!support.ok) {
    const failed = support.checks.filter((c) => !c.ok).map((c) => `${c.name}: ${c.detail}`);
    throw new Error(`this host cannot give cells encrypted storage; refusing to start cells (${failed.join('; ')}). Run: cleanroom doctor`);
  }
  const ipam = new Ipam({ pool: config.network.pool }); // validates the pool before anything is touched
  // Before anything is made on the host: an address in the pool on an interface not named after this agent is someone else's.
  const clash = poolClash(config.network.pool, networkPrefix(agentId));
  if (clash) {
    throw new Error(
      `network.pool ${config.network.pool} is in use on this host (${clash.iface} has ${clash.address}, another agent's gateway or a host network): give each agent on a host its own network.pool`,
    );
  }
  mkdirSync(paths.agent.volumes, { recursive: true, mode: 0o711 });
  await ensureSharedRoot(paths.agent.volumes);
  // Reconcile never stops the agent: what it cannot remove now is reported and retried in the background.
  const report = await reconcileHost(reconcileOptions);
  // After reconcile (which removes a dead agent's): pool refills and wipes yield the CPU to starts from here on.
  useBackgroundCgroup(agentId);
  // After reconcile, which removed what an earlier agent left on disk there (what it kept stays visible: no tmpfs then):
  // the cells directory and each runtime's state root.
  if (!ensureStateTmpfs(paths.agent.cells, 'cells')) log('cells directory stays on disk: it still holds cells reconcile could not remove', { dir: paths.agent.cells });
  for (const name of runtimes.keys()) {
    const root = stateRoots[name];
    if (!ensureStateTmpfs(root, 'runtime')) log('runtime state stays on disk: it still holds containers reconcile could not remove', { dir: root });
  }
  log('reconciled host', { containers: report.containers, killed: report.killed, cgroups: report.cgroups, directories: report.directories, mounts: report.mounts, wiped: report.wipes.length, leftovers: report.leftovers });
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
  const imageDirsOf = imageDirs(paths, config.images);
  // Each pool runs on the host root or on an image: its own, else images.default ('host', or the default image).
  const poolImages = config.agent.pool.filter((p) => runtimes.has(p.runtime)).map((p) => ({ p, image: poolImage(p.image ?? config.images.default, config.images.default, imageDirsOf.defaultSource, log) }));
  const targets = poolImages.filter((x) => x.image === null).map(({ p }) => ({ runtime: p.runtime, sizeClass: classes.get(p.class)!, warm: p.warm, max: p.max, image: null }));
  // Pools on images start once their image is prepared (from the store's blobs, or when the control plane asks).
  const imageTargets: ImagePoolTarget[] = poolImages
    .filter((x) => x.image !== null && x.image !== 'unknown')
    .map(({ p, image }) => ({ runtime: p.runtime, sizeClass: classes.get(p.class)!, warm: p.warm, max: p.max, digest: image as string }));
  const imageStore = new ImageStore({ root: imageDirsOf.root, platformCa: tls.ca });
  await imageStore.open();
  // In the store's own filesystem (idmapped mounts need its support); a leftover `.tmp-` goes at the next open.
  const imageRoots = checkImageRootSupport(imageStore.unpackedDir, '.tmp-doctor-');
  if (!imageRoots.ok) log('this host cannot mount image roots; cells on images will fail to prepare (cleanroom doctor)', { detail: imageRoots.detail });
  const pool = new CellPool(
    {
      agentId,
      cellsDir: paths.agent.cells,
      volumesDir: paths.agent.volumes,
      wipeStats: { wiping: 0, wiped: report.wipes.length, wipeFailed: report.leftovers.filter((l) => l.kind === 'volume').length },
      networking: { host: networkHost, ipam, gateway },
      rootfs: paths.agent.rootfs,
      unpackedImagesDir: imageStore.unpackedDir,
      nofile: config.agent.nofile,
      exitGraceMs: config.agent.exitGraceMs,
    },
    runtimes,
    // Claimed host-wide: other agents on this host never get the same ranges (their earlier claims released here).
    new UidRanges(parseInt(agentId, 16), { dir: UID_CLAIMS_DIR, agentId }),
    targets,
    log,
    config.agent.refillDelayMs,
    config.agent.maxConcurrentPrepares,
    config.agent.poolDemandWindowSeconds * 1000,
  );

  const urls = config.agent.controlUrls.length > 0 ? config.agent.controlUrls : [`wss://${config.control.host}:${config.control.agentPort}/v1/agent`];
  let agent: Agent | null = null;
  const channel = new ControlChannel(urls, tls, () => agent!.greeting());
  const images = new ImageService(imageStore, pool, imageTargets, config.images.maxUnpackedMiB * 1024 * 1024, (m) => channel.send(m), log);
  agent = new Agent(agentId, config, pool, channel, log, spool, images);
  channel.on('open', () => log('connected to control plane', { url: channel.url, agentId, protocol: PROTOCOL_VERSION }));
  // The control plane says why it closed the channel: a refused protocol version, a message it could not accept…
  channel.on('close', (code: number, reason: string) => {
    if (code === CHANNEL_CLOSE.protocolMismatch) log('the control plane refused this agent\'s protocol version', { code, reason, protocol: PROTOCOL_VERSION });
    else if (code === CHANNEL_CLOSE.agentRemoved) log('the control plane refused this agent: an operator removed it', { code, reason, agentId });
    else if (code !== 1000 && code !== 1005 && code !== 1006) log('the control plane closed the channel', { code, reason });
  });
  channel.on('protocol-error', (problem: string) => log('control channel protocol error', { problem }));
  channel.on('bad-outgoing', (type: string, problem: string) => log('dropped a report the control plane would refuse', { type, problem }));
  forwardDenied(networkHost, agent, channel);
  channel.on('dial-error', (e: Error) => log('control plane unreachable', { url: channel.url, error: e.message }));
  retryLeftoversLater(reconcileOptions, report.leftovers, agent, log);
  pool.refill();
  void images.prepareConfigured();
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
      await gateway.close();
      await networkHost.close();
      // Every cell is wiped by now; the same sweep as at start-up catches what a cell's own wipe missed, and with
      // every cell gone the agent's table and gateway interface go too: nothing is left on the host.
      const swept = await reconcileHost(reconcileOptions);
      if (swept.containers.length || swept.killed.length || swept.wipes.length || swept.leftovers.length) {
        log('swept leftovers at shutdown', { containers: swept.containers, killed: swept.killed, wiped: swept.wipes.length, leftovers: swept.leftovers });
      }
      const unreleased = await releaseMounts(paths.agent.volumes, paths.agent.cells, Object.values(stateRoots));
      if (unreleased.length) log('mounts left at shutdown', { leftovers: unreleased });
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

/**
 * poolImage resolves a pool's image to a digest, null (the host root), or 'unknown' (its pool stays empty). The agent
 * has no image names of its own: a digest is taken as is; the default image's name is read from the OCI layout the
 * control plane imports it from (the same manifest digest); other names are not supported in agent.pool yet.
 */
function poolImage(image: string, defaultImage: string, defaultSource: string, log: (msg: string, extra?: object) => void): string | null | 'unknown' {
  if (image === 'host') return null;
  if (/^sha256:[0-9a-f]{64}$/.test(image)) return image;
  if (image === defaultImage) {
    try {
      const index = JSON.parse(readFileSync(join(defaultSource, 'index.json'), 'utf8')) as { manifests?: Array<{ digest?: string }> };
      const digest = index.manifests?.[0]?.digest;
      if (digest && /^sha256:[0-9a-f]{64}$/.test(digest)) return digest;
    } catch {
      // reported below
    }
    log('the default image\'s layout is missing; its pools stay empty until the control plane prepares it by digest', { image, source: defaultSource });
    return 'unknown';
  }
  log('agent.pool names an image by name; only digests (or the default image) are supported there yet', { image });
  return 'unknown';
}

/**
 * agentIdOf reads the agent's id, making it on first start (atomically: a crash never leaves half an id) from the
 * configured one (agent.id) or at random. A configured id that differs from the kept one is refused: the host may still
 * hold cells, tables and cgroups named after the kept one, which only that id's reconcile removes.
 */
function agentIdOf(file: string, configured: string | undefined): string {
  if (existsSync(file)) {
    const id = readFileSync(file, 'utf8').trim();
    if (!AGENT_ID_PATTERN.test(id)) throw new Error(`${file} does not hold an agent id (6 hex digits); remove it only if no cell of this agent is left on the host`);
    if (configured !== undefined && configured !== id) {
      throw new Error(`agent.id is ${configured} but this data directory belongs to agent ${id} (${file}); stop with \`cleanroom down\` (it removes ${id}'s objects), remove the file, then start again`);
    }
    return id;
  }
  const id = configured ?? randomBytes(3).toString('hex');
  writeFileSync(`${file}.tmp`, id);
  renameSync(`${file}.tmp`, file);
  return id;
}

/**
 * releaseMounts unmounts what the agent mounted for all its cells (the volumes' shared root, the cells directory's and
 * the runtimes' state tmpfs), each on its own: one that fails is reported and does not keep the others mounted.
 */
async function releaseMounts(volumesDir: string, cellsDir: string, stateRoots: string[]): Promise<Leftover[]> {
  const left: Leftover[] = [];
  const release = async (kind: Leftover['kind'], dir: string, what: string, fn: () => Promise<void>) => {
    try {
      await fn();
    } catch (e) {
      left.push({ kind, id: dir, error: `cannot unmount ${what}: ${(e as Error).message}` });
    }
  };
  await release('volume', volumesDir, 'the volumes root', () => releaseSharedRoot(volumesDir));
  for (const dir of [cellsDir, ...stateRoots]) await release('directory', dir, 'a state tmpfs', () => releaseStateTmpfs(dir));
  return left;
}

/** reconcileOnly is `cleanroom down`'s clean-up when the agent is gone: the start-up reconcile, then the agent's mounts. */
async function reconcileOnly(opts: ReconcileOptions, volumesDir: string, stateRoots: string[], uidClaims: { dir: string; agentId: string }): Promise<void> {
  const report = await reconcileHost(opts);
  // Every cell of this agent is gone: so are its claims on host uid ranges.
  if (report.leftovers.length === 0) releaseUidClaims(uidClaims);
  if (report.leftovers.length === 0) report.leftovers.push(...(await releaseMounts(volumesDir, opts.cellsDir, stateRoots)));
  const { containers, killed, cgroups, wipes, networks, leftovers } = report;
  process.stdout.write(JSON.stringify({ containers, killed, cgroups, wiped: wipes.length, netns: networks.netns.length, links: networks.links.length, leftovers }) + '\n');
  process.exitCode = leftovers.length > 0 ? 2 : 0;
}

/** retryLeftoversLater tries again, in the background, to remove what reconcile could not; receipts go to the agent. */
function retryLeftoversLater(opts: ReconcileOptions, initial: Leftover[], agent: Agent, log: (msg: string, extra?: object) => void): void {
  let leftovers = initial;
  const tick = async () => {
    if (leftovers.length === 0) return;
    const { left, wipes } = await retryLeftovers(opts, leftovers);
    for (const w of wipes) agent.reportReconciledWipe(w.jobId, w.receipt);
    if (left.length < leftovers.length) log('removed leftovers on retry', { removed: leftovers.length - left.length, left });
    leftovers = left;
    if (left.length > 0) setTimeout(() => void tick().catch((e: Error) => log('leftover retry failed', { error: e.message })), LEFTOVER_RETRY_MS).unref();
  };
  if (leftovers.length > 0) {
    log('reconcile left objects on the host; retrying in the background', { leftovers });
    setTimeout(() => void tick().catch((e: Error) => log('leftover retry failed', { error: e.message })), LEFTOVER_RETRY_MS).unref();
  }
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
    if (batch.length < MAX_DENIED_PER_MESSAGE && r.cellId) {
      batch.push({ jobId: agent.jobOfCell(r.cellId), cellId: r.cellId, action: r.action, destination: r.destination, protocol: r.protocol, port: r.port ?? null, time: r.time.toISOString() });
    }
  });
}

main().catch((e: Error) => {
  process.stderr.write(`cleanroom agent: ${e.message}\n`);
  process.exit(1);
});
