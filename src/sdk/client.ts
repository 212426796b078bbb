/** The Cleanroom TypeScript SDK: a typed client of the public HTTPS API. The CLI is built on it. */
import { Agent, request } from 'node:https';
import type { IncomingMessage } from 'node:http';
import type { Readable } from 'node:stream';
import type { operations } from './generated/api.js';
import { readEvents } from './sse.js';

/** Json is the JSON body an operation of the served OpenAPI document answers with (src/sdk/generated/api.ts, `npm run gen:sdk`). */
type Json<Op extends keyof operations, S extends number = 200> = operations[Op] extends { responses: Record<S, { content: { 'application/json': infer T } }> } ? T : never;

/** ClientOptions says where the API is and how to authenticate. */
export interface ClientOptions {
  /**
   * The API's URL; several replicas of one control plane as a comma-separated list (`https://a:7443,https://b:7443`),
   * or in `urls`. Calls go to the first that answers; see CleanroomClient for what is retried on another.
   */
  url: string;
  urls?: string[];
  apiKey?: string;
  /** PEM of the CA that signed the server certificate (the local CA by default). */
  ca?: string;
}

/** Job is a job as the API returns it (GET /v1/jobs/:id; from the served OpenAPI document). */
export type Job = Json<'getJob'>;

/** ImageState is where an image's import is. */
export type ImageState = Image['state'];

/** Image is an image as the API returns it (GET /v1/images/:id). Its `error` says why an import failed: match on `code`. */
export type Image = Json<'getImage'>;

/** ImageImport asks for an image from a registry. */
export interface ImageImport {
  /** docker://HOST[:PORT]/REPO[:TAG] or docker://HOST[:PORT]/REPO@sha256:<hex> */
  source: string;
  name?: string;
  credentials?: { username: string; password: string };
  /** PEM of the CA that signed the registry's certificate. */
  caPem?: string;
  /** Publish for every workspace (platform admins). */
  public?: boolean;
}

/** EgressRule allows one destination: a CIDR, optionally narrowed to a protocol and a port or range "from-to" (tcp/udp only). */
export interface EgressRule {
  cidr: string;
  protocol?: 'tcp' | 'udp' | 'icmp' | 'any';
  port?: number | string;
}

/** EgressPolicy is a workspace's egress allow-list; everything else is denied (or, with dryRun, allowed and recorded). */
export interface EgressPolicy {
  allow: EgressRule[];
  dryRun?: boolean;
}

/** DeniedConnection is one egress attempt the policy denied, or in dry-run would have denied. */
export interface DeniedConnection {
  jobId: string;
  cellId: string;
  action: 'denied' | 'dry-run';
  destination: string;
  protocol: string;
  port: number | null;
  time: string;
}

/** JobRequest is the body of a new job. */
export interface JobRequest {
  /** argv; absent: the image's Entrypoint + Cmd. */
  command?: string[];
  /** NAME[:TAG] or sha256:<digest>; absent: the configured default image. */
  image?: string;
  env?: Record<string, string>;
  cwd?: string;
  cpu?: number;
  memoryMiB?: number;
  timeoutSeconds?: number;
  diskMiB?: number;
  runtime?: string;
  /** What the job's token may do in the workspace data store. */
  data?: Array<{ prefix: string; access: 'read' | 'read-write' }>;
}

/** StoredObject is an object's record in the workspace data store. */
export interface StoredObject {
  key: string;
  size: number;
  sha256: string;
  createdAt: string;
}

/** AuditEvent is one entry of the hash-chained audit log. */
export interface AuditEvent {
  seq: number;
  time: string;
  type: string;
  actor: string;
  workspaceId: string | null;
  subject: string | null;
  details: Record<string, unknown>;
  prevHash: string;
  hash: string;
}

/** AuditVerdict is the result of checking the audit chain. */
export interface AuditVerdict {
  ok: boolean;
  events: number;
  lastHash?: string;
  brokenAt?: number;
  reason?: string;
}

/** OutputChunk is a decoded piece of output. */
export interface OutputChunk {
  seq: number;
  stream: 'stdout' | 'stderr';
  data: Buffer;
}

