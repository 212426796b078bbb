/** Sandbox file routes: download and upload (raw bodies, streamed), list, stat, mkdir -p, remove, rename — all run in the cell. */
import type { FastifyInstance } from 'fastify';
import { z } from 'zod';
import { ApiError } from '../../../shared/errors.js';
import type { FileRelay } from '../../sandboxes/file-relay.js';
import type { SandboxService } from '../../sandboxes/sandbox-service.js';
import type { LongBodies } from '../listener.js';
import type { RouteTable } from '../route-table.js';

const PathQuery = z.object({ path: z.string().min(1).max(4096).describe('absolute path inside the sandbox') }).strict();

const FileStatView = z.object({
  name: z.string(),
  type: z.enum(['file', 'directory', 'symlink', 'other']),
  size: z.number(),
  mode: z.number().describe('permission bits'),
  mtimeMs: z.number(),
});

const FILE_ERRORS = ['not_found', 'sandbox_not_running', 'invalid_path', 'permission_denied', 'not_a_directory', 'is_a_directory', 'io_error', 'quota_exceeded', 'unavailable'] as const;

/** registerSandboxFileRoutes adds the file operations, in a scope whose bodies are passed through as streams. */
export function registerSandboxFileRoutes(app: FastifyInstance, table: RouteTable, sandboxes: SandboxService, files: FileRelay, longBodies: LongBodies): void {
  void app.register(async (scope) => {
    scope.removeAllContentTypeParsers();
    scope.addContentTypeParser('*', (_request, payload, done) => done(null, payload));
    const t = table.within(scope);
    t.add({
      method: 'GET',
      path: '/v1/sandboxes/:id/files',
      operationId: 'readSandboxFile',
      summary: "Download a file from a sandbox (streamed, any size)",
      auth: 'key',
      query: PathQuery,
      response: { contentType: 'application/octet-stream', description: 'the file' },
      errors: [...FILE_ERRORS],
      handler: async ({ principal, params, query, reply }) => {
        const sb = await sandboxes.live(principal.workspace, params.id!);
        const res = reply.raw;
        let started = false;
        const read = files.read(sb, path(query.path), {
          write: (d) => {
            if (!started) {
              started = true;
              reply.hijack();
              res.writeHead(200, { 'content-type': 'application/octet-stream', 'cache-control': 'no-store' });
            }
            return res.write(d);
          },
          onDrain: (cb) => void res.once('drain', cb),
        });
        res.once('close', () => !res.writableFinished && read.cancel());
        await read.first; // a failure before any byte is answered with its status
        const result = await read.done.catch((e: unknown) => {
          if (!started) throw e;
          res.destroy(); // the body is cut short: the client sees a broken transfer, never a short file as whole
          return null;
        });
        if (!started) {
          reply.hijack();
          res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': '0', 'cache-control': 'no-store' });
        }
        if (result) res.end();
        return undefined;
      },
    });
    t.add({
      method: 'PUT',
      path: '/v1/sandboxes/:id/files',
      operationId: 'writeSandboxFile',
      summary: "Upload a file into a sandbox (the raw request body, streamed; creates or replaces it)",
      auth: 'key',
      query: PathQuery,
      status: 201,
      response: z.object({ path: z.string(), bytes: z.number() }),
      errors: [...FILE_ERRORS, 'no_space', 'malformed_request'],
      handler: async ({ principal, params, query, request }) => {
        const sb = await sandboxes.live(principal.workspace, params.id!);
        longBodies.allow(request.raw);
        const r = await files.write(sb, path(query.path), request.raw);
        return { path: query.path, bytes: r.bytes ?? 0 };
      },
    });
  });
  // The rest take JSON bodies (or none): the API's own parsers.
  const t = table;
  {
    t.add({
      method: 'GET',
      path: '/v1/sandboxes/:id/files/list',
      operationId: 'listSandboxFiles',
      summary: 'List a directory in a sandbox, each entry with its stat',
      auth: 'key',
      query: PathQuery,
      response: z.object({ entries: z.array(FileStatView), truncated: z.boolean() }),
      errors: [...FILE_ERRORS],
      handler: async ({ principal, params, query }) => {
        const r = await files.simple(await sandboxes.live(principal.workspace, params.id!), 'list', path(query.path));
        return { entries: r.entries ?? [], truncated: r.truncated ?? false };
      },
    });
    t.add({
      method: 'GET',
      path: '/v1/sandboxes/:id/files/stat',
      operationId: 'statSandboxFile',
      summary: 'Stat a path in a sandbox (a symlink is reported as one)',
      auth: 'key',
      query: PathQuery,
      response: FileStatView,
      errors: [...FILE_ERRORS],
      handler: async ({ principal, params, query }) => {
        const r = await files.simple(await sandboxes.live(principal.workspace, params.id!), 'stat', path(query.path));
        if (!r.stat) throw new ApiError('io_error', 'the sandbox answered without a stat');
        return r.stat;
      },
    });
    t.add({
      method: 'POST',
      path: '/v1/sandboxes/:id/files/mkdir',
      operationId: 'makeSandboxDir',
      summary: 'Make a directory with its parents (like mkdir -p); an existing directory is fine',
      auth: 'key',
      body: PathQuery,
      status: 201,
      response: z.object({ path: z.string() }),
      errors: [...FILE_ERRORS, 'file_exists', 'no_space'],
      handler: async ({ principal, params, body }) => {
        await files.simple(await sandboxes.live(principal.workspace, params.id!), 'mkdir', path(body.path));
        return { path: body.path };
      },
    });
    t.add({
      method: 'DELETE',
      path: '/v1/sandboxes/:id/files',
      operationId: 'removeSandboxFile',
      summary: 'Remove a file or an empty directory (recursive=true: anything, with its contents)',
      auth: 'key',
      query: PathQuery.extend({ recursive: z.enum(['true', 'false', '1', '0']).optional() }).strict(),
      status: 204,
      response: { contentType: 'none', description: 'removed' },
      errors: [...FILE_ERRORS, 'conflict'],
      handler: async ({ principal, params, query }) => {
        const recursive = query.recursive === 'true' || query.recursive === '1';
        await files.simple(await sandboxes.live(principal.workspace, params.id!), 'remove', path(query.path), { recursive });
        return null;
      },
    });
    t.add({
      method: 'POST',
      path: '/v1/sandboxes/:id/files/rename',
      operationId: 'renameSandboxFile',
      summary: 'Rename (move) a file or directory within a sandbox',
      auth: 'key',
      body: z.object({ from: z.string().min(1).max(4096), to: z.string().min(1).max(4096) }).strict(),
      response: z.object({ path: z.string() }),
      errors: [...FILE_ERRORS, 'file_exists'],
      handler: async ({ principal, params, body }) => {
        await files.simple(await sandboxes.live(principal.workspace, params.id!), 'rename', path(body.from), { to: path(body.to) });
        return { path: body.to };
      },
    });
  }
}

/** path refuses what no cell path can be, before anything is sent: relative, NUL, "..", over 4096 bytes. */
function path(p: string): string {
  if (!p.startsWith('/') || p.includes('\0') || Buffer.byteLength(p) > 4096) throw new ApiError('invalid_path', `path must be absolute, without NUL bytes, at most 4096 bytes: got ${JSON.stringify(p.slice(0, 200))}`);
  return p;
}
