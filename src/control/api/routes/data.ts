/** Data routes: the workspace's object store (put, get, list, delete), for API keys and workload tokens alike. */
import type { FastifyInstance } from 'fastify';
import { z } from 'zod';
import { ApiError } from '../../../shared/errors.js';
import type { AccessDenials } from '../../audit/access-denials.js';
import { keyProblem, prefixProblem } from '../../data/object-key.js';
import type { ObjectStore } from '../../data/object-store.js';
import { allows, type DataAction } from '../../tokens/scopes.js';
import type { LongBodies } from '../listener.js';
import { actorOf, type Principal, type RouteTable } from '../route-table.js';
import { ObjectView, objectView } from '../views.js';

const ListQuery = z
  .object({
    prefix: z.string().optional().describe('only keys starting with this'),
    after: z.string().optional().describe('only keys after this one (paging: pass the last key of the previous page)'),
    limit: z.coerce.number().int().min(1).max(1000).optional().describe('at most this many (default 1000)'),
  })
  .strict();

/** registerDataRoutes adds the object operations to a fastify context whose bodies are passed through as streams; an
 *  authorized upload is exempted from the listener's request deadline (longBodies), since a large one takes long. */
export function registerDataRoutes(app: FastifyInstance, table: RouteTable, objects: ObjectStore, denials: AccessDenials, longBodies: LongBodies): void {
  void app.register(async (scope) => {
    // Object bodies stream straight to the sealing pipeline: no parsing, no buffering, no generic body limit.
    scope.removeAllContentTypeParsers();
    scope.addContentTypeParser('*', (_request, payload, done) => done(null, payload));
    const t = table.within(scope);
    const authorize = async (p: Principal, action: DataAction, key: string, method: string) => {
      if (!p.workload || allows(p.workload.scopes, action, key)) return;
      await denials.record({ actor: actorOf(p), workspaceId: p.workspace.id, subject: key, reason: 'out_of_scope', details: { action, method } });
      throw new ApiError('out_of_scope', `this workload's token does not allow ${action} on "${key}"`);
    };
    t.add({
      method: 'PUT',
      path: '/v1/data/objects/*',
      operationId: 'putObject',
      summary: 'Store an object (the raw request body, streamed); replaces one with the same key',
      auth: 'data',
      status: 201,
      response: ObjectView,
      errors: ['invalid_object_key', 'payload_too_large', 'quota_exceeded'],
      // A refusal answered before the body has arrived waits until it is read and discarded (the listener's onSend hook).
      handler: async ({ principal, params, request }) => {
        const key = objectKey(params);
        await authorize(principal, 'write', key, 'PUT');
        const declared = Number(request.headers['content-length'] ?? NaN);
        if (declared > objects.maxBytes) throw new ApiError('payload_too_large', `objects are at most ${objects.maxBytes} bytes; this one declares ${declared}`);
        longBodies.allow(request.raw);
        return objectView(await objects.put(principal.workspace.id, key, request.raw));
      },
    });
    t.add({
      method: 'GET',
      path: '/v1/data/objects/*',
      operationId: 'getObject',
      summary: "Read an object's bytes (streamed, each chunk authenticated before it is sent)",
      auth: 'data',
      response: { contentType: 'application/octet-stream', description: 'the object' },
      errors: ['invalid_object_key', 'not_found'],
      handler: async ({ principal, params, reply }) => {
        const key = objectKey(params);
        await authorize(principal, 'read', key, 'GET');
        const { meta, body } = await objects.open(principal.workspace.id, key);
        void reply.header('content-type', 'application/octet-stream').header('content-length', meta.size).header('etag', `"${meta.sha256}"`);
        return body;
      },
    });
    t.add({
      method: 'DELETE',
      path: '/v1/data/objects/*',
      operationId: 'deleteObject',
      summary: 'Delete an object',
      auth: 'data',
      status: 204,
      response: { contentType: 'none', description: 'deleted' },
      errors: ['invalid_object_key', 'not_found'],
      handler: async ({ principal, params }) => {
        const key = objectKey(params);
        await authorize(principal, 'write', key, 'DELETE');
        await objects.delete(principal.workspace.id, key);
        return null;
      },
    });
    t.add({
      method: 'GET',
      path: '/v1/data/objects',
      operationId: 'listObjects',
      summary: 'List objects by key prefix, in key order',
      auth: 'data',
      query: ListQuery,
      response: z.object({ objects: z.array(ObjectView), next: z.string().nullable().describe('pass as `after` for the next page') }),
      errors: ['invalid_object_key'],
      handler: async ({ principal, query }) => {
        const prefix = query.prefix ?? '';
        const problem = prefixProblem(prefix);
        if (problem) throw new ApiError('invalid_object_key', problem);
        await authorize(principal, 'read', prefix, 'LIST');
        const limit = query.limit ?? 1000;
        const found = await objects.list(principal.workspace.id, { prefix, limit, ...(query.after !== undefined ? { after: query.after } : {}) });
        return { objects: found.map(objectView), next: found.length === limit ? found.at(-1)!.key : null };
      },
    });
  });
}

function objectKey(params: Record<string, string>): string {
  const key = params['*'] ?? '';
  const problem = keyProblem(key);
  if (problem) throw new ApiError('invalid_object_key', problem);
  return key;
}
