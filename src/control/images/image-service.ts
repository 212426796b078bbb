/**
 * ImageService owns image records: imports (registry, archive, the default image's OCI layout) run in the background
 * through skopeo into a staging layout, are checked, their blobs verified into the content-addressed store, and the
 * image handed to agents to unpack (image.prepare); it is ready when an agent says so. Images belong to a workspace,
 * or are public (published by a platform admin); another workspace's private image does not exist for a caller.
 */
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import { ApiError } from '../../shared/errors.js';
import type { ImageManifest } from '../../shared/wire.js';
import type { ImageEvents } from '../agents/agent-hub.js';
import type { Principal } from '../api/route-table.js';
import type { AuditLog } from '../audit/audit-log.js';
import { TERMINAL_STATUSES, type ImageRecord, type Workspace } from '../model.js';
import type { Quotas } from '../quotas/quotas.js';
import type { Store } from '../store/store.js';
import { receiveArchive, sniffArchive } from './archive-upload.js';
import type { BlobStore } from './blob-store.js';
import { dirBytes } from './dir-bytes.js';
import { failureOf, ImageImportError } from './image-error.js';
import { defaultNameOf, describeSource, lookupText, parseImageLookup, parseImageName, parseRegistrySource, type ImageLookup, type ImageName, type ImageSource } from './image-ref.js';
import { ImportQueue } from './import-queue.js';
import { Skopeo, type SkopeoAccess } from './skopeo.js';
import { readStagedImage } from './staged-image.js';

/** ImageAgents sends image messages to agents (the agent hub implements it). */
export interface ImageAgents {
  /** prepareImage asks every connected agent (or one) to unpack the image; returns the agents asked. */
  prepareImage(image: ImageManifest, maxUnpackedBytes: number, agentId?: string): string[];
  /** removeImage asks every connected agent to drop the image. */
  removeImage(digest: string): string[];
}

/** ImageLimits are the images section of the configuration, resolved. */
export interface ImageLimits {
  maxUnpackedBytes: number;
  maxArchiveBytes: number;
  maxConcurrentImports: number;
  importTimeoutMs: number;
  maxLayers: number;
  maxConfigBytes: number;
  /** The image of jobs that name none: a name[:tag], or 'host'. */
  defaultImage: string;
  /** The OCI layout the default image is imported from when absent. */
  defaultSource: string;
}

/** ImportRequest is what `POST /v1/images` asks for. */
export interface ImportRequest {
  source: string;
  name?: string | undefined;
  credentials?: { username: string; password: string } | undefined;
  caPem?: string | undefined;
  public?: boolean | undefined;
}

/** JobImageChoice is the image a job runs on: null is the host root. */
export type JobImageChoice = { record: ImageRecord; ref: string } | null;

/** PROGRESS_POLL_MS is how often a running import's bytes are measured and recorded. */
const PROGRESS_POLL_MS = 500;
/** UNFINISHED lists the job statuses that hold an image in use. */
const UNFINISHED = ['queued', 'assigned', 'running'];

/** ImageService is the only writer of image records and blobs. */
export class ImageService implements ImageEvents {
  private agents: ImageAgents | null = null;
  private readonly queue: ImportQueue;
  /** Imports in flight (their promise), by record id, so tests and shutdown can wait for them. */
  private readonly inFlight = new Map<string, Promise<void>>();

  constructor(
    private readonly store: Store,
    private readonly blobs: BlobStore,
    private readonly quotas: Quotas,
    private readonly audit: AuditLog,
    private readonly limits: ImageLimits,
    private readonly log: (msg: string, extra?: object) => void = () => {},
  ) {
    this.queue = new ImportQueue(limits.maxConcurrentImports);
  }

  /** attach connects the agent hub, which is built after the services. */
  attach(agents: ImageAgents): void {
    this.agents = agents;
  }

  /** init prepares the store at start: staging emptied, imports a stop interrupted marked failed, orphan blobs removed. */
  async init(): Promise<void> {
    await this.blobs.init();
    for (const r of await this.store.imagesInStates(['pulling'])) {
      await this.store.updateImage(r.id, { state: 'failed', error: { code: 'internal', message: 'the control plane stopped during the import; import it again' }, updatedAt: now() });
    }
    const freed = await this.blobs.sweep(() => this.referencedBlobs());
    if (freed > 0) this.log('images: removed blobs no image uses', { bytes: freed });
  }

  // ---- imports ----