/** Workspace is a workspace as the API returns it. */
export interface Workspace {
  id: string;
  name: string;
  createdAt: string;
  maxCpu: number;
  maxMemoryMiB: number;
  maxTimeoutSeconds: number;
}

/**
 * ApiKeyRole is what a key may do. platform-admin: every workspace, every key, all audit events, the chain check;
 * workspace-admin: its own workspace's keys and audit events; member: its workspace's jobs, data, network policy and
 * audit events. Each role can do what a member does in its own workspace.
 */
export type ApiKeyRole = 'platform-admin' | 'workspace-admin' | 'member';

/** ApiKey is a key as the API lists it (never its secret). */
export interface ApiKey {
  id: string;
  workspaceId: string;
  name: string;
  role: ApiKeyRole;
  createdAt: string;
  revokedAt: string | null;
}

/** PoolEntry counts cells of one runtime/class on one agent. */
export interface PoolEntry {
  /** Warm cells the pool aims for now: demand-sized between min and max. */
  target: number;
  warm: number;
  preparing: number;
  busy: number;
  lastError: string | null;
  min?: number;
  max?: number;
  /** Why the target is what it is. */
  reason?: string;
}

/** AgentInfo is one agent of the fleet, as platform admins list it (GET /v1/agents; from the served OpenAPI document). */
export type AgentInfo = Json<'listAgents'>['agents'][number];

/** AgentState is how an operator sees an agent: removed wins over draining, which wins over the connection. */
export type AgentState = AgentInfo['state'];

/** AgentOffers is what an agent can run: its runtimes and size classes (null in AgentInfo: an agent that does not say). */
export type AgentOffers = NonNullable<AgentInfo['offers']>;

/** VolumeCounts counts one agent's encrypted volumes by state. */
export interface VolumeCounts {
  warm: number;
  inUse: number;
  wiping: number;
  wiped: number;
  wipeFailed: number;
}

/** WipeReceipt records how a job's volume was crypto-shredded. */
export type WipeReceipt = NonNullable<Job['wipe']>;

/** CleanroomError is an API error; match on `code`, never on the message. */
export class CleanroomError extends Error {
  constructor(
    readonly code: string,
    readonly status: number,
    message: string,
    readonly details?: unknown,
  ) {
    super(message);
  }
}

/** TERMINAL lists the statuses a job ends in. */
export const TERMINAL = ['succeeded', 'failed', 'timeout', 'oom', 'cancelled', 'error'] as const;

/** UNREACHED are connection errors that mean the request never reached a server: any call may go to another replica. */
const UNREACHED = new Set(['ECONNREFUSED', 'EHOSTUNREACH', 'ENETUNREACH', 'ENOTFOUND', 'EAI_AGAIN']);
/** STREAM_RESUMES bounds the times in a row a live log stream is resumed (on any replica) without receiving anything. */
const STREAM_RESUMES = 10;

/**
 * CleanroomClient calls the API over one keep-alive TLS connection pool. With several replica URLs it moves to the next
 * one when a replica cannot be reached: any call whose connection was refused (nothing was sent, so nothing is done
 * twice), reads (GET) also on a reset connection or a 502/503, and live log streams resume on the next replica after
 * the last seq they received. A create (POST) whose connection broke after it was sent is never retried: the job may
 * exist, and running it twice is worse than an error.
 */
export class CleanroomClient {
  /** agent is the connection pool (the Sandbox class streams over it). */
  readonly agent: Agent;
  /** bases are the API's URLs (one per replica); calls use the current one. */
  readonly bases: URL[];
  private current = 0;

  constructor(readonly opts: ClientOptions) {
    const urls = opts.urls?.length ? opts.urls : opts.url.split(',').map((u) => u.trim()).filter(Boolean);
    this.bases = urls.map((u) => new URL(u));
    if (this.bases.length === 0) throw new CleanroomError('invalid_request', 0, 'no API URL given');
    this.agent = new Agent({ keepAlive: true, ca: opts.ca, minVersion: 'TLSv1.2' });
  }

