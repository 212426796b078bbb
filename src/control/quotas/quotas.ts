/** Per-workspace quotas: what each workspace may hold or do at once, and its request rate. */
import { ApiError } from '../../shared/errors.js';
import type { Config } from '../../shared/config.js';
import type { Workspace } from '../model.js';

/** Quota is one workspace's resolved quotas. */
export interface Quota {
  maxRunningJobs: number;
  maxQueuedJobs: number;
  maxObjects: number;
  maxObjectBytes: number;
  /** Bytes of image blobs the workspace's images may hold. */
  maxImageBytes: number;
  maxStreams: number;
  requestsPerSecond: number;
  requestBurst: number;
}

/** RESOLVED_KEPT bounds the workspaces whose resolved quotas are kept. */
const RESOLVED_KEPT = 10_000;

/** Quotas resolves a workspace's quotas (config defaults, overridden by name) and keeps its counters and buckets. */
export class Quotas {
  private readonly buckets = new Map<string, { tokens: number; at: number }>();
  private readonly streams = new Map<string, number>();

  constructor(
    private readonly config: Config['quotas'],
    private readonly now: () => number = Date.now,
  ) {}

  /** Resolved quotas by workspace name: they follow from the config alone, which does not change while the process runs. */
  private readonly resolved = new Map<string, Readonly<Quota>>();

  /** of returns the quotas of a workspace (resolved once per workspace name; every request asks). */
  of(ws: Workspace): Readonly<Quota> {
    const known = this.resolved.get(ws.name);
    if (known) return known;
    const { workspaces, maxObjectBytesMiB, maxImageBytesMiB, ...defaults } = this.config;
    const own = workspaces[ws.name] ?? {};
    const q: Quota = Object.freeze({
      ...defaults,
      maxObjectBytes: (own.maxObjectBytesMiB ?? maxObjectBytesMiB) * 1024 * 1024,
      maxImageBytes: (own.maxImageBytesMiB ?? maxImageBytesMiB) * 1024 * 1024,
      ...withoutUndefined({ ...own, maxObjectBytesMiB: undefined, maxImageBytesMiB: undefined }),
    });
    // Bounded: names come from workspaces that exist; should there be very many, the oldest are resolved again.
    if (this.resolved.size >= RESOLVED_KEPT) this.resolved.delete(this.resolved.keys().next().value!);
    this.resolved.set(ws.name, q);
    return q;
  }

  /**
   * takeRequest spends `cost` requests of the workspace's bucket (one per request; a batch create pays one per job, at
   * most a full burst), or throws 429 rate_limited with when to retry.
   */
  takeRequest(ws: Workspace, cost = 1): void {
    const q = this.of(ws);
    cost = Math.min(cost, q.requestBurst);
    const now = this.now();
    const b = this.buckets.get(ws.id) ?? { tokens: q.requestBurst, at: now };
    b.tokens = Math.min(q.requestBurst, b.tokens + ((now - b.at) / 1000) * q.requestsPerSecond);
    b.at = now;
    this.buckets.set(ws.id, b);
    if (b.tokens < cost) {
      const retryAfterSeconds = Math.max(1, Math.ceil((cost - b.tokens) / q.requestsPerSecond));
      throw new ApiError('rate_limited', `more than ${q.requestsPerSecond} requests per second (burst ${q.requestBurst}) from this workspace; retry after ${retryAfterSeconds} s`, { retryAfterSeconds });
    }
    b.tokens -= cost;
  }

  /** openStream counts a live stream of the workspace; returns its release, or throws 429 quota_exceeded. */
  openStream(ws: Workspace): () => void {
    const n = this.streams.get(ws.id) ?? 0;
    const max = this.of(ws).maxStreams;
    if (n >= max) throw new ApiError('quota_exceeded', `this workspace has ${n} live streams open; at most ${max} at once`, { quota: 'maxStreams', limit: max, retryAfterSeconds: 1 });
    this.streams.set(ws.id, n + 1);
    let released = false;
    return () => {
      if (released) return;
      released = true;
      const left = (this.streams.get(ws.id) ?? 1) - 1;
      if (left > 0) this.streams.set(ws.id, left);
      else this.streams.delete(ws.id);
    };
  }
}

function withoutUndefined<T extends Record<string, unknown>>(o: T): Partial<T> {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as Partial<T>;
}