  /** importFromRegistry records an import of a registry image and starts it in the background (202: state pulling). */
  async importFromRegistry(p: Principal, req: ImportRequest, actor: string): Promise<ImageRecord> {
    const source = parseRegistrySource(req.source);
    const name = req.name !== undefined ? parseImageName(req.name) : defaultNameOf(source);
    const record = await this.begin(p, name, source, req.public === true, actor);
    this.start(record, async (work) => {
      const skopeo = new Skopeo(work, this.limits.importTimeoutMs, source.registry, { credentials: req.credentials, caPem: req.caPem } satisfies SkopeoAccess);
      const info = await skopeo.inspect(source);
      if (info.architecture !== 'amd64' || info.os !== 'linux') throw new ImageImportError('image_platform_mismatch', `the image is for ${info.os || '?'}/${info.architecture || '?'}; only linux/amd64 runs here`);
      if (info.layerBytes !== null) await this.store.updateImage(record.id, { bytesTotal: info.layerBytes, updatedAt: now() });
      return { skopeo, source };
    });
    return record;
  }

  /** importArchive receives an uploaded archive (docker save or OCI archive) and imports it in the background. */
  async importArchive(p: Principal, nameText: string, isPublic: boolean, body: Readable, declaredBytes: number | null, actor: string): Promise<ImageRecord> {
    const name = parseImageName(nameText);
    if (declaredBytes !== null && declaredBytes > this.limits.maxArchiveBytes) {
      throw new ApiError('payload_too_large', `the archive declares ${declaredBytes} bytes; at most ${this.limits.maxArchiveBytes} are accepted (images.maxArchiveMiB)`);
    }
    const record = await this.begin(p, name, { kind: 'archive', format: 'docker-archive', path: '' }, isPublic, actor, declaredBytes);
    const work = await this.workDir(record.id);
    const path = join(work, 'upload.tar');
    let lastReport = 0;
    try {
      await receiveArchive(body, path, this.limits.maxArchiveBytes, (n) => {
        if (Date.now() - lastReport < PROGRESS_POLL_MS) return;
        lastReport = Date.now();
        void this.store.updateImage(record.id, { bytesDone: n, updatedAt: now() });
      });
    } catch (e) {
      await rm(work, { recursive: true, force: true });
      await this.fail(record, e);
      if (e instanceof ImageImportError && e.code === 'image_too_large') throw new ApiError('payload_too_large', e.message);
      throw e;
    }
    this.start(record, async () => {
      const format = await sniffArchive(path);
      await this.store.updateImage(record.id, { source: `archive:${format}`, updatedAt: now() });
      return { skopeo: new Skopeo(work, this.limits.importTimeoutMs, null, {}), source: { kind: 'archive', format, path } };
    }, work);
    return (await this.store.getImage(record.id)) ?? record;
  }

  /**
   * ensureDefaultImage imports the configured default image as a public image from its OCI layout when it is absent
   * (or its last import failed). Returns what it did; never throws (the control plane starts anyway, and says why).
   */
  async ensureDefaultImage(): Promise<string> {
    if (this.limits.defaultImage === 'host') return 'the default is the host root';
    const name = parseImageName(this.limits.defaultImage, 'images.default');
    const found = await this.store.findImage(null, name);
    if (found && found.state !== 'failed') return `public image ${name.name}:${name.tag} is ${found.state}`;
    if (!existsSync(join(this.limits.defaultSource, 'index.json'))) {
      return `the default image ${name.name}:${name.tag} is absent and ${this.limits.defaultSource} holds no OCI layout (build it at install: scripts/install-deps.sh); jobs that name no image fail until it exists`;
    }
    if (found) await this.store.deleteImage(found.id);
    const record = this.newRecord(null, name, { kind: 'oci-layout', dir: this.limits.defaultSource }, 'system', null);
    await this.store.createImage(record);
    this.start(record, async (work) => ({ skopeo: new Skopeo(work, this.limits.importTimeoutMs, null, {}), source: { kind: 'oci-layout', dir: this.limits.defaultSource } }));
    return `importing the default image ${name.name}:${name.tag} from ${this.limits.defaultSource}`;
  }

  /** settled waits for every import in flight (tests, shutdown). */
  async settled(): Promise<void> {
    while (this.inFlight.size > 0) await Promise.allSettled([...this.inFlight.values()]);
  }