  /** base is the API's URL in use now. */
  get base(): URL {
    return this.bases[this.current]!;
  }

  /** failedOver moves to the next replica URL if `failed` is still the one in use; true when there is another to try. */
  failedOver(failed: URL): boolean {
    if (this.bases.length < 2) return false;
    if (this.base === failed) this.current = (this.current + 1) % this.bases.length;
    return true;
  }

  /** health reports liveness and connected agents. */
  health(): Promise<{ ok: boolean; agents: number }> {
    return this.call('GET', '/v1/health');
  }

  /** whoami returns the key in use, its role and its workspace. */
  whoami(): Promise<{ keyId: string; role: ApiKeyRole; workspace: Workspace }> {
    return this.call('GET', '/v1/whoami');
  }

  /** createJob submits a job. */
  createJob(req: JobRequest): Promise<Job> {
    return this.call('POST', '/v1/jobs', req);
  }

  /**
   * createJobs submits up to 100 jobs in one request (POST /v1/jobs/batch), all or none: a bad item rejects the whole
   * batch with its error's code and `details.index`; the jobs come back in request order. Like createJob, it is never
   * resent once the request may have reached a server.
   */
  async createJobs(reqs: readonly JobRequest[]): Promise<Job[]> {
    return (await this.call<{ jobs: Job[] }>('POST', '/v1/jobs/batch', { jobs: reqs })).jobs;
  }

  /** getJob fetches one job. */
  getJob(id: string): Promise<Job> {
    return this.call('GET', `/v1/jobs/${encodeURIComponent(id)}`);
  }

  /** listJobs lists the newest jobs. */
  async listJobs(limit = 100): Promise<Job[]> {
    return (await this.call<{ jobs: Job[] }>('GET', `/v1/jobs?limit=${limit}`)).jobs;
  }

  /** cancelJob asks for a job to be stopped. */
  cancelJob(id: string): Promise<Job> {
    return this.call('POST', `/v1/jobs/${encodeURIComponent(id)}/cancel`);
  }

  /** logsPage returns one page of stored output after `after` (the server bounds a page; follow nextAfter for more). */
  async logsPage(id: string, after = 0, limit?: number): Promise<{ chunks: OutputChunk[]; complete: boolean; nextAfter: number | null }> {
    const q = new URLSearchParams({ after: String(after), ...(limit ? { limit: String(limit) } : {}) });
    const r = await this.call<{ chunks: Array<{ seq: number; stream: 'stdout' | 'stderr'; data: string }>; complete: boolean; nextAfter: number | null }>('GET', `/v1/jobs/${encodeURIComponent(id)}/logs?${q}`);
    return { complete: r.complete, nextAfter: r.nextAfter, chunks: r.chunks.map((c) => ({ ...c, data: Buffer.from(c.data, 'base64') })) };
  }

  /** logs returns all the output stored so far, page by page. */
  async logs(id: string): Promise<{ chunks: OutputChunk[]; complete: boolean }> {
    const chunks: OutputChunk[] = [];
    let after = 0;
    for (;;) {
      const page = await this.logsPage(id, after);
      chunks.push(...page.chunks);
      if (page.nextAfter === null) return { chunks, complete: page.complete };
      after = page.nextAfter;
    }
  }

  /** followLogs streams output live (SSE) and resolves with the ended job. */
  followLogs(id: string, onChunk: (c: OutputChunk) => void): Promise<Job> {
    return this.stream('GET', `/v1/jobs/${encodeURIComponent(id)}/logs?follow=true`, undefined, { onChunk });
  }

  /**
   * runJob submits a job and streams its output in the same round trip (POST /v1/jobs?follow=true): `onCreated` gets
   * the job record as soon as it exists (for its id, e.g. to cancel), `onChunk` each piece of output; resolves with
   * the ended job. Invalid requests reject before anything runs, as with createJob.
   */
  runJob(req: JobRequest, onChunk: (c: OutputChunk) => void, onCreated?: (job: Job) => void): Promise<Job> {
    return this.stream('POST', '/v1/jobs?follow=true', req, { onChunk, onCreated });
  }

