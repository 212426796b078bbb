/** Raw HTTP/1.1 over TLS, for tests that send what Node's client and fetch refuse to: one connection per exchange. */
import { connect, type TLSSocket } from 'node:tls';

/** RawResponse is one parsed response; `stream` marks an event stream whose body was not awaited. */
export interface RawResponse {
  status: number;
  headers: Record<string, string>;
  body: Buffer;
  stream: boolean;
}

/** RawExchange is what came back on one connection. */
export interface RawExchange {
  responses: RawResponse[];
  /** The connection closed (by the server, or after the last awaited response) before the deadline. */
  closed: boolean;
  timedOut: boolean;
  error: string | null;
  elapsedMs: number;
  /** Everything the server sent. */
  received: Buffer;
}

/** RawTarget is a TLS endpoint of the cluster. */
export interface RawTarget {
  host: string;
  port: number;
  ca: string;
}

/** RawOptions shape one exchange. */
export interface RawOptions {
  /** The request was HEAD: its response has no body whatever its headers say. */
  head?: boolean;
  /** Half-close after writing (for requests whose body is deliberately short). */
  endAfterWrite?: boolean;
  /** Return after this many complete responses instead of waiting for the server to close. */
  stopAfter?: number;
  /** Return when nothing more has arrived for this long after a complete response (a kept-alive connection stays open). */
  settleMs?: number;
  timeoutMs: number;
}

const sessions = new Map<number, Buffer>();

/** rawExchange sends `request` on a fresh TLS connection and collects the responses until the connection closes, `stopAfter`
 *  responses have arrived, or the deadline passes. TLS sessions are resumed per port, so that many exchanges stay cheap. */
export function rawExchange(target: RawTarget, request: Buffer | ((s: TLSSocket) => void), opts: RawOptions): Promise<RawExchange> {
  const started = Date.now();
  return new Promise((resolve) => {
    const session = sessions.get(target.port);
    const s = connect({ host: target.host, port: target.port, ca: target.ca, servername: 'localhost', ...(session ? { session } : {}) }, () => {
      if (typeof request === 'function') request(s);
      else s.write(request);
      if (opts.endAfterWrite) s.end();
    });
    s.on('session', (b: Buffer) => sessions.set(target.port, b));
    const chunks: Buffer[] = [];
    let error: string | null = null;
    let done = false;
    const finish = (closed: boolean, timedOut: boolean) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      clearTimeout(settle);
      s.destroy();
      const received = Buffer.concat(chunks);
      resolve({ responses: parseResponses(received, opts.head ?? false, closed), closed, timedOut, error, elapsedMs: Date.now() - started, received });
    };
    const timer = setTimeout(() => finish(false, true), opts.timeoutMs);
    let settle: NodeJS.Timeout | undefined;
    s.on('data', (d: Buffer) => {
      chunks.push(d);
      const complete = countComplete(Buffer.concat(chunks), opts.head ?? false);
      if (opts.stopAfter !== undefined && complete >= opts.stopAfter) finish(true, false);
      else if (opts.settleMs !== undefined && complete > 0) {
        clearTimeout(settle);
        settle = setTimeout(() => finish(false, false), opts.settleMs);
      }
    });
    s.on('error', (e: NodeJS.ErrnoException) => (error = e.code ?? e.message));
    s.on('close', () => finish(true, false));
  });
}

function countComplete(buf: Buffer, head: boolean): number {
  return parseResponses(buf, head, false).length;
}

/** parseResponses reads the complete responses in `buf` (a close-delimited body counts only once `closed`). */
export function parseResponses(buf: Buffer, head: boolean, closed: boolean): RawResponse[] {
  const out: RawResponse[] = [];
  let at = 0;
  for (;;) {
    const end = buf.indexOf('\r\n\r\n', at);
    if (end < 0) return out;
    const lines = buf.subarray(at, end).toString('latin1').split('\r\n');
    const m = /^HTTP\/1\.[01] (\d{3})/.exec(lines[0] ?? '');
    if (!m) return out;
    const status = Number(m[1]);
    const headers: Record<string, string> = {};
    for (const l of lines.slice(1)) {
      const i = l.indexOf(':');
      if (i > 0) headers[l.slice(0, i).trim().toLowerCase()] = l.slice(i + 1).trim();
    }
    let bodyAt = end + 4;
    if (status < 200) {
      at = bodyAt;
      continue;
    }
    if ((headers['content-type'] ?? '').startsWith('text/event-stream')) {
      out.push({ status, headers, body: buf.subarray(bodyAt), stream: true });
      return out;
    }
    if (head || status === 204 || status === 304) {
      out.push({ status, headers, body: Buffer.alloc(0), stream: false });
      at = bodyAt;
      continue;
    }
    if (/chunked/i.test(headers['transfer-encoding'] ?? '')) {
      const parts: Buffer[] = [];
      for (;;) {
        const eol = buf.indexOf('\r\n', bodyAt);
        if (eol < 0) return out;
        const size = parseInt(buf.subarray(bodyAt, eol).toString('latin1'), 16);
        if (Number.isNaN(size)) return out;
        if (size === 0) {
          // The last chunk; this server sends no trailers, so the blank line follows at once.
          if (buf.length < eol + 4) return out;
          bodyAt = eol + 4;
          break;
        }
        if (buf.length < eol + 2 + size + 2) return out;
        parts.push(buf.subarray(eol + 2, eol + 2 + size));
        bodyAt = eol + 2 + size + 2;
      }
      out.push({ status, headers, body: Buffer.concat(parts), stream: false });
      at = bodyAt;
      continue;
    }
    if (headers['content-length'] !== undefined) {
      const n = Number(headers['content-length']);
      if (buf.length < bodyAt + n) return out;
      out.push({ status, headers, body: buf.subarray(bodyAt, bodyAt + n), stream: false });
      at = bodyAt + n;
      continue;
    }
    if (!closed) return out;
    out.push({ status, headers, body: buf.subarray(bodyAt), stream: false });
    return out;
  }
}
