/**
 * ImageService is the agent's end of the image messages (Contract B): image.prepare → image.prepared, image.remove →
 * image.removed, and the warm pools of images named in the agent's config, which start once their image is prepared.
 */
import type { AgentToControl, ImageManifest, JobImage } from '../../shared/wire.js';
import type { CellPool, PoolTarget } from '../cells/pool.js';
import { ImageError } from './image-error.js';
import type { ImageStore, PreparedImage } from './image-store.js';
import { manifestFromBlobs } from './oci-manifest.js';

/** ImagePoolTarget is a pool of the agent's config that runs on an image (by digest). */
export type ImagePoolTarget = Omit<PoolTarget, 'image'> & { digest: string };

/** RemoveWaitMs is how often image.remove checks whether the image's last assigned cell has gone. */
const REMOVE_POLL_MS = 100;

/** ImageService prepares and removes images for the control plane and the config's image pools. */
export class ImageService {
  constructor(
    private readonly store: ImageStore,
    private readonly pool: CellPool,
    private readonly targets: readonly ImagePoolTarget[],
    /** images.maxUnpackedMiB in bytes: the bound of images the agent prepares for its own config. */
    private readonly maxUnpackedBytes: number,
    private readonly send: (msg: AgentToControl) => void,
    private readonly log: (msg: string, extra?: object) => void,
  ) {}

  /** digests lists the prepared images (the hello's `images`). */
  digests(): string[] {
    return this.store.digests();
  }

  /** imageFor returns the prepared image a job names, or null for the host root; throws if it is not prepared here. */
  imageFor(image: JobImage): PreparedImage | null {
    if (image === null) return null;
    const prepared = this.store.get(image.digest);
    if (!prepared) throw new Error(`image ${image.digest} is not prepared on this agent`);
    return prepared;
  }

  /** prepare answers image.prepare; never throws (a refusal is an image.prepared with its error). */
  async prepare(manifest: ImageManifest, maxUnpackedBytes: number): Promise<void> {
    try {
      const image = await this.store.prepare(manifest, maxUnpackedBytes);
      this.startPools(image);
      this.send({ type: 'image.prepared', digest: manifest.digest, unpackedBytes: image.unpackedBytes, error: null });
    } catch (e) {
      const error = e instanceof ImageError ? { code: e.code, message: e.message } : { code: 'internal', message: `the agent could not prepare the image: ${(e as Error).message}` };
      this.log('image prepare failed', { image: manifest.digest, ...error });
      this.send({ type: 'image.prepared', digest: manifest.digest, unpackedBytes: 0, error });
    }
  }

  /** remove answers image.remove once the image's warm cells are wiped, its last job's cell is gone and its files deleted. */
  async remove(digest: string): Promise<void> {
    await this.pool.drainImage(digest);
    while (this.pool.busyWith(digest) > 0) await new Promise((r) => setTimeout(r, REMOVE_POLL_MS));
    await this.store.remove(digest).catch((e: Error) => this.log('image remove failed', { image: digest, error: e.message }));
    this.send({ type: 'image.removed', digest });
  }

  /** prepareConfigured prepares, from the store's blobs, the images the config's pools name, and starts their pools. */
  async prepareConfigured(): Promise<void> {
    for (const digest of new Set(this.targets.map((t) => t.digest))) {
      try {
        const image = this.store.get(digest) ?? (await this.store.prepare(await manifestFromBlobs(this.store.blobsDirectory, digest), this.maxUnpackedBytes));
        this.startPools(image);
      } catch (e) {
        this.log('cannot prepare an image the pool config names; its pools stay empty', { image: digest, error: (e as Error).message });
      }
    }
  }

  private startPools(image: PreparedImage): void {
    for (const t of this.targets) if (t.digest === image.manifest.digest) this.pool.setTarget({ runtime: t.runtime, sizeClass: t.sizeClass, warm: t.warm, image });
  }
}