  // Sends one request whose answer is a job's event stream (`created`, `output`…, `end`) and resolves with the ended job.
  // With several replicas, a stream that breaks off is resumed on the next one after the last seq received.
  private async stream(method: string, path: string, body: unknown, on: { onChunk: (c: OutputChunk) => void; onCreated?: (job: Job) => void }): Promise<Job> {
    let jobId: string | null = /^\/v1\/jobs\/([^/?]+)\/logs/.exec(path)?.[1] ?? null;
    let after = Number(/[?&]after=(\d+)/.exec(path)?.[1] ?? 0);
    let failures = 0;
    let first = true;
    for (;;) {
      const base = this.base;
      const [m, p, b] = first ? [method, path, body] : ['GET', `/v1/jobs/${jobId!}/logs?follow=true&after=${after}`, undefined];
      try {
        return await this.streamOnce(base, m, p, b, {
          onCreated: (job) => {
            jobId = encodeURIComponent(job.id);
            on.onCreated?.(job);
          },
          onChunk: (c) => {
            if (c.seq <= after) return; // already delivered before a resume
            after = c.seq;
            failures = 0;
            on.onChunk(c);
          },
        });
      } catch (e) {
        // A create whose request may have reached a server is not sent again; once it said `created`, its log is followed.
        const unreached = UNREACHED.has((e as NodeJS.ErrnoException).code ?? '');
        const broken = !(e instanceof CleanroomError) || e.code === 'stream_closed' || e.status === 502 || e.status === 503;
        if (!broken || ++failures > STREAM_RESUMES || !this.failedOver(base)) throw e;
        if (jobId === null && !unreached) throw e;
        if (jobId !== null) first = false;
        await new Promise((r) => setTimeout(r, Math.min(2000, 100 * failures)));
      }
    }
  }

  private streamOnce(base: URL, method: string, path: string, body: unknown, on: { onChunk: (c: OutputChunk) => void; onCreated: (job: Job) => void }): Promise<Job> {
    return new Promise((resolve, reject) => {
      const payload = body === undefined ? undefined : JSON.stringify(body);
      const headers = { ...this.headers(), accept: 'text/event-stream', ...(payload ? { 'content-type': 'application/json' } : {}) };
      const req = request(new URL(path, base), { method, agent: this.agent, headers }, (res) => {
        if ((res.statusCode ?? 500) >= 400) return void readError(res).then(reject, reject);
        let ended: Job | null = null;
        readEvents(res, (event, data) => {
          if (event === 'output') {
            const c = JSON.parse(data) as { seq: number; stream: 'stdout' | 'stderr'; data: string };
            on.onChunk({ ...c, data: Buffer.from(c.data, 'base64') });
          } else if (event === 'created') on.onCreated(JSON.parse(data) as Job);
          else if (event === 'end') ended = JSON.parse(data) as Job;
        });
        res.on('end', () => (ended ? resolve(ended) : reject(new CleanroomError('stream_closed', 0, 'the log stream closed before the job ended'))));
        res.on('error', reject);
        res.on('aborted', () => reject(new CleanroomError('stream_closed', 0, 'the log stream was cut off before the job ended')));
      });
      req.on('error', reject);
      req.end(payload);
    });
  }

  /** pool returns the warm pool of every agent. */
  pool(): Promise<{ agents: Record<string, Record<string, PoolEntry>>; volumes: Record<string, VolumeCounts> }> {
    return this.call('GET', '/v1/pool');
  }

  /** listAgents lists every agent the control plane knows (platform admin). */
  async listAgents(): Promise<AgentInfo[]> {
    return (await this.call<{ agents: AgentInfo[] }>('GET', '/v1/agents')).agents;
  }

  /** drainAgent stops new placements on an agent; its running work finishes (platform admin). */
  drainAgent(id: string): Promise<AgentInfo> {
    return this.call('POST', `/v1/agents/${encodeURIComponent(id)}/drain`);
  }

  /** undrainAgent lets an agent take work again, re-admitting a removed one (platform admin). */
  undrainAgent(id: string): Promise<AgentInfo> {
    return this.call('POST', `/v1/agents/${encodeURIComponent(id)}/undrain`);
  }

