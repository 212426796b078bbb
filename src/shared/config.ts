/** The one validated configuration of a Cleanroom installation, read once per process and frozen. */
import { readFileSync, existsSync } from 'node:fs';
import { z } from 'zod';
import { CELL_POOL_CIDR } from './net/pool.js';
import { RuntimeSchema } from './wire.js';

/** QUOTA_FIELDS are a workspace's quotas; work beyond the running quota waits in a fair queue. */
const QUOTA_FIELDS = {
  /** Jobs running (or being placed) at once; more wait in the queue. */
  maxRunningJobs: z.number().int().min(1).max(10_000).default(32),
  /** Jobs waiting in the queue; more are refused (429 quota_exceeded). */
  maxQueuedJobs: z.number().int().min(0).max(100_000).default(256),
  /** Objects in the data store, and their bytes. */
  maxObjects: z.number().int().min(0).default(100_000),
  maxObjectBytesMiB: z.number().int().min(0).default(10_240),
  /** Live output streams (SSE) open at once. */
  maxStreams: z.number().int().min(1).default(64),
  /** API requests per second (token bucket) and the burst above it (429 rate_limited with Retry-After). */
  requestsPerSecond: z.number().positive().default(200),
  requestBurst: z.number().int().min(1).default(400),
  /** Bytes of image blobs (compressed layers, configs, manifests) the workspace's images hold; an import past it fails. */
  maxImageBytesMiB: z.number().int().min(0).default(20_480),
};
const QUOTA_FIELDS_OPTIONAL = Object.fromEntries(Object.entries(QUOTA_FIELDS).map(([k, v]) => [k, v.unwrap().optional()])) as {
  [K in keyof typeof QUOTA_FIELDS]: z.ZodOptional<ReturnType<(typeof QUOTA_FIELDS)[K]['unwrap']>>;
};

const SizeClassSchema = z.object({
  name: z.string().regex(/^[a-z][a-z0-9-]{0,15}$/),
  cpu: z.number().positive().max(64),
  memoryMiB: z.number().int().min(16),
  /** Ceiling on processes; runsc cells get at least 1024 because gVisor's own threads count. */
  pids: z.number().int().min(16).default(256),
  /** Size of the cell's encrypted volume (its /work and /tmp): the disk limit of jobs in this class. */
  diskMiB: z.number().int().min(16).default(256),
});

/**
 * ListenerTimeoutsSchema: the deadlines of every connection to the API and data listeners, all bounded (at most 10 min).
 * None covers sending a response: a followed job's SSE stream stays open (silent while the job prints nothing) and a
 * download takes as long as the client reads it.
 */
const ListenerTimeoutsSchema = z
  .object({
    /** A client that has not completed its TLS handshake by then is dropped (Node's own default is 120 s). */
    tlsHandshakeMs: z.number().int().min(100).max(600_000).default(10_000),
    /** From a connection's (or a request's) first byte to the end of the request's headers. Real clients send their headers
     *  in one write; a slow-loris client trickling them, or one that connects and says nothing, is cut off here (408). */
    headersMs: z.number().int().min(100).max(600_000).default(10_000),
    /** From a request's first byte to the last byte of its body: JSON bodies are at most 1 MiB, so 60 s asks ≥ 17 KiB/s.
     *  Node's requestTimeout counts until the whole request is received, which a large object upload may legitimately take
     *  much longer for (data.maxObjectMiB, GiBs): uploads are exempted once authorized and bounded by uploadIdleMs instead. */
    requestMs: z.number().int().min(100).max(600_000).default(60_000),
    /** An authorized object upload during which nothing arrives for this long is dropped. */
    uploadIdleMs: z.number().int().min(100).max(600_000).default(60_000),
    /** An idle kept-alive connection is closed this long after its last response (advertised as Keep-Alive: timeout). */
    keepAliveMs: z.number().int().min(1000).max(600_000).default(10_000),
  })
  .strict()
  .refine((t) => t.headersMs <= t.requestMs, 'headersMs must not exceed requestMs (the headers are part of the request)');

/** ListenerTimeouts are the parsed listener deadlines. */
export type ListenerTimeouts = Readonly<z.infer<typeof ListenerTimeoutsSchema>>;

/**
 * StoreSchema chooses the control plane's database: the embedded SQLite file (one control-plane process) or a PostgreSQL
 * database that several replicas share. The URL may instead come from CLEANROOM_STORE_URL (see loadConfig), so that it
 * can live in a secret rather than in the config file.
 */
