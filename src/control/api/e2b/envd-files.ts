/**
 * envd's plain-HTTP file endpoints over FileRelay: `GET /files?path=` streams a file out, `POST /files` streams one or
 * more files in (multipart/form-data, each part's filename its target path; or application/octet-stream, optionally
 * gzip-encoded, to `path`). Both take the access token, or a signed URL (uploadUrl/downloadUrl). Errors are
 * `{code: <int>, message}`: 404 FileNotFoundError, 400 InvalidArgumentError, 401 AuthenticationError, 507
 * NotEnoughSpaceError, 502 "sandbox not running".
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { posix } from 'node:path';
import type { Readable } from 'node:stream';
import { createGunzip } from 'node:zlib';
import { ApiError, ERROR_CODES } from '../../../shared/errors.js';
import type { FileRelay } from '../../sandboxes/file-relay.js';
import type { LongBodies } from '../listener.js';
import { ConnectError, CONNECT_STATUS } from './e2b-errors.js';
import type { EnvdGateway, SignedRequest } from './envd-gateway.js';
import { homePath } from './envd-paths.js';
import { boundaryOf, MultipartReader } from './multipart-reader.js';
import type { FileOperation } from './envd-tokens.js';

/** MAX_FILES_PER_UPLOAD bounds the parts of one multipart upload. */
const MAX_FILES_PER_UPLOAD = 1000;

/** EnvdFiles serves GET and POST /files. */
export class EnvdFiles {
  constructor(
    private readonly gateway: EnvdGateway,
    private readonly files: FileRelay,
    private readonly longBodies: LongBodies,
  ) {}

  /** download streams a file to the client. */
  async download(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const q = query(req);
    const raw = q.get('path') ?? '';
    const sb = await this.gateway.resolve(req, signed(q, raw, 'read'));
    if (raw === '') throw new ConnectError('invalid_argument', 'path: the file to read');
    let started = false;
    const read = this.files.read(sb, homePath(raw), {
      write: (d) => {
        if (!started) {
          started = true;
          res.writeHead(200, { 'content-type': 'application/octet-stream', 'cache-control': 'no-store' });
        }
        return res.write(d);
      },
      onDrain: (cb) => void res.once('drain', cb),
    });
    req.once('close', () => !res.writableFinished && read.cancel());
    await read.first;
    const result = await read.done.catch((e: unknown) => {
      if (!started) throw e;
      res.destroy(); // cut short: the client sees a broken transfer, never a short file as whole
      return null;
    });
    if (!started) res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': '0', 'cache-control': 'no-store' });
    if (result) res.end();
  }

  /** upload writes the request's file(s) and answers their entries. */
  async upload(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const q = query(req);
    const target = q.get('path');
    const sb = await this.gateway.resolve(req, signed(q, target ?? '', 'write'));
    if (Object.keys(req.headers).some((h) => h.startsWith('x-metadata-'))) throw new ConnectError('invalid_argument', 'file metadata (X-Metadata-*) is not supported by Cleanroom');
    this.longBodies.allow(req);
    const written: Array<{ path: string; name: string; type: 'file' }> = [];
    const write = async (path: string, body: Readable) => {
      const p = homePath(path);
      await this.files.write(sb, p, body);
      written.push({ path: p, name: posix.basename(p), type: 'file' });
    };
    const boundary = boundaryOf(req.headers['content-type']);
    if (boundary) {
      const parts = new MultipartReader(req, boundary);
      for (let head = await parts.next(); head; head = await parts.next()) {
        if (written.length >= MAX_FILES_PER_UPLOAD) throw new ConnectError('invalid_argument', `at most ${MAX_FILES_PER_UPLOAD} files in one upload`);
        const data = parts.data();
        if (head.name !== 'file') {
          data.resume();
          await new Promise((r) => data.once('end', r));
          continue;
        }
        const path = target ?? head.filename;
        if (!path) throw new ConnectError('invalid_argument', 'a file part needs a filename (its target path), or give ?path=');
        await write(path, data);
      }
    } else {
      if (!target) throw new ConnectError('invalid_argument', 'path: where to write the file');
      const encoding = String(req.headers['content-encoding'] ?? 'identity').toLowerCase();
      if (encoding !== 'identity' && encoding !== 'gzip') throw new ConnectError('invalid_argument', `Content-Encoding ${encoding} is not supported (gzip is)`);
      await write(target, encoding === 'gzip' ? req.pipe(createGunzip()) : req);
    }
    if (written.length === 0) throw new ConnectError('invalid_argument', 'the upload carried no file');
    const body = JSON.stringify(written);
    res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
    res.end(body);
  }
}

/** answerFilesError answers a /files failure as envd does: `{code: <status>, message}`. */
export function answerFilesError(res: ServerResponse, e: unknown): void {
  if (res.headersSent) return void res.destroy();
  let status: number;
  let message: string;
  if (e instanceof ConnectError) {
    status = e.code === 'unavailable' ? 502 : CONNECT_STATUS[e.code];
    message = e.message;
  } else if (e instanceof ApiError) {
    status = e.code === 'sandbox_not_running' ? 502 : ERROR_CODES[e.code].status;
    message = e.message;
  } else {
    status = 500;
    message = 'internal error';
  }
  const body = JSON.stringify({ code: status, message });
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
  res.end(body);
}

function query(req: IncomingMessage): URLSearchParams {
  return new URL(req.url ?? '/', 'http://x').searchParams;
}

/** signed reads a signed URL's claim (null when the URL carries no signature: the access token is then needed). */
function signed(q: URLSearchParams, path: string, operation: FileOperation): SignedRequest | undefined {
  const signature = q.get('signature');
  if (!signature) return undefined;
  return { path, operation, user: q.get('username') ?? '', signature, expiration: q.get('signature_expiration') };
}