  /** removeAgent forgets an agent: disconnected, or drained with nothing running, else `conflict` (platform admin). */
  removeAgent(id: string): Promise<AgentInfo> {
    return this.call('DELETE', `/v1/agents/${encodeURIComponent(id)}`);
  }

  /** getNetworkPolicy returns the workspace's egress policy (normalised; every rule has its protocol). */
  getNetworkPolicy(): Promise<Required<EgressPolicy>> {
    return this.call('GET', '/v1/network/policy');
  }

  /** setNetworkPolicy replaces the workspace's egress policy for workloads created from now on; bad input throws `invalid_policy`. */
  setNetworkPolicy(policy: EgressPolicy): Promise<Required<EgressPolicy>> {
    return this.call('PUT', '/v1/network/policy', policy);
  }

  /** listDeniedConnections lists the workspace's denied connections, newest first. */
  async listDeniedConnections(opts: { limit?: number; jobId?: string } = {}): Promise<DeniedConnection[]> {
    const q = new URLSearchParams();
    if (opts.limit !== undefined) q.set('limit', String(opts.limit));
    if (opts.jobId !== undefined) q.set('jobId', opts.jobId);
    const qs = q.size ? `?${q.toString()}` : '';
    return (await this.call<{ denied: DeniedConnection[] }>('GET', `/v1/network/denied${qs}`)).denied;
  }

  /** listWorkspaces lists workspaces (platform admin). */
  async listWorkspaces(): Promise<Workspace[]> {
    return (await this.call<{ workspaces: Workspace[] }>('GET', '/v1/workspaces')).workspaces;
  }

  /** createWorkspace makes a workspace (platform admin). */
  createWorkspace(body: { name: string; maxCpu?: number; maxMemoryMiB?: number; maxTimeoutSeconds?: number }): Promise<Workspace> {
    return this.call('POST', '/v1/workspaces', body);
  }

  /**
   * createApiKey mints a key (default role member); the key is only in this response. A workspace admin may mint
   * keys of its own workspace up to workspace-admin; another workspace is `not_found`, a higher role `forbidden`.
   */
  createApiKey(body: { workspace: string; name: string; role?: ApiKeyRole }): Promise<{ id: string; key: string; workspaceId: string; role: ApiKeyRole }> {
    return this.call('POST', '/v1/api-keys', body);
  }

  /** listApiKeys lists keys, revoked ones included: of one workspace, or every one the caller may see (workspace admin). */
  async listApiKeys(opts: { workspace?: string } = {}): Promise<ApiKey[]> {
    const q = opts.workspace === undefined ? '' : `?${new URLSearchParams({ workspace: opts.workspace }).toString()}`;
    return (await this.call<{ keys: ApiKey[] }>('GET', `/v1/api-keys${q}`)).keys;
  }

  /** revokeApiKey stops a key from working (workspace admin: its own workspace's keys). */
  revokeApiKey(id: string): Promise<{ id: string; revokedAt: string }> {
    return this.call('DELETE', `/v1/api-keys/${encodeURIComponent(id)}`);
  }

  /** putObject streams `body` into the workspace data store under `key`. */
  putObject(key: string, body: Readable | Buffer | string, size?: number): Promise<StoredObject> {
    return this.upload('PUT', this.objectUrl(key), 'application/octet-stream', body, size);
  }

  /** upload streams a raw body and parses the JSON answer (an API error rejects as CleanroomError). */
  private upload<T>(method: string, url: URL, contentType: string, body: Readable | Buffer | string, size?: number): Promise<T> {
    return new Promise((resolve, reject) => {
      const headers: Record<string, string> = { ...this.headers(), 'content-type': contentType };
      if (size !== undefined) headers['content-length'] = String(size);
      const req = request(url, { method, agent: this.agent, headers }, (res) => {
        let text = '';
        res.setEncoding('utf8');
        res.on('data', (d: string) => (text += d));
        res.on('end', () => {
          try {
            const parsed: unknown = JSON.parse(text);
            if ((res.statusCode ?? 500) >= 400) reject(toError(res.statusCode ?? 500, parsed));
            else resolve(parsed as T);
          } catch {
            reject(new CleanroomError('http_error', res.statusCode ?? 0, text));
          }
        });
      });
      req.on('error', reject);
      if (typeof body === 'string' || Buffer.isBuffer(body)) req.end(body);
      else {
        body.on('error', (e) => req.destroy(e));
        body.pipe(req);
      }
    });
  }