const StoreSchema = z.discriminatedUnion('kind', [
  z.object({ kind: z.literal('sqlite') }).strict(),
  z
    .object({
      kind: z.literal('postgres'),
      /** postgres://user:password@host:port/database (or postgresql://); `?host=/dir` for a unix socket. */
      url: z
        .string()
        .refine((u) => /^postgres(ql)?:\/\//.test(u) && URL.canParse(u), 'a postgres://user:password@host:port/database URL'),
      /** Connections each control-plane process keeps open at most. */
      poolSize: z.number().int().min(1).max(1000).default(10),
    })
    .strict(),
]);

/** StoreConfig is the parsed `store` section. */
export type StoreConfig = Readonly<z.infer<typeof StoreSchema>>;

/** ConfigSchema describes `<data dir>/config.json`; every field has a default. */
export const ConfigSchema = z
  .object({
    control: z
      .object({
        /** Address both listeners bind to; loopback by default. */
        host: z.string().default('127.0.0.1'),
        /** Port of the user-facing HTTPS API. */
        apiPort: z.number().int().min(0).max(65535).default(7443),
        /** Port of the mutual-TLS agent channel (a separate listener: only our CA's clients get in). */
        agentPort: z.number().int().min(0).max(65535).default(7444),
        /** Port of the data service (object API for users and, through their cell's gateway, workloads). */
        dataPort: z.number().int().min(0).max(65535).default(7445),
        /** Unprivileged account the control plane runs as when started by root. */
        user: z.string().default('cleanroom'),
        /** How long jobs of a disconnected agent wait for it to come back before they end as `error`. */
        agentGraceMs: z.number().int().min(0).default(30_000),
        /** Connection deadlines of the API and data listeners (see ListenerTimeoutsSchema). */
        timeouts: ListenerTimeoutsSchema.prefault({}),
        /** This replica's id among the control-plane replicas sharing one database (default: random per start, rep_<hex>). */
        replicaId: z.string().regex(/^[A-Za-z0-9_.-]{1,64}$/).optional(),
        /** URL peer replicas reach this replica's API on (default https://<host>:<apiPort>). */
        advertiseUrl: z.string().url().optional(),
      })
      .strict()
      .prefault({}),
    limits: z
      .object({
        /** Workspace ceilings, used when a workspace is created without its own. */
        maxCpu: z.number().positive().default(2),
        maxMemoryMiB: z.number().int().positive().default(2048),
        maxTimeoutSeconds: z.number().int().positive().default(3600),
        maxDiskMiB: z.number().int().positive().default(1024),
        /** What a job gets when it does not ask. */
        defaultCpu: z.number().positive().default(1),
        defaultMemoryMiB: z.number().int().positive().default(256),
        defaultTimeoutSeconds: z.number().int().positive().default(600),
        defaultDiskMiB: z.number().int().positive().default(256),
        /** The runtime of a job that names none. crun: the same confinement as runc (same spec, same posture tests) for
         *  about half the host CPU per cell (README, Performance); an agent whose host cannot run crun refuses such jobs. */
        defaultRuntime: RuntimeSchema.default('crun'),
        /** Output kept per job (stdout and stderr together); past it output is dropped and the job says so. */
        maxOutputMiB: z.number().int().min(1).max(10_240).default(64),
        /** How long a job's output, command, env and message are kept (sealed) after it ends; then crypto-shredded. */
        retentionDays: z.number().min(1 / 86_400).max(3650).default(7),
      })
      .strict()
      .prefault({}),
    /** Per-workspace quotas: every workspace gets these unless `workspaces` names it with its own. */
    quotas: z
      .object({
        ...QUOTA_FIELDS,
        workspaces: z.record(z.string(), z.object(QUOTA_FIELDS_OPTIONAL).strict()).default({}),
      })
      .strict()
      .prefault({}),
    network: z
      .object({
        /** Private range cell addresses come from (a /24 per workspace per host); no egress rule may point into it. */
        pool: z.string().default(CELL_POOL_CIDR),
        /** Port on each cell's gateway that forwards (TLS untouched) to the data service. */
        dataGatewayPort: z.number().int().min(1).max(65535).default(443),
        /** Resolver the gateway asks for names outside the platform's own ("host:port"); null answers only platform names. */
        dnsUpstream: z
          .string()
          .regex(/^\d{1,3}(\.\d{1,3}){3}(:\d{1,5})?$/, 'an IPv4 address with an optional :port')
          .transform((s) => {
            const [host, port] = s.split(':');
            return { host: host!, port: port ? Number(port) : 53 };
          })
          .nullable()
          .default(null),
      })
      .strict()
      .prefault({}),
    tokens: z
      .object({
        /** Lifetime of a workload token; at most one hour. */
        ttlSeconds: z.number().int().min(5).max(3600).default(3600),
        /** Fraction of the lifetime after which a running workload gets a fresh token. */
        refreshAt: z.number().min(0.1).max(0.95).default(0.8),
        /** How often the token signing key is replaced (old keys stay published until their tokens expire). */
        signingKeyRotationHours: z.number().min(0.01).max(24 * 90).default(24),
      })
      .strict()
      .prefault({}),
    data: z
      .object({
        /** File holding the 32-byte key-encryption key; generated (mode 0600) under the data directory when absent. */
        kekFile: z.string().nullable().default(null),
        /** Largest object the data service accepts. */
        maxObjectMiB: z.number().int().min(1).default(5120),
      })
      .strict()
      .prefault({}),
    /** OCI images workloads run on (issue #12). */
    images: z
      .object({
        /** Image store root (blobs written by the control plane, unpacked layers by agents); null: `<data dir>/images`. */
        dir: z.string().startsWith('/').nullable().default(null),
        /** The image a job runs on when it names none: an image name[:tag] (the caller's workspace's, else a public one),
         *  or "host" for the host's read-only /usr under a synthetic /etc (the behaviour before images). */
        default: z.string().min(1).max(200).default('base'),
        /** OCI layout directory the default image is imported from (as a public image) at start when it is absent; null:
         *  `<repository>/build/images/base`, which the install step builds. */
        defaultSource: z.string().startsWith('/').nullable().default(null),
        /** Largest image, unpacked (the agent stops unpacking past it: image_too_large); its blobs may not exceed it either. */
        maxUnpackedMiB: z.number().int().min(1).default(8192),
        /** Largest archive accepted by `POST /v1/images/archive` (streamed to disk, refused past it). */
        maxArchiveMiB: z.number().int().min(1).default(8192),
        /** Imports running at once (registry pulls and archive conversions); more wait their turn. */
        maxConcurrentImports: z.number().int().min(1).max(16).default(2),
        /** A skopeo run (one import's transfer) taking longer is killed: image_import_timeout. */
        importTimeoutSeconds: z.number().int().min(1).max(86_400).default(1800),
        /** Most layers an image may have (image_invalid past it). */
        maxLayers: z.number().int().min(1).max(128).default(128),
        /** Largest image config blob (JSON) accepted. */
        maxConfigBytes: z.number().int().min(1024).max(16 * 1024 * 1024).default(1024 * 1024),
      })
      .strict()
      .prefault({}),
    agent: z
      .object({
        /** Runtimes this agent offers; one its host cannot run (see `cleanroom doctor`) is left out with a log line. */
        runtimes: z.array(RuntimeSchema).min(1).default(['runc', 'runsc', 'crun']),
        classes: z
          .array(SizeClassSchema)
          .min(1)
          .default([
            { name: 'small', cpu: 1, memoryMiB: 512, pids: 256, diskMiB: 256 },
            { name: 'large', cpu: 2, memoryMiB: 2048, pids: 512, diskMiB: 1024 },
          ]),
        /** Warm pools per runtime, class (and image): at least `warm` cells, grown from demand up to `max` (absent: fixed). */
        pool: z
          .array(
            z.object({
              runtime: RuntimeSchema,
              class: z.string(),
              warm: z.number().int().min(0).max(500),
              /** The most warm cells demand may grow this pool to (enough for the peak of starts within one prepare). */
              max: z.number().int().min(0).max(1000).optional(),
              /** The image these cells run on (a digest or a public image's name); absent: images.default. */
              image: z.string().min(1).max(200).optional(),
            }),
          )
          .default([
            { runtime: 'crun', class: 'small', warm: 2, max: 64 },
            { runtime: 'runc', class: 'small', warm: 1, max: 64 },
            { runtime: 'runsc', class: 'small', warm: 1, max: 16 },
          ]),
        /** How far back a pool's demand counts: past it, a pool shrinks back to its minimum (surplus cells are wiped). */
        poolDemandWindowSeconds: z.number().int().min(10).max(86_400).default(300),
        /** RLIMIT_NOFILE of every cell process. */
        nofile: z.number().int().min(64).default(1024),
        /** Pause between handing out a warm cell and preparing its replacement, so that the refill's
         *  process spawns do not compete with the new workload's first milliseconds on a small host. */
        refillDelayMs: z.number().int().min(0).max(10_000).default(150),
        /** How long a cell may linger after its workload's exit before it is force-deleted. */
        exitGraceMs: z.number().int().min(0).default(2000),
        /** Jobs this agent runs at once; the control plane queues the rest (fairly across workspaces). */
        maxRunningJobs: z.number().int().min(1).max(1000).default(64),
        /** Cells this agent prepares at once for cold starts; pool refills take the slots starts leave free, and one refill runs even when starts hold them all (so briefly up to twice this many prepare at once). */
        maxConcurrentPrepares: z.number().int().min(1).max(64).default(4),
        /**
         * The control plane's agent channels (wss://host:port/v1/agent, one per replica), dialed in turn: when one is
         * unreachable or closes, the next. Empty: the one derived from control.host and control.agentPort.
         */
        controlUrls: z
          .array(z.string().max(2048).regex(/^wss:\/\/[^\s/]+(\/[^\s]*)?$/, 'must be a wss:// URL'))
          .max(64)
          .default([]),
        /**
         * This agent's id (6 hex digits; it names the agent's objects on the host). Absent: made at the first start and
         * kept in <data dir>/agent/id. An id that differs from the kept one is refused (the host may hold the old one's cells).
         */
        id: z.string().regex(/^[0-9a-f]{6}$/, 'must be 6 lower-case hex digits').optional(),
      })
      .strict()
      .prefault({}),
    store: StoreSchema.default({ kind: 'sqlite' }),
  })
  .strict()
  .superRefine((c, ctx) => {
    const names = new Set(c.agent.classes.map((k) => k.name));
    for (const p of c.agent.pool) {
      if (!names.has(p.class)) ctx.addIssue({ code: 'custom', message: `agent.pool names unknown class "${p.class}"` });
    }
    if (c.limits.defaultCpu > c.limits.maxCpu) ctx.addIssue({ code: 'custom', message: 'limits.defaultCpu exceeds maxCpu' });
    if (c.limits.defaultMemoryMiB > c.limits.maxMemoryMiB) ctx.addIssue({ code: 'custom', message: 'limits.defaultMemoryMiB exceeds maxMemoryMiB' });
  });

/** Config is the parsed, frozen configuration. */
export type Config = Readonly<z.infer<typeof ConfigSchema>>;

/**
 * loadConfig reads and validates the config file (absent means all defaults); throws with every problem listed.
 * CLEANROOM_STORE_URL, when set, is the PostgreSQL store's URL: it overrides `store.url` and implies `kind: postgres`.
 */
export function loadConfig(path: string, env: NodeJS.ProcessEnv = process.env): Config {
  const raw: unknown = existsSync(path) ? JSON.parse(readFileSync(path, 'utf8')) : {};
  const storeUrl = env.CLEANROOM_STORE_URL;
  if (storeUrl && raw && typeof raw === 'object' && !Array.isArray(raw)) {
    const store = (raw as { store?: unknown }).store;
    const given = store && typeof store === 'object' && !Array.isArray(store) ? (store as Record<string, unknown>) : {};
    if (given.kind !== undefined && given.kind !== 'postgres') throw new Error(`invalid config ${path}: store.kind is "${String(given.kind)}" but CLEANROOM_STORE_URL is set (it is the PostgreSQL store's URL): set store.kind to "postgres" or unset it`);
    (raw as { store?: unknown }).store = { ...given, kind: 'postgres', url: storeUrl };
  }
  const parsed = ConfigSchema.safeParse(raw);
  if (!parsed.success) {
    const problems = parsed.error.issues.map((i) => `${i.path.join('.') || '(root)'}: ${i.message}`).join('; ');
    throw new Error(`invalid config ${path}: ${problems}`);
  }
  return deepFreeze(parsed.data);
}

function deepFreeze<T>(o: T): T {
  if (o && typeof o === 'object') {
    for (const v of Object.values(o)) deepFreeze(v);
    Object.freeze(o);
  }
  return o;
}