  /** begin checks the caller may import (role for public, name free, quota left) and records the import. */
  private async begin(p: Principal, name: ImageName, source: ImageSource, isPublic: boolean, actor: string, bytesTotal: number | null = null): Promise<ImageRecord> {
    if (isPublic && p.key?.role !== 'platform-admin') throw new ApiError('forbidden', 'only a platform admin may publish a public image');
    const owner = isPublic ? null : p.workspace.id;
    if (owner !== null) {
      const quota = this.quotas.of(p.workspace);
      const used = await this.store.imageBytes(owner);
      if (used >= quota.maxImageBytes) throw new ApiError('quota_exceeded', `this workspace's images take ${used} bytes; at most ${quota.maxImageBytes} (quotas.maxImageBytesMiB): remove an image first`, { quota: 'maxImageBytes', limit: quota.maxImageBytes });
    }
    const existing = await this.store.findImage(owner, name);
    if (existing && existing.state !== 'failed') throw new ApiError('already_exists', `${owner ? 'this workspace' : 'the platform'} already has an image ${name.name}:${name.tag} (${existing.state}); remove it first or choose another name`);
    if (existing) await this.store.deleteImage(existing.id);
    const record = this.newRecord(owner, name, source, actor, bytesTotal);
    if (!(await this.store.createImage(record))) throw new ApiError('already_exists', `an image ${name.name}:${name.tag} is being imported already`);
    await this.audit.record({ type: 'image.imported', actor, workspaceId: p.workspace.id, subject: record.id, details: { name: name.name, tag: name.tag, source: record.source, public: owner === null } });
    return record;
  }

  private newRecord(owner: string | null, name: ImageName, source: ImageSource, actor: string, bytesTotal: number | null): ImageRecord {
    const t = now();
    return {
      id: `img_${randomBytes(10).toString('hex')}`,
      workspaceId: owner,
      name: name.name,
      tag: name.tag,
      digest: null,
      state: 'pulling',
      source: describeSource(source),
      bytesDone: 0,
      bytesTotal,
      bytes: 0,
      unpackedBytes: null,
      manifest: null,
      blobs: [],
      error: null,
      createdAt: t,
      updatedAt: t,
      createdBy: actor,
    };
  }

  private async workDir(id: string): Promise<string> {
    const dir = join(this.blobs.tmpDir, id);
    await mkdir(dir, { recursive: true, mode: 0o700 });
    return dir;
  }

  /** start runs the import in the background (queued behind maxConcurrentImports); its outcome is the record's state,
   *  recorded once the staging directory is gone. */
  private start(record: ImageRecord, open: (work: string) => Promise<{ skopeo: Skopeo; source: ImageSource }>, givenWork?: string): void {
    const task = this.queue
      .run(async () => {
        const work = givenWork ?? (await this.workDir(record.id));
        let stored: ImageManifest | null = null;
        let failure: unknown = null;
        try {
          const { skopeo, source } = await open(work);
          stored = await this.transfer(record, skopeo, source, join(work, 'layout'));
        } catch (e) {
          failure = e;
        } finally {
          await rm(work, { recursive: true, force: true });
        }
        if (failure !== null || !stored) await this.fail(record, failure);
        else await this.handToAgents(record, stored);
      })
      .catch((e: Error) => this.log('image import crashed', { id: record.id, error: e.message }))
      .finally(() => this.inFlight.delete(record.id));
    this.inFlight.set(record.id, task);
  }

  /** transfer copies the source into the staging layout (recording progress), checks it and admits its blobs. */
  private async transfer(record: ImageRecord, skopeo: Skopeo, source: ImageSource, layout: string): Promise<ImageManifest> {
    const poll = setInterval(() => {
      void dirBytes(layout).then((n) => this.store.updateImage(record.id, { bytesDone: n, updatedAt: now() }));
    }, PROGRESS_POLL_MS);
    try {
      await skopeo.copy(source, layout);
    } finally {
      clearInterval(poll);
    }
    const staged = await readStagedImage(layout, { maxLayers: this.limits.maxLayers, maxConfigBytes: this.limits.maxConfigBytes, maxBlobBytes: this.limits.maxUnpackedBytes });
    if (record.workspaceId !== null) {
      const ws = await this.store.getWorkspace(record.workspaceId);
      const quota = ws ? this.quotas.of(ws).maxImageBytes : 0;
      const used = await this.store.imageBytes(record.workspaceId);
      if (used + staged.bytes > quota) throw new ImageImportError('quota_exceeded', `the image takes ${staged.bytes} bytes and the workspace's images ${used}; at most ${quota} together (quotas.maxImageBytesMiB)`);
    }
    // Recorded before the blobs move in, so a concurrent removal counts them as used (BlobStore serialises the two).
    const total = staged.bytes;
    await this.store.updateImage(record.id, { digest: staged.manifest.digest, manifest: staged.manifest, blobs: staged.blobs.map((b) => b.digest), bytes: total, bytesDone: total, bytesTotal: total, updatedAt: now() });
    await this.blobs.admit(layout, staged.blobs);
    return staged.manifest;
  }