  /** getObject opens an object's bytes as a stream (each chunk authenticated by the service before it is sent). */
  getObject(key: string): Promise<IncomingMessage> {
    return new Promise((resolve, reject) => {
      const req = request(this.objectUrl(key), { method: 'GET', agent: this.agent, headers: this.headers() }, (res) => {
        if ((res.statusCode ?? 500) >= 400) return void readError(res).then(reject, reject);
        resolve(res);
      });
      req.on('error', reject);
      req.end();
    });
  }

  /** listObjects lists objects under a prefix, in key order (one page; pass `next` back as `after`). */
  listObjects(opts: { prefix?: string; after?: string; limit?: number } = {}): Promise<{ objects: StoredObject[]; next: string | null }> {
    const q = new URLSearchParams();
    for (const [k, v] of Object.entries(opts)) if (v !== undefined) q.set(k, String(v));
    return this.call('GET', `/v1/data/objects${q.size ? `?${q.toString()}` : ''}`);
  }

  /** deleteObject removes an object. */
  async deleteObject(key: string): Promise<void> {
    await this.call('DELETE', `/v1/data/objects/${encodeKey(key)}`);
  }

  /** listAuditEvents returns audit events, newest first: every workspace's for a platform admin, else the key's own workspace's. */
  async listAuditEvents(opts: { limit?: number; before?: number; type?: string; workspace?: string } = {}): Promise<AuditEvent[]> {
    const q = new URLSearchParams();
    for (const [k, v] of Object.entries(opts)) if (v !== undefined) q.set(k, String(v));
    return (await this.call<{ events: AuditEvent[] }>('GET', `/v1/audit${q.size ? `?${q.toString()}` : ''}`)).events;
  }

  /** verifyAudit checks the whole audit chain (platform admin). */
  verifyAudit(): Promise<AuditVerdict> {
    return this.call('GET', '/v1/audit/verify');
  }

  /** importImage starts an import from a registry; the image comes back in state `pulling` (see waitForImage). */
  importImage(req: ImageImport): Promise<Image> {
    return this.call('POST', '/v1/images', req);
  }

  /** importImageArchive uploads a tarball (docker save, an OCI archive, or a tar of an OCI layout) and starts its import. */
  importImageArchive(name: string, body: Readable | Buffer, opts: { size?: number; public?: boolean } = {}): Promise<Image> {
    const q = new URLSearchParams({ name, ...(opts.public ? { public: 'true' } : {}) });
    return this.upload('POST', new URL(`/v1/images/archive?${q}`, this.base), 'application/x-tar', body, opts.size);
  }

  /** listImages lists the workspace's images and the public ones. */
  async listImages(): Promise<Image[]> {
    return (await this.call<{ images: Image[] }>('GET', '/v1/images')).images;
  }

  /** getImage fetches an image by NAME[:TAG] or sha256:<digest>. */
  getImage(id: string): Promise<Image> {
    return this.call('GET', `/v1/images/${encodeURIComponent(id)}`);
  }

  /** deleteImage removes an image (409 image_in_use while jobs use it). */
  async deleteImage(id: string): Promise<Image[]> {
    return (await this.call<{ removed: Image[] }>('DELETE', `/v1/images/${encodeURIComponent(id)}`)).removed;
  }

  /**
   * waitForImage polls an image until its state is one of `until` (default ready or failed), calling onProgress with each
   * state seen; resolves with the image (a failed one too: look at `error`).
   */
  async waitForImage(id: string, opts: { until?: ImageState[]; timeoutMs?: number; intervalMs?: number; onProgress?: (i: Image) => void } = {}): Promise<Image> {
    const until = opts.until ?? ['ready', 'failed'];
    const deadline = Date.now() + (opts.timeoutMs ?? 30 * 60_000);
    for (;;) {
      const image = await this.getImage(id);
      opts.onProgress?.(image);
      if (until.includes(image.state) || image.state === 'failed') return image;
      if (Date.now() > deadline) throw new CleanroomError('timeout', 0, `image ${id} is still ${image.state}`);
      await new Promise((r) => setTimeout(r, opts.intervalMs ?? 250));
    }
  }

