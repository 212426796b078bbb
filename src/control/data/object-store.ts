/** ObjectStore keeps a workspace's objects on local disk, each sealed (AES-256-GCM, chunked) under its own data key. */
import { createReadStream, createWriteStream, mkdirSync, renameSync, rmSync } from 'node:fs';
import { createHash, randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { Transform, type Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { ApiError } from '../../shared/errors.js';
import type { ObjectMeta } from '../model.js';
import type { ObjectQuery, Store } from '../store/store.js';
import { createOpenStream, createSealStream, newDataKey, unwrapKey, wrapKey } from './envelope.js';
import type { Keyring } from './keyring.js';
import type { Quotas } from '../quotas/quotas.js';

/** ObjectStore is the only reader and writer of object files and records. */
export class ObjectStore {
  constructor(
    private readonly store: Store,
    private readonly keyring: Keyring,
    private readonly dir: string,
    readonly maxBytes: number,
    private readonly quotas: Quotas,
  ) {}

  /** put streams `body` to disk sealed, then swaps the record in; on any failure nothing is left behind. */
  async put(workspaceId: string, key: string, body: Readable): Promise<ObjectMeta> {
    // The workspace's object quota: count (a replaced key does not add one) and bytes (the replaced object's are freed).
    const ws = await this.store.getWorkspace(workspaceId);
    if (!ws) throw new ApiError('not_found', 'no such workspace');
    const quota = this.quotas.of(ws);
    const [usage, existing] = await Promise.all([this.store.objectUsage(workspaceId), this.store.getObject(workspaceId, key)]);
    if (!existing && usage.count >= quota.maxObjects) {
      throw new ApiError('quota_exceeded', `this workspace holds ${usage.count} objects; at most ${quota.maxObjects}`, { quota: 'maxObjects', limit: quota.maxObjects });
    }
    const room = quota.maxObjectBytes - (usage.bytes - (existing?.size ?? 0));
    const wsKey = await this.keyring.workspaceKey(workspaceId);
    const objectId = `obj_${randomBytes(12).toString('hex')}`;
    const wsDir = this.workspaceDir(workspaceId);
    mkdirSync(wsDir, { recursive: true, mode: 0o700 });
    const final = join(wsDir, objectId);
    const partial = `${final}.partial`;
    const dek = newDataKey();
    const hash = createHash('sha256');
    let size = 0;
    const meter = new Transform({
      transform: (chunk: Buffer, _enc, done) => {
        size += chunk.length;
        if (size > this.maxBytes) return done(new ApiError('payload_too_large', `objects are at most ${this.maxBytes} bytes`));
        if (size > room) return done(new ApiError('quota_exceeded', `this workspace's objects may take ${quota.maxObjectBytes} bytes in all; this one does not fit`, { quota: 'maxObjectBytesMiB', limit: quota.maxObjectBytes }));
        hash.update(chunk);
        done(null, chunk);
      },
    });
    // `pipe`, not pipeline, from the body: a refused upload must leave the request readable so the caller can drain it and
    // still answer (destroying it would reset the connection before the client reads the refusal).
    body.once('close', () => {
      if (!body.readableEnded) meter.destroy(new Error('the client went away mid-upload'));
    });
    body.once('error', (e) => meter.destroy(e));
    body.pipe(meter);
    try {
      await pipeline(meter, createSealStream(dek, `${workspaceId}/${objectId}`), createWriteStream(partial, { mode: 0o600, flags: 'wx' }));
      renameSync(partial, final);
      const meta: ObjectMeta = { workspaceId, key, objectId, size, sha256: hash.digest('hex'), wrappedKey: wrapKey(wsKey, dek, `object:${workspaceId}/${objectId}`), createdAt: new Date().toISOString() };
      const replaced = await this.store.putObject(meta);
      if (replaced) rmSync(join(wsDir, replaced.objectId), { force: true });
      return meta;
    } catch (e) {
      rmSync(partial, { force: true });
      rmSync(final, { force: true });
      throw e;
    } finally {
      dek.fill(0);
    }
  }

  /** open returns an object's record and a stream of its plaintext, authenticated chunk by chunk; 404 if absent. */
  async open(workspaceId: string, key: string): Promise<{ meta: ObjectMeta; body: Readable }> {
    const meta = await this.get(workspaceId, key);
    const wsKey = await this.keyring.workspaceKey(workspaceId);
    const dek = unwrapKey(wsKey, meta.wrappedKey, `object:${workspaceId}/${meta.objectId}`);
    const opener = createOpenStream(dek, `${workspaceId}/${meta.objectId}`);
    const file = createReadStream(join(this.workspaceDir(workspaceId), meta.objectId));
    file.on('error', (e) => opener.destroy(e));
    // An aborted download or a chunk failing its check destroys the opener; the file (and its fd) must go with it.
    opener.once('close', () => {
      dek.fill(0);
      file.destroy();
    });
    return { meta, body: file.pipe(opener) };
  }

  /** get returns an object's record, or 404. */
  async get(workspaceId: string, key: string): Promise<ObjectMeta> {
    const meta = await this.store.getObject(workspaceId, key);
    if (!meta) throw new ApiError('not_found', `no object "${key}" in this workspace`);
    return meta;
  }

  /** list returns records under a prefix in key order. */
  list(workspaceId: string, q: ObjectQuery): Promise<ObjectMeta[]> {
    return this.store.listObjects(workspaceId, q);
  }

  /** delete removes an object's record and its file; 404 if absent. */
  async delete(workspaceId: string, key: string): Promise<void> {
    const meta = await this.store.deleteObject(workspaceId, key);
    if (!meta) throw new ApiError('not_found', `no object "${key}" in this workspace`);
    rmSync(join(this.workspaceDir(workspaceId), meta.objectId), { force: true });
  }

  private workspaceDir(workspaceId: string): string {
    return join(this.dir, workspaceId);
  }
}
