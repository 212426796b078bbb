/**
 * Image routes: import from a registry (JSON) or an uploaded archive (raw tar body, streamed to disk), list, get,
 * remove. Imports run in the background: the answer is 202 with the image in state `pulling`; poll GET for progress.
 */
import type { FastifyInstance } from 'fastify';
import { z } from 'zod';
import type { ErrorCode } from '../../../shared/errors.js';
import type { ImageService } from '../../images/image-service.js';
import type { LongBodies } from '../listener.js';
import { actorOf, type RouteTable } from '../route-table.js';
import { ImageView, imageView } from '../views.js';

/** IMPORT_FAILURES are the codes a failed import's state may carry (documented on the import operations). */
const IMPORT_FAILURES: ErrorCode[] = [
  'image_registry_unreachable',
  'image_tls_failed',
  'image_auth_failed',
  'image_not_found',
  'image_digest_mismatch',
  'image_platform_mismatch',
  'image_invalid',
  'image_too_large',
  'image_import_timeout',
  'image_layer_invalid',
  'image_blob_missing',
];

const ImportBody = z
  .object({
    source: z.string().min(1).max(1024).describe('docker://HOST[:PORT]/REPO[:TAG] or docker://HOST[:PORT]/REPO@sha256:<hex>'),
    name: z.string().min(1).max(200).optional().describe('NAME[:TAG] to give it in the workspace (default: the repository and tag)'),
    credentials: z
      .object({ username: z.string().min(1).max(256), password: z.string().max(4096) })
      .strict()
      .optional()
      .describe('registry credentials; handed to skopeo in a 0600 file, never stored'),
    caPem: z.string().max(64 * 1024).optional().describe("PEM of the CA that signed the registry's certificate"),
    public: z.boolean().optional().describe('publish for every workspace (platform admins only)'),
  })
  .strict();

const ArchiveQuery = z
  .object({
    name: z.string().min(1).max(200).describe('NAME[:TAG] to give the image'),
    public: z.enum(['true', 'false', '1', '0']).optional().describe('publish for every workspace (platform admins only)'),
  })
  .strict();

/** registerImageRoutes adds the image operations; the archive upload gets a context whose body is passed through as a stream. */
export function registerImageRoutes(app: FastifyInstance, t: RouteTable, images: ImageService, longBodies: LongBodies): void {
  t.add({
    method: 'POST',
    path: '/v1/images',
    operationId: 'importImage',
    summary: 'Import an image from an OCI / Docker v2 registry, in the background (202; poll GET /v1/images/:id); a failed import says why in `error`',
    auth: 'key',
    body: ImportBody,
    status: 202,
    response: ImageView,
    errors: ['forbidden', 'already_exists', 'quota_exceeded', ...IMPORT_FAILURES],
    handler: async ({ principal, body }) => imageView(await images.importFromRegistry(principal, body, actorOf(principal))),
  });
  void app.register(async (scope) => {
    // The archive streams straight to the import's staging directory: no parsing, no buffering, no generic body limit.
    scope.removeAllContentTypeParsers();
    scope.addContentTypeParser('*', (_request, payload, done) => done(null, payload));
    t.within(scope).add({
      method: 'POST',
      path: '/v1/images/archive',
      operationId: 'importImageArchive',
      summary: 'Import an image from a tarball in the request body (as `docker save` or `skopeo copy … oci-archive:` writes it, or a tar of an OCI layout), in the background (202)',
      auth: 'key',
      query: ArchiveQuery,
      status: 202,
      response: ImageView,
      errors: ['forbidden', 'already_exists', 'quota_exceeded', 'payload_too_large', ...IMPORT_FAILURES],
      handler: async ({ principal, query, request }) => {
        const declared = request.headers['content-length'] === undefined ? null : Number(request.headers['content-length']);
        longBodies.allow(request.raw);
        const isPublic = query.public === 'true' || query.public === '1';
        return imageView(await images.importArchive(principal, query.name, isPublic, request.raw, Number.isFinite(declared) ? declared : null, actorOf(principal)));
      },
    });
  });
  t.add({
    method: 'GET',
    path: '/v1/images',
    operationId: 'listImages',
    summary: "List the workspace's images and the public ones",
    auth: 'key',
    response: z.object({ images: z.array(ImageView) }),
    handler: async ({ principal }) => ({ images: (await images.list(principal.workspace)).map(imageView) }),
  });
  t.add({
    method: 'GET',
    path: '/v1/images/:id',
    operationId: 'getImage',
    summary: "Get an image by NAME[:TAG] or sha256:<digest> (the workspace's, else a public one): its state and import progress",
    auth: 'key',
    response: ImageView,
    errors: ['image_not_found'],
    handler: async ({ principal, params }) => imageView(await images.get(principal.workspace, params.id!)),
  });
  t.add({
    method: 'DELETE',
    path: '/v1/images/:id',
    operationId: 'deleteImage',
    summary: 'Remove an image (by NAME[:TAG], or every name of a sha256:<digest>); agents drop it and blobs no other image uses are deleted',
    auth: 'key',
    response: z.object({ removed: z.array(ImageView) }),
    errors: ['image_not_found', 'image_in_use', 'conflict', 'forbidden'],
    handler: async ({ principal, params }) => ({ removed: (await images.remove(principal, params.id!, actorOf(principal))).map(imageView) }),
  });
}
