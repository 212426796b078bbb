/**
 * readStagedImage reads the OCI layout skopeo wrote for one import and checks it before anything enters the store:
 * one manifest, known media types, linux/amd64, a sane number of layers, a bounded config whose diff_ids match the
 * layers, and every blob present with the size its descriptor states. The blobs' digests are verified as they move
 * into the store (BlobStore.admit).
 */
import { readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { LAYER_MEDIA_TYPES, digestHex, type ImageManifest } from '../../shared/images/format.js';
import { ImageImportError } from './image-error.js';
import { DIGEST_PATTERN } from './image-ref.js';

/** StagedBlob is one blob of a staged image: its digest and declared size. */
export interface StagedBlob {
  digest: string;
  size: number;
}

/** StagedImage is a checked image in a staging layout: its record and every blob it needs. */
export interface StagedImage {
  manifest: ImageManifest;
  blobs: StagedBlob[];
  bytes: number;
}

/** StagedLimits bound what an image may be. */
export interface StagedLimits {
  maxLayers: number;
  maxConfigBytes: number;
  maxBlobBytes: number;
}

const OCI_MANIFEST = 'application/vnd.oci.image.manifest.v1+json';
const OCI_CONFIG = 'application/vnd.oci.image.config.v1+json';
/** MAX_MANIFEST_BYTES bounds a manifest (the distribution spec's registries refuse more than 4 MiB). */
const MAX_MANIFEST_BYTES = 4 * 1024 * 1024;

interface Descriptor {
  mediaType?: unknown;
  digest?: unknown;
  size?: unknown;
}

/** readStagedImage checks the layout at `layoutDir`; throws ImageImportError (image_invalid, image_platform_mismatch, image_too_large, image_digest_mismatch). */
export async function readStagedImage(layoutDir: string, limits: StagedLimits): Promise<StagedImage> {
  const index = await readJson(join(layoutDir, 'index.json'), MAX_MANIFEST_BYTES, 'the layout index');
  const manifests = (index as { manifests?: Descriptor[] }).manifests;
  if (!Array.isArray(manifests) || manifests.length !== 1) throw invalid(`the layout must hold exactly one manifest; it holds ${Array.isArray(manifests) ? manifests.length : 'none'}`);
  const top = descriptor(manifests[0]!, 'the manifest');
  if (top.mediaType !== OCI_MANIFEST) throw invalid(`manifest media type ${top.mediaType} is not ${OCI_MANIFEST}`);
  if (top.size > MAX_MANIFEST_BYTES) throw new ImageImportError('image_invalid', `the manifest is ${top.size} bytes; at most ${MAX_MANIFEST_BYTES}`);
  const manifest = (await readJson(await blobPath(layoutDir, top), MAX_MANIFEST_BYTES, 'the manifest')) as { schemaVersion?: unknown; mediaType?: unknown; config?: Descriptor; layers?: Descriptor[] };
  if (manifest.schemaVersion !== 2) throw invalid('the manifest is not schemaVersion 2');
  if (manifest.mediaType !== undefined && manifest.mediaType !== OCI_MANIFEST) throw invalid(`the manifest says media type ${String(manifest.mediaType)}`);
  const config = descriptor(manifest.config ?? {}, 'the config');
  if (config.mediaType !== OCI_CONFIG) throw invalid(`config media type ${config.mediaType} is not ${OCI_CONFIG}`);
  if (config.size > limits.maxConfigBytes) throw invalid(`the image config is ${config.size} bytes; at most ${limits.maxConfigBytes} (images.maxConfigBytes)`);
  if (!Array.isArray(manifest.layers) || manifest.layers.length === 0) throw invalid('the manifest lists no layers');
  if (manifest.layers.length > limits.maxLayers) throw invalid(`the image has ${manifest.layers.length} layers; at most ${limits.maxLayers} (images.maxLayers)`);
  const layers = manifest.layers.map((l, i) => descriptor(l, `layer ${i}`));
  for (const [i, l] of layers.entries()) {
    if (!(LAYER_MEDIA_TYPES as readonly string[]).includes(l.mediaType)) throw invalid(`layer ${i} has media type ${l.mediaType}; supported: ${LAYER_MEDIA_TYPES.join(', ')}`);
  }
  const cfg = (await readJson(await blobPath(layoutDir, config), limits.maxConfigBytes, 'the config')) as OciConfig;
  const architecture = String(cfg.architecture ?? '');
  const os = String(cfg.os ?? '');
  if (architecture !== 'amd64' || os !== 'linux') throw new ImageImportError('image_platform_mismatch', `the image is for ${os || '?'}/${architecture || '?'}; only linux/amd64 runs here`);
  const diffIds = cfg.rootfs?.diff_ids;
  if (cfg.rootfs?.type !== 'layers' || !Array.isArray(diffIds) || diffIds.length !== layers.length || !diffIds.every((d) => typeof d === 'string' && DIGEST_PATTERN.test(d))) {
    throw invalid(`the config's rootfs.diff_ids must list one sha256 digest per layer (${layers.length})`);
  }
  const blobs = [top, config, ...layers];
  const bytes = blobs.reduce((n, b) => n + b.size, 0);
  if (bytes > limits.maxBlobBytes) throw new ImageImportError('image_too_large', `the image's blobs take ${bytes} bytes; at most ${limits.maxBlobBytes} (images.maxUnpackedMiB)`);
  for (const b of blobs) await blobPath(layoutDir, b);
  const c = cfg.config ?? {};
  return {
    manifest: {
      digest: top.digest,
      layers: layers.map((l, i) => ({ digest: l.digest, diffId: diffIds[i] as string, mediaType: l.mediaType, size: l.size })),
      config: {
        env: strings(c.Env, 'Env') ?? [],
        workingDir: typeof c.WorkingDir === 'string' ? c.WorkingDir : '',
        entrypoint: strings(c.Entrypoint, 'Entrypoint'),
        cmd: strings(c.Cmd, 'Cmd'),
        user: typeof c.User === 'string' ? c.User : '',
      },
      architecture,
      os,
    },
    blobs: uniqueBlobs(blobs),
    bytes,
  };
}

interface OciConfig {
  architecture?: unknown;
  os?: unknown;
  config?: { Env?: unknown; WorkingDir?: unknown; Entrypoint?: unknown; Cmd?: unknown; User?: unknown };
  rootfs?: { type?: unknown; diff_ids?: unknown[] };
}

function descriptor(d: Descriptor, what: string): { mediaType: string; digest: string; size: number } {
  if (typeof d.digest !== 'string' || !DIGEST_PATTERN.test(d.digest)) throw invalid(`${what} has no sha256 digest`);
  if (typeof d.size !== 'number' || !Number.isSafeInteger(d.size) || d.size < 0) throw invalid(`${what} has no valid size`);
  if (typeof d.mediaType !== 'string') throw invalid(`${what} has no media type`);
  return { mediaType: d.mediaType, digest: d.digest, size: d.size };
}

/** blobPath returns a staged blob's path after checking it exists with its declared size (a truncated blob fails here). */
async function blobPath(layoutDir: string, d: { digest: string; size: number }): Promise<string> {
  const path = join(layoutDir, 'blobs', 'sha256', digestHex(d.digest));
  const st = await stat(path).catch(() => null);
  if (!st?.isFile()) throw invalid(`blob ${d.digest} is missing from the source`);
  if (st.size !== d.size) throw new ImageImportError('image_digest_mismatch', `blob ${d.digest} is ${st.size} bytes; its descriptor says ${d.size} (truncated or corrupt)`);
  return path;
}

async function readJson(path: string, maxBytes: number, what: string): Promise<unknown> {
  const st = await stat(path).catch(() => null);
  if (!st) throw invalid(`${what} is missing`);
  if (st.size > maxBytes) throw invalid(`${what} is ${st.size} bytes; at most ${maxBytes}`);
  try {
    return JSON.parse(await readFile(path, 'utf8')) as unknown;
  } catch {
    throw invalid(`${what} is not valid JSON`);
  }
}

function strings(v: unknown, field: string): string[] | null {
  if (v === undefined || v === null) return null;
  if (!Array.isArray(v) || !v.every((s) => typeof s === 'string' && !s.includes('\0'))) throw invalid(`the config's ${field} must be a list of strings`);
  return v as string[];
}

function uniqueBlobs(blobs: StagedBlob[]): StagedBlob[] {
  const seen = new Map<string, StagedBlob>();
  for (const b of blobs) seen.set(b.digest, { digest: b.digest, size: b.size });
  return [...seen.values()];
}

function invalid(message: string): ImageImportError {
  return new ImageImportError('image_invalid', message);
}