  /**
   * raw sends any request and returns status and parsed body (for tools and tests of the API itself). With several
   * replicas it tries the next one when the connection was refused, and for a GET also when it broke or the replica
   * answered 502/503.
   */
  async raw(method: string, path: string, body?: string, headers: Record<string, string> = {}): Promise<{ status: number; body: unknown }> {
    const read = method === 'GET' || method === 'HEAD';
    for (let tried = 1; ; tried++) {
      const base = this.base;
      const last = tried >= this.bases.length;
      try {
        const r = await this.rawOnce(base, method, path, body, headers);
        if (read && (r.status === 502 || r.status === 503) && !last && this.failedOver(base)) continue;
        return r;
      } catch (e) {
        const code = (e as NodeJS.ErrnoException).code ?? '';
        if (last || !(UNREACHED.has(code) || (read && (code === 'ECONNRESET' || code === 'EPIPE' || code === 'ETIMEDOUT'))) || !this.failedOver(base)) throw e;
      }
    }
  }

  private rawOnce(base: URL, method: string, path: string, body: string | undefined, headers: Record<string, string>): Promise<{ status: number; body: unknown }> {
    return new Promise((resolve, reject) => {
      const req = request(new URL(path, base), { method, agent: this.agent, headers: { ...this.headers(), ...headers } }, (res) => {
        let text = '';
        res.setEncoding('utf8');
        res.on('data', (d: string) => (text += d));
        res.on('end', () => {
          let parsed: unknown = text;
          try {
            parsed = JSON.parse(text);
          } catch {
            /* not JSON: keep the text */
          }
          resolve({ status: res.statusCode ?? 0, body: parsed });
        });
      });
      req.on('error', reject);
      req.end(body);
    });
  }

  /** close drops kept-alive connections. */
  close(): void {
    this.agent.destroy();
  }

  private objectUrl(key: string): URL {
    return new URL(`/v1/data/objects/${encodeKey(key)}`, this.base);
  }

  /** headers are the authorization headers of every request. */
  headers(): Record<string, string> {
    return this.opts.apiKey ? { authorization: `Bearer ${this.opts.apiKey}` } : {};
  }

  /** call sends a JSON request and returns the parsed answer, or throws a CleanroomError. */
  async call<T>(method: string, path: string, body?: unknown): Promise<T> {
    const r = await this.raw(method, path, body === undefined ? undefined : JSON.stringify(body), body === undefined ? {} : { 'content-type': 'application/json' });
    if (r.status >= 400) throw toError(r.status, r.body);
    return r.body as T;
  }
}

// Each segment is percent-encoded; the slashes between them stay (the service takes the rest of the path as the key).
// URLs resolve "." and ".." segments (even encoded) before sending, which would silently store "a/../b" as "b": refuse them here.
function encodeKey(key: string): string {
  const segments = key.split('/');
  if (segments.some((s) => s === '.' || s === '..')) throw new CleanroomError('invalid_object_key', 400, 'an object key must not contain "." or ".." segments');
  return segments.map(encodeURIComponent).join('/');
}

function toError(status: number, body: unknown): CleanroomError {
  const e = (body as { error?: { code?: string; message?: string; details?: unknown } })?.error;
  return new CleanroomError(e?.code ?? 'http_error', status, e?.message ?? `HTTP ${status}`, e?.details);
}

/** readError reads an error answer into a CleanroomError. */
export async function readError(res: IncomingMessage): Promise<CleanroomError> {
  let text = '';
  for await (const d of res) text += d;
  try {
    return toError(res.statusCode ?? 0, JSON.parse(text));
  } catch {
    return new CleanroomError('http_error', res.statusCode ?? 0, text);
  }
}
