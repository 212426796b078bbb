/** Image names, tags and sources: what users write, parsed and checked before anything runs. */
import { ApiError } from '../../shared/errors.js';

/** NAME_PATTERN is an image name as registries spell repositories: lower-case path components. */
const NAME_PATTERN = /^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:\/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*$/;
/** TAG_PATTERN is a tag as registries allow it. */
const TAG_PATTERN = /^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$/;
/** DIGEST_PATTERN is a sha256 manifest digest. */
export const DIGEST_PATTERN = /^sha256:[0-9a-f]{64}$/;
/** DEFAULT_TAG is the tag of a name given without one. */
export const DEFAULT_TAG = 'latest';

/** ImageName is a name and its tag. */
export interface ImageName {
  name: string;
  tag: string;
}

/** ImageLookup says how a caller named an image: by name:tag or by manifest digest. */
export type ImageLookup = ImageName | { digest: string };

/** parseImageName reads NAME[:TAG] (tag `latest` when absent); throws 400 invalid_request naming the problem. */
export function parseImageName(text: string, field = 'name'): ImageName {
  const colon = text.lastIndexOf(':');
  const [name, tag] = colon > text.lastIndexOf('/') ? [text.slice(0, colon), text.slice(colon + 1)] : [text, DEFAULT_TAG];
  if (name.length > 128 || !NAME_PATTERN.test(name)) {
    throw new ApiError('invalid_request', `${field}: "${text.slice(0, 140)}" is not an image name (lower-case letters, digits, . _ - and / between components, at most 128)`);
  }
  if (!TAG_PATTERN.test(tag)) throw new ApiError('invalid_request', `${field}: tag "${tag.slice(0, 140)}" is not valid (letters, digits, _ . -, at most 128, not starting with . or -)`);
  return { name, tag };
}

/** parseImageLookup reads a job's or a route's image reference: sha256:<hex>, or NAME[:TAG]. */
export function parseImageLookup(text: string, field = 'image'): ImageLookup {
  if (text.startsWith('sha256:')) {
    if (!DIGEST_PATTERN.test(text)) throw new ApiError('invalid_request', `${field}: a digest is sha256: and 64 lower-case hex digits`);
    return { digest: text };
  }
  return parseImageName(text, field);
}

/** lookupText renders a lookup the way users wrote it. */
export function lookupText(l: ImageLookup): string {
  return 'digest' in l ? l.digest : `${l.name}:${l.tag}`;
}

/** RegistrySource is a `docker://HOST[:PORT]/REPO[:TAG|@sha256:…]` reference. */
export interface RegistrySource {
  kind: 'registry';
  /** host[:port] as skopeo and auth files key it. */
  registry: string;
  repository: string;
  tag: string | null;
  digest: string | null;
}

/** LayoutSource is an OCI layout directory on the control plane's host (the default image's install-time build). */
export interface LayoutSource {
  kind: 'oci-layout';
  dir: string;
}

/** ArchiveSource is an uploaded tarball, saved under the import's staging directory. */
export interface ArchiveSource {
  kind: 'archive';
  format: 'docker-archive' | 'oci-archive';
  path: string;
}

/** ImageSource is anything an image is imported from. */
export type ImageSource = RegistrySource | LayoutSource | ArchiveSource;

/** parseRegistrySource reads a registry reference; throws 400 invalid_request with the expected form. */
export function parseRegistrySource(text: string): RegistrySource {
  const m = /^docker:\/\/([A-Za-z0-9.-]+(?::\d{1,5})?|\[[0-9a-fA-F:]+\](?::\d{1,5})?)\/([^@:]+)(?::([^@/]+))?(?:@(sha256:[0-9a-f]{64}))?$/.exec(text);
  const usage = 'source must be docker://HOST[:PORT]/REPO[:TAG] or docker://HOST[:PORT]/REPO@sha256:<64 hex>';
  if (!m) throw new ApiError('invalid_request', `${usage}; got "${text.slice(0, 200)}"`);
  const [, registry, repository, tag, digest] = m;
  if (!NAME_PATTERN.test(repository!) || repository!.length > 255) throw new ApiError('invalid_request', `${usage}: "${repository}" is not a repository name`);
  if (tag !== undefined && !TAG_PATTERN.test(tag)) throw new ApiError('invalid_request', `${usage}: "${tag}" is not a tag`);
  return { kind: 'registry', registry: registry!, repository: repository!, tag: tag ?? (digest ? null : DEFAULT_TAG), digest: digest ?? null };
}

/** skopeoRef renders a source as skopeo's transport:reference. */
export function skopeoRef(s: ImageSource): string {
  switch (s.kind) {
    case 'registry':
      return `docker://${s.registry}/${s.repository}${s.digest ? `@${s.digest}` : `:${s.tag}`}`;
    case 'oci-layout':
      return `oci:${s.dir}`;
    case 'archive':
      return `${s.format}:${s.path}`;
  }
}

/** describeSource is the source as recorded and shown (never credentials). */
export function describeSource(s: ImageSource): string {
  return s.kind === 'archive' ? `archive:${s.format}` : skopeoRef(s);
}

/** defaultNameOf names an image after its source when the caller gives no name: the repository's last part and tag. */
export function defaultNameOf(s: RegistrySource): ImageName {
  return { name: s.repository, tag: s.tag ?? DEFAULT_TAG };
}
