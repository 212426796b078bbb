/**
 * ImageStore is the agent's side of the image store (Contract A): it prepares images (every layer unpacked and
 * checked, the top layer built, the workload user resolved), one at a time, remembers which it has prepared across
 * restarts, and removes an image's files when asked, keeping layers other prepared images share.
 */
import { mkdir, readdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { digestHex, imagePaths, ImageManifestSchema, type ImageManifest } from '../../shared/images/format.js';
import { ImageError, invalidLayer } from './image-error.js';
import { layerMetaPath, unpackLayer } from './layer-unpack.js';
import { buildTopLayer, topLayerName } from './top-layer.js';
import type { ImageUser } from './image-user.js';

/** PreparedImage is an image cells can run on. */
export interface PreparedImage {
  manifest: ImageManifest;
  /** Who the workload runs as (uid/gid inside the cell; never 0). */
  user: ImageUser;
  /** Directory names under `unpacked/` of the overlay's lower layers, top first (Cleanroom's top layer, then the image's). */
  lowerNames: string[];
  /** Uncompressed bytes of the image's layers. */
  unpackedBytes: number;
}

/** ImageStoreOptions says where the store is and what the top layers carry. */
export interface ImageStoreOptions {
  /** The store's root (`<dataDir>/images`). */
  root: string;
  /** The CA that signs the platform's certificates (PEM), laid into every image's trust store. */
  platformCa: string;
}

/** GOARCH names of Node's architectures: an image for another one is refused. */
const IMAGE_ARCH: Partial<Record<string, string>> = { x64: 'amd64', arm64: 'arm64' };

/** ImageStore prepares and removes images on this host; all file work is serialised (one unpack at a time). */
export class ImageStore {
  private readonly images = new Map<string, PreparedImage>();
  private readonly inflight = new Map<string, Promise<PreparedImage>>();
  private queue: Promise<unknown> = Promise.resolve();
  /** `images/unpacked`: the tree every image cell mounts (idmapped) for its overlay. */
  readonly unpackedDir: string;
  private readonly blobsDir: string;
  private readonly recordsDir: string;

  constructor(private readonly o: ImageStoreOptions) {
    const p = imagePaths(o.root);
    this.unpackedDir = p.unpacked;
    this.blobsDir = p.blobs;
    this.recordsDir = join(o.root, 'prepared');
  }

  /** blobsDirectory is `images/blobs/sha256`. */
  get blobsDirectory(): string {
    return this.blobsDir;
  }

  /** open makes the store's directories, drops what a crash left half-made, and loads the records of prepared images. */
  async open(): Promise<void> {
    await mkdir(this.o.root, { recursive: true, mode: 0o755 });
    await mkdir(this.unpackedDir, { recursive: true, mode: 0o711 });
    await mkdir(this.recordsDir, { recursive: true, mode: 0o700 });
    for (const name of await readdir(this.unpackedDir)) if (name.startsWith('.tmp-')) await rm(join(this.unpackedDir, name), { recursive: true, force: true });
    for (const name of await readdir(this.recordsDir)) {
      if (!name.endsWith('.json')) continue;
      try {
        const r = JSON.parse(await readFile(join(this.recordsDir, name), 'utf8')) as PreparedImage;
        const manifest = ImageManifestSchema.parse(r.manifest);
        this.images.set(manifest.digest, { ...r, manifest });
      } catch {
        await rm(join(this.recordsDir, name), { force: true }); // a record from a crash mid-write: prepare again when asked
      }
    }
  }

  /** get returns a prepared image, or null. */
  get(digest: string): PreparedImage | null {
    return this.images.get(digest) ?? null;
  }

  /** digests lists the images prepared here (for the hello). */
  digests(): string[] {
    return [...this.images.keys()];
  }

  /** prepare unpacks `manifest`'s layers (checked against their digests) and builds its top layer; ImageError on refusal. */
  prepare(manifest: ImageManifest, maxUnpackedBytes: number): Promise<PreparedImage> {
    const done = this.images.get(manifest.digest);
    if (done) return Promise.resolve(done);
    let p = this.inflight.get(manifest.digest);
    if (!p) {
      p = this.serial(() => this.doPrepare(manifest, maxUnpackedBytes));
      this.inflight.set(manifest.digest, p);
      void p.catch(() => {}).finally(() => this.inflight.delete(manifest.digest));
    }
    return p;
  }

  private async doPrepare(manifest: ImageManifest, maxBytes: number): Promise<PreparedImage> {
    const done = this.images.get(manifest.digest);
    if (done) return done;
    const arch = IMAGE_ARCH[process.arch] ?? process.arch;
    if (manifest.os !== 'linux' || manifest.architecture !== arch) throw invalidLayer(`the image is for ${manifest.os}/${manifest.architecture}; this host runs linux/${arch}`);
    let total = 0;
    const fresh: string[] = [];
    let user: ImageUser;
    try {
      for (const layer of manifest.layers) {
        const r = await unpackLayer({ blobsDir: this.blobsDir, unpackedDir: this.unpackedDir, layer, maxBytes: maxBytes - total });
        if (r.fresh) fresh.push(digestHex(layer.diffId));
        total += r.bytes;
        if (total > maxBytes) throw new ImageError('image_too_large', `the image unpacks to more than ${maxBytes} bytes`);
      }
      user = await buildTopLayer({ unpackedDir: this.unpackedDir, manifest, platformCa: this.o.platformCa });
    } catch (e) {
      // A refused image leaves nothing: the layers it unpacked that no prepared image uses go again.
      await this.deleteUnused(fresh);
      throw e;
    }
    const image: PreparedImage = {
      manifest,
      user,
      lowerNames: [topLayerName(manifest), ...[...manifest.layers].reverse().map((l) => digestHex(l.diffId))],
      unpackedBytes: total,
    };
    const record = join(this.recordsDir, `${digestHex(manifest.digest)}.json`);
    await writeFile(`${record}.tmp`, JSON.stringify(image), { mode: 0o600 });
    await rename(`${record}.tmp`, record);
    this.images.set(manifest.digest, image);
    return image;
  }

  /**
   * remove forgets an image and deletes its top layer and the layers no other prepared image uses. Precondition: no
   * cell runs on it any more (the caller drains its cells first); a layer still mounted would be pulled from under it.
   */
  remove(digest: string): Promise<void> {
    return this.serial(async () => {
      const image = this.images.get(digest);
      if (!image) return;
      this.images.delete(digest);
      await rm(join(this.recordsDir, `${digestHex(digest)}.json`), { force: true });
      await this.deleteUnused(image.lowerNames);
    });
  }

  /** deleteUnused deletes the named layers that no prepared image uses. */
  private async deleteUnused(names: readonly string[]): Promise<void> {
    const used = new Set([...this.images.values()].flatMap((i) => i.lowerNames));
    for (const name of names) {
      if (used.has(name)) continue;
      // Renamed first, then deleted: a crash midway leaves a .tmp- name that open() removes, never half a layer.
      const gone = join(this.unpackedDir, `.tmp-rm-${name.slice(0, 24)}`);
      await rename(join(this.unpackedDir, name), gone).catch(() => {});
      await rm(gone, { recursive: true, force: true });
      await rm(layerMetaPath(this.unpackedDir, name), { force: true });
    }
  }

  private serial<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.queue.then(fn, fn);
    this.queue = run.catch(() => {});
    return run;
  }
}
