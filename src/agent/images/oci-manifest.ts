/**
 * Reads an image's record (ImageManifest) from OCI blobs in the store: its manifest (an OCI or Docker v2 image
 * manifest, or an index naming one for linux/amd64) and its config. The control plane does the same at import; the
 * agent needs it for images named in its own pool config and for the default image.
 */
import { readFile } from 'node:fs/promises';
import { createHash } from 'node:crypto';
import { join } from 'node:path';
import { z } from 'zod';
import { digestHex, DigestSchema, ImageManifestSchema, type ImageManifest } from '../../shared/images/format.js';
import { ImageError, invalidLayer } from './image-error.js';

const MAX_JSON_BLOB_BYTES = 4 << 20;

const Descriptor = z.object({ mediaType: z.string().max(256).optional(), digest: DigestSchema, size: z.number().int().min(0), platform: z.object({ architecture: z.string(), os: z.string() }).partial().optional() });
const ManifestJson = z.object({ mediaType: z.string().optional(), config: Descriptor.optional(), layers: z.array(Descriptor).max(128).optional(), manifests: z.array(Descriptor).max(256).optional() });
const ConfigJson = z.object({
  architecture: z.string().default('amd64'),
  os: z.string().default('linux'),
  config: z
    .object({ Env: z.array(z.string()).nullish(), WorkingDir: z.string().nullish(), Entrypoint: z.array(z.string()).nullish(), Cmd: z.array(z.string()).nullish(), User: z.string().nullish() })
    .partial()
    .nullish(),
  rootfs: z.object({ type: z.literal('layers'), diff_ids: z.array(DigestSchema).max(128) }),
});

async function readBlob(blobsDir: string, digest: string): Promise<Buffer> {
  let b: Buffer;
  try {
    b = await readFile(join(blobsDir, digestHex(digest)));
  } catch {
    throw new ImageError('image_blob_missing', `blob ${digest} is not in the image store`);
  }
  if (b.length > MAX_JSON_BLOB_BYTES) throw invalidLayer(`blob ${digest} is too large for a manifest or config`);
  if (`sha256:${createHash('sha256').update(b).digest('hex')}` !== digest) throw new ImageError('image_digest_mismatch', `blob ${digest} does not match its digest`);
  return b;
}

function parse<T>(schema: z.ZodType<T>, b: Buffer, what: string): T {
  try {
    return schema.parse(JSON.parse(b.toString('utf8')));
  } catch (e) {
    throw invalidLayer(`the image's ${what} is not valid: ${(e as Error).message.slice(0, 200)}`);
  }
}

/** manifestFromBlobs reads the image `digest` (a manifest or index) from `blobsDir` into its record. */
export async function manifestFromBlobs(blobsDir: string, digest: string): Promise<ImageManifest> {
  let m = parse(ManifestJson, await readBlob(blobsDir, digest), 'manifest');
  if (m.manifests) {
    const pick = m.manifests.find((d) => (d.platform?.architecture ?? 'amd64') === 'amd64' && (d.platform?.os ?? 'linux') === 'linux');
    if (!pick) throw invalidLayer('the image index has no linux/amd64 manifest');
    m = parse(ManifestJson, await readBlob(blobsDir, pick.digest), 'manifest');
  }
  if (!m.config || !m.layers) throw invalidLayer('the manifest names no config or no layers');
  const c = parse(ConfigJson, await readBlob(blobsDir, m.config.digest), 'config');
  if (c.rootfs.diff_ids.length !== m.layers.length) throw invalidLayer('the config names a different number of layers than the manifest');
  const cc = c.config ?? {};
  return ImageManifestSchema.parse({
    digest,
    layers: m.layers.map((l, i) => ({ digest: l.digest, diffId: c.rootfs.diff_ids[i]!, mediaType: l.mediaType ?? 'application/vnd.oci.image.layer.v1.tar+gzip', size: l.size })),
    config: { env: cc.Env ?? [], workingDir: cc.WorkingDir ?? '', entrypoint: cc.Entrypoint ?? null, cmd: cc.Cmd ?? null, user: cc.User ?? '' },
    architecture: c.architecture,
    os: c.os,
  });
}
