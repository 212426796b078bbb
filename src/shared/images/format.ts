/**
 * The image record both planes share (Contract A): what the control plane learnt from an image's OCI manifest and
 * config when it imported it, and what an agent needs to unpack and run it. Content-addressed throughout.
 */
import { z } from 'zod';

/**
 * IMAGE_UID_BASE is the on-disk owner offset of unpacked image layers: a file the image gives to uid N (N < 65536) is
 * owned by IMAGE_UID_BASE + N on the host. The range [0xF00000, 0xF10000) lies above every host account (and the
 * usual /etc/subuid ranges, which start at 100000 in blocks of 65536 and would need ~240 users to reach it) and below
 * the cells' ranges (src/agent/cells/uid-ranges.ts: from 2^24), so no process on the host, in a cell or not, owns an
 * image file: an idmapped mount (IMAGE_UID_BASE → the cell's range) is the only way they appear owned by anyone.
 */
export const IMAGE_UID_BASE = 0xf0_0000;
/** IMAGE_UID_RANGE is how many uids (and gids) an image may use: 0 … 65535. */
export const IMAGE_UID_RANGE = 65536;

/** DigestSchema is a sha256 content address, `sha256:` and 64 lower-case hex digits. */
export const DigestSchema = z.string().regex(/^sha256:[0-9a-f]{64}$/, 'must be sha256: and 64 lower-case hex digits');
/** Digest is a sha256 content address. */
export type Digest = z.infer<typeof DigestSchema>;

/** LAYER_MEDIA_TYPES are the layer types agents unpack (OCI and Docker v2, gzip or uncompressed; zstd is refused). */
export const LAYER_MEDIA_TYPES = [
  'application/vnd.oci.image.layer.v1.tar',
  'application/vnd.oci.image.layer.v1.tar+gzip',
  'application/vnd.docker.image.rootfs.diff.tar.gzip',
  'application/vnd.docker.image.rootfs.diff.tar',
] as const;

const Str = z.string().max(65536).refine((s) => !s.includes('\0'), 'must not contain NUL bytes');

/** ImageLayerSchema is one layer: its blob (compressed) digest and size, and the digest of its uncompressed tar. */
export const ImageLayerSchema = z.strictObject({
  digest: DigestSchema,
  diffId: DigestSchema,
  mediaType: z.string().min(1).max(256),
  size: z.number().int().min(0).max(Number.MAX_SAFE_INTEGER),
});
/** ImageLayer is one layer of an image. */
export type ImageLayer = z.infer<typeof ImageLayerSchema>;

/** ImageConfigSchema is what the image's config says about running it (OCI `config`: Env, WorkingDir, Entrypoint, Cmd, User). */
export const ImageConfigSchema = z.strictObject({
  env: z.array(Str).max(1024),
  /** '' when the image names none. */
  workingDir: z.string().max(4096),
  entrypoint: z.array(Str).max(4096).nullable(),
  cmd: z.array(Str).max(4096).nullable(),
  /** The image's `User` as written ('' when none): a name or uid, optionally `:group`. The agent resolves it. */
  user: z.string().max(256),
});
/** ImageConfig is what the image's config says about running it. */
export type ImageConfig = z.infer<typeof ImageConfigSchema>;

/** ImageManifestSchema is an image as both planes know it, addressed by its manifest digest; layers bottom first. */
export const ImageManifestSchema = z.strictObject({
  digest: DigestSchema,
  layers: z.array(ImageLayerSchema).min(1).max(128),
  config: ImageConfigSchema,
  architecture: z.string().min(1).max(64),
  os: z.string().min(1).max(64),
});
/** ImageManifest is an image as both planes know it. */
export type ImageManifest = z.infer<typeof ImageManifestSchema>;

/** digestHex is the hex part of a sha256 digest (the file name under blobs/sha256/ and unpacked/). */
export function digestHex(digest: Digest): string {
  return digest.slice('sha256:'.length);
}

/** imagePaths are the image store's directories under its root (config `images.dir`, default `<dataDir>/images`). */
export function imagePaths(root: string): { root: string; blobs: string; unpacked: string } {
  return { root, blobs: `${root}/blobs/sha256`, unpacked: `${root}/unpacked` };
}
