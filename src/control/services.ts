/** createServices wires the control plane's services over one store; main and the tests build them the same way. */
import type { Config } from '../shared/config.js';
import { AccessDenials } from './audit/access-denials.js';
import { AuditLog } from './audit/audit-log.js';
import { Keyring } from './data/keyring.js';
import { ObjectStore } from './data/object-store.js';
import { JobService } from './jobs/job-service.js';
import { sealJobs } from './jobs/sealed-jobs.js';
import { OutputHub } from './jobs/output-hub.js';
import { NetworkPolicyService } from './network/network-policy-service.js';
import type { Store } from './store/store.js';
import { BlobStore } from './images/blob-store.js';
import { ImageService } from './images/image-service.js';
import { TenancyService } from './tenancy/tenancy-service.js';
import { Quotas } from './quotas/quotas.js';
import { PlaneMetrics } from './metrics/plane-metrics.js';
import { SigningKeys } from './tokens/signing-keys.js';
import { CLOCK_SKEW_S, TokenService } from './tokens/token-service.js';
import { SandboxService } from './sandboxes/sandbox-service.js';
import { ProcessRelay } from './sandboxes/process-relay.js';
import { FileRelay } from './sandboxes/file-relay.js';
import type { SandboxChannel } from './sandboxes/sandbox-channel.js';
import type { SandboxReports } from './agents/agent-hub.js';

/** ControlServices are the control plane's services. */
export interface ControlServices {
  store: Store;
  hub: OutputHub;
  audit: AuditLog;
  /** denials records refused requests within a budget per workspace; flush it at shutdown. */
  denials: AccessDenials;
  tenancy: TenancyService;
  network: NetworkPolicyService;
  tokens: TokenService;
  objects: ObjectStore;
  jobs: JobService;
  quotas: Quotas;
  metrics: PlaneMetrics;
  images: ImageService;
  sandboxes: SandboxService;
  processes: ProcessRelay;
  files: FileRelay;
  /** keyring holds the workspaces' keys (the e2b adapter derives its per-sandbox access tokens from them). */
  keyring: Keyring;
  /** connectAgents hands the sandbox relays the agent hub (built after the services) and takes its sandbox reports. */
  connectAgents(hub: SandboxChannel & { attachSandboxes(s: SandboxReports): void }): void;
}

/** ServicesInput: the store, the configuration, the unwrapped KEK and where objects live. */
export interface ServicesInput {
  store: Store;
  config: Config;
  kek: Buffer;
  objectsDir: string;
  /** imagesDir is the image store's root (config images.dir, else <data dir>/images). */
  imagesDir: string;
  /** defaultImageSource is the OCI layout the default image comes from (config images.defaultSource, else <repo>/build/images/base). */
  defaultImageSource: string;
  log?: (msg: string, extra?: object) => void;
}

/** createServices builds every service. */
export function createServices({ store: plainStore, config, kek, objectsDir, imagesDir, defaultImageSource, log }: ServicesInput): ControlServices {
  const l = config.limits;
  const keyring = new Keyring(plainStore, kek);
  // Every service sees jobs through the sealing layer: their tenant data is encrypted at rest.
  const store = sealJobs(plainStore, keyring);
  const metrics = new PlaneMetrics(() => jobs.counts());
  const audit = new AuditLog(store, log, (e) => metrics.onAudit(e));
  const denials = new AccessDenials(audit);
  const ttlMs = config.tokens.ttlSeconds * 1000;
  const keys = new SigningKeys(store, keyring, { rotationMs: config.tokens.signingKeyRotationHours * 3600_000, tokenTtlMs: ttlMs, skewMs: CLOCK_SKEW_S * 1000 });
  const tokens = new TokenService(store, keys, audit, { ttlSeconds: config.tokens.ttlSeconds, refreshAt: config.tokens.refreshAt });
  const network = new NetworkPolicyService(store, audit, (ws) => metrics.onDenied(ws, 1));
  const hub = new OutputHub();
  hub.onLifecycle((e) => e.type === 'end' && !e.remote && metrics.onJobEnded(e.job));
  const quotas = new Quotas(config.quotas);
  const i = config.images;
  const images = new ImageService(
    store,
    new BlobStore(imagesDir),
    quotas,
    audit,
    {
      maxUnpackedBytes: i.maxUnpackedMiB * 1024 * 1024,
      maxArchiveBytes: i.maxArchiveMiB * 1024 * 1024,
      maxConcurrentImports: i.maxConcurrentImports,
      importTimeoutMs: i.importTimeoutSeconds * 1000,
      maxLayers: i.maxLayers,
      maxConfigBytes: i.maxConfigBytes,
      defaultImage: i.default,
      defaultSource: defaultImageSource,
    },
    log,
  );
  const jobs = new JobService(store, hub, quotas, { cpu: l.defaultCpu, memoryMiB: l.defaultMemoryMiB, timeoutSeconds: l.defaultTimeoutSeconds, diskMiB: l.defaultDiskMiB, outputLimitBytes: l.maxOutputMiB * 1024 * 1024, runtime: l.defaultRuntime }, network, tokens, audit, images);
  const tenancy = new TenancyService(store, { maxCpu: l.maxCpu, maxMemoryMiB: l.maxMemoryMiB, maxTimeoutSeconds: l.maxTimeoutSeconds, maxDiskMiB: l.maxDiskMiB }, audit, denials);
  const objects = new ObjectStore(store, keyring, objectsDir, config.data.maxObjectMiB * 1024 * 1024, quotas);
  let channel: SandboxChannel | null = null;
  const processes = new ProcessRelay(() => channel);
  const files = new FileRelay(() => channel);
  // Sandboxes keep runc as their default (long-lived: the per-cell CPU that made crun the jobs' default matters little).
  const jobDefaults = { cpu: l.defaultCpu, memoryMiB: l.defaultMemoryMiB, timeoutSeconds: l.defaultTimeoutSeconds, diskMiB: l.defaultDiskMiB, outputLimitBytes: l.maxOutputMiB * 1024 * 1024, runtime: 'runc' as const };
  const sandboxes = new SandboxService(store, jobs, hub, jobDefaults, () => channel);
  sandboxes.busy = (sb) => processes.busy(sb);
  hub.onLifecycle((e) => {
    if (e.job.mode !== 'sandbox') return;
    if (e.type === 'started') return sandboxes.started(e.job);
    const why = e.job.message ?? e.job.status;
    processes.sandboxEnded(e.job.id, why);
    files.sandboxEnded(e.job.id, why);
    sandboxes.ended(e.job.id);
  });
  const connectAgents: ControlServices['connectAgents'] = (agentHub) => {
    channel = agentHub;
    agentHub.attachSandboxes({
      onReport: (agentId, msg) => (msg.type.startsWith('proc.') ? processes.onReport(agentId, msg as Parameters<ProcessRelay['onReport']>[1]) : files.onReport(agentId, msg as Parameters<FileRelay['onReport']>[1])),
      agentLost: (agentId) => {
        processes.agentLost(agentId);
        files.agentLost(agentId);
      },
    });
  };
  return { store, hub, audit, denials, tenancy, network, tokens, objects, jobs, quotas, images, metrics, sandboxes, processes, files, keyring, connectAgents };
}