  /** handToAgents makes a stored image `unpacking` and asks agents to prepare it (ready at once if they have it already). */
  private async handToAgents(record: ImageRecord, manifest: ImageManifest): Promise<void> {
    const ready = (await this.store.imagesWithDigest(manifest.digest)).find((r) => r.state === 'ready');
    if (ready) {
      // Agents have this image already (another name or workspace imported it): nothing to unpack.
      await this.store.updateImage(record.id, { state: 'ready', unpackedBytes: ready.unpackedBytes, updatedAt: now() });
      return;
    }
    await this.store.updateImage(record.id, { state: 'unpacking', updatedAt: now() });
    const asked = this.agents?.prepareImage(manifest, this.limits.maxUnpackedBytes) ?? [];
    this.log('image blobs stored; agents asked to prepare it', { id: record.id, digest: manifest.digest, agents: asked.length });
  }

  /** fail records an import's failure and removes whatever of it reached the store. */
  private async fail(record: ImageRecord, e: unknown): Promise<void> {
    const error = failureOf(e);
    if (error.code === 'internal') this.log('image import failed', { id: record.id, error: error.message });
    const current = await this.store.getImage(record.id);
    await this.store.updateImage(record.id, { state: 'failed', error, updatedAt: now() });
    if (current?.manifest) await this.dropBlobs(current.manifest, current.blobs ?? []);
  }

  // ---- reading ----

  /** list returns the workspace's images and the public ones. */
  list(ws: Workspace): Promise<ImageRecord[]> {
    return this.store.listImages(ws.id, true);
  }

  /** get finds an image the workspace may see by name[:tag] or digest: its own first, then a public one; 404 otherwise. */
  async get(ws: Workspace, ref: string): Promise<ImageRecord> {
    const lookup = lookupOrNotFound(ref);
    const found = (await this.store.findImage(ws.id, lookup)) ?? (await this.store.findImage(null, lookup));
    if (!found) throw new ApiError('image_not_found', `no image ${lookupText(lookup)} in this workspace or among public images`);
    return found;
  }

  /**
   * forJob resolves a job's image: the one it names, else images.default ('host': the host root, null). 404
   * image_not_found if the workspace sees none of that name, 409 image_not_ready unless it is ready.
   */
  async forJob(ws: Workspace, ref: string | undefined): Promise<JobImageChoice> {
    const wanted = ref ?? this.limits.defaultImage;
    if (ref === undefined && wanted === 'host') return null;
    const record = await this.get(ws, wanted).catch((e: unknown) => {
      if (ref === undefined && e instanceof ApiError) throw new ApiError('image_not_found', `the default image ${wanted} (images.default) is not imported; name an image, or ask the operator`);
      throw e;
    });
    if (record.state !== 'ready') {
      throw new ApiError('image_not_ready', `image ${wanted} is ${record.state}${record.error ? ` (${record.error.code}: ${record.error.message})` : ''}; it can run jobs once ready`);
    }
    return { record, ref: wanted };
  }

  // ---- removal ----

  /**
   * remove deletes the workspace's image (every name of a digest, for a digest); a public image only a platform admin
   * may remove. 409 image_in_use while unfinished jobs use it, conflict while it is still pulling. When no record names
   * the digest any more, agents are told to drop it and its blobs no other image uses are deleted.
   */
  async remove(p: Principal, ref: string, actor: string): Promise<ImageRecord[]> {
    const lookup: ImageLookup = lookupOrNotFound(ref);
    let targets = await this.recordsOf(p.workspace.id, lookup);
    if (targets.length === 0) {
      targets = await this.recordsOf(null, lookup);
      if (targets.length > 0 && p.key?.role !== 'platform-admin') throw new ApiError('forbidden', `${lookupText(lookup)} is a public image; only a platform admin may remove it`);
    }
    if (targets.length === 0) throw new ApiError('image_not_found', `no image ${lookupText(lookup)} in this workspace`);
    for (const t of targets) {
      if (t.state === 'pulling') throw new ApiError('conflict', `${t.name}:${t.tag} is still being imported; remove it once it is ready or failed`);
      const users = await this.jobsUsing(t);
      if (users.length > 0) throw new ApiError('image_in_use', `${users.length} job(s) that have not ended use ${t.name}:${t.tag} (e.g. ${users[0]}); remove it once they end`, { jobs: users.slice(0, 10) });
    }
    for (const t of targets) {
      await this.store.deleteImage(t.id);
      await this.audit.record({ type: 'image.removed', actor, workspaceId: p.workspace.id, subject: t.id, details: { name: t.name, tag: t.tag, digest: t.digest } });
      if (t.manifest) await this.dropBlobs(t.manifest, t.blobs ?? []);
    }
    return targets;
  }

  private async recordsOf(owner: string | null, lookup: ImageLookup): Promise<ImageRecord[]> {
    if (!('digest' in lookup)) {
      const r = await this.store.findImage(owner, lookup);
      return r ? [r] : [];
    }
    return (await this.store.imagesWithDigest(lookup.digest)).filter((r) => r.workspaceId === owner);
  }

  /** jobsUsing lists unfinished jobs on the record's image that could have named it (its workspace's, or any for a public one). */
  private async jobsUsing(r: ImageRecord): Promise<string[]> {
    if (!r.digest) return [];
    const jobs = await this.store.jobsWithStatus(UNFINISHED);
    return jobs.filter((j) => !TERMINAL_STATUSES.includes(j.status) && j.image?.digest === r.digest && (r.workspaceId === null || j.workspaceId === r.workspaceId)).map((j) => j.id);
  }

  /** dropBlobs, when no live record names the digest any more, tells agents to drop it and deletes blobs nobody uses. */
  private async dropBlobs(m: ImageManifest, blobs: readonly string[]): Promise<void> {
    const others = (await this.store.imagesWithDigest(m.digest)).filter((r) => r.state !== 'failed');
    if (others.length === 0) this.agents?.removeImage(m.digest);
    const freed = await this.blobs.removeUnreferenced(blobs, () => this.referencedBlobs());
    if (freed > 0) this.log('image blobs removed', { digest: m.digest, bytes: freed });
  }

  /** referencedBlobs lists every blob a live record (not failed) needs: manifest, config, layers. */
  private async referencedBlobs(): Promise<Set<string>> {
    const keep = new Set<string>();
    for (const r of await this.store.imagesInStates(['pulling', 'unpacking', 'ready'])) for (const b of r.blobs ?? []) keep.add(b);
    return keep;
  }

  // ---- agents (ImageEvents) ----

  /** onAgentImages prepares on a (re)connected agent every live image it lacks, and drops the ones no record names. */
  onAgentImages(agentId: string, digests: readonly string[]): void {
    void (async () => {
      const have = new Set(digests);
      const live = await this.store.imagesInStates(['unpacking', 'ready']);
      const sent = new Set<string>();
      for (const r of live) {
        if (!r.manifest || have.has(r.manifest.digest) || sent.has(r.manifest.digest)) continue;
        sent.add(r.manifest.digest);
        this.agents?.prepareImage(r.manifest, this.limits.maxUnpackedBytes, agentId);
      }
      const known = new Set(live.map((r) => r.digest));
      for (const d of have) if (!known.has(d)) this.agents?.removeImage(d);
    })().catch((e: Error) => this.log('images: hello handling failed', { agentId, error: e.message }));
  }

  /** onPrepared makes the digest's unpacking records ready, or failed with the agent's code (and drops the blobs). */
  async onPrepared(agentId: string, digest: string, unpackedBytes: number, error: { code: string; message: string } | null): Promise<void> {
    const records = (await this.store.imagesWithDigest(digest)).filter((r) => r.state === 'unpacking');
    for (const r of records) {
      await this.store.updateImage(r.id, error ? { state: 'failed', error: { code: error.code, message: `agent ${agentId}: ${error.message}` }, updatedAt: now() } : { state: 'ready', unpackedBytes, updatedAt: now() });
    }
    if (error && records[0]?.manifest) await this.dropBlobs(records[0].manifest, records[0].blobs ?? []);
    this.log(error ? 'image preparation failed' : 'image ready', { agentId, digest, records: records.length, ...(error ? { code: error.code } : { unpackedBytes }) });
  }

  /** onRemoved notes that an agent dropped an image. */
  async onRemoved(agentId: string, digest: string): Promise<void> {
    this.log('agent removed an image', { agentId, digest });
  }
}

/** lookupOrNotFound reads an id of the image routes; one that cannot name an image is an image that does not exist. */
function lookupOrNotFound(ref: string): ImageLookup {
  try {
    return parseImageLookup(ref, 'id');
  } catch {
    throw new ApiError('image_not_found', `no image ${JSON.stringify(ref.slice(0, 140))}: an image id is NAME[:TAG] or sha256:<64 hex>`);
  }
}

function now(): string {
  return new Date().toISOString();
}
