/**
 * The edge of the API and data listeners: their deadlines and header limit, and the answers given before a request reaches a
 * route (HTTP parse errors, timeouts, fastify's URL errors), all in the documented error shape.
 */
import { STATUS_CODES, type IncomingMessage, type ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import type { FastifyError, FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { ApiError, ERROR_CODES, type ErrorBody, type ErrorCode } from '../../shared/errors.js';
import type { ListenerTimeouts } from '../../shared/config.js';

/** MAX_HEADER_BYTES bounds the request line and headers together (Node's default, stated here): more is headers_too_large. */
export const MAX_HEADER_BYTES = 16 * 1024;
/** MAX_PARAM_CHARS bounds one path parameter (job and key ids are far shorter): more is uri_too_long, never a lookup. */
export const MAX_PARAM_CHARS = 100;
/** TIMEOUT_CHECK_INTERVAL_MS is how often Node checks the header and request deadlines: they hold to within this. */
export const TIMEOUT_CHECK_INTERVAL_MS = 1_000;
/** LINGER_MS: after an error answer the connection reads (and ignores) what the client still sends for this long before it is
 *  dropped, so that the answer is not lost to a TCP reset of unread input. */
const LINGER_MS = 2_000;

/** answeredEarly: sockets whose current request was answered before its body arrived (a missed deadline just closes them). */
const answeredEarly = new WeakSet<Socket>();

/** DRAIN_LIMIT_BYTES bounds what is read and discarded of a body its answer did not need; beyond it the connection closes. */
const DRAIN_LIMIT_BYTES = 64 * 1024 * 1024;

/**
 * settleBody is an onSend hook. When a client that asked to close the connection gets an answer before its request's body
 * has arrived (a refusal, a route that takes no body), the answer waits until the rest is read and discarded, up to
 * DRAIN_LIMIT_BYTES and within the request deadline: closing a connection with unread input makes the kernel reset it, and
 * the client would lose the answer. (On a kept-alive connection the answer goes at once and the rest is read and discarded
 * after it, within the request deadline. fastify's own refusals of a body it will not read, such as a declared length over
 * the limit, close at once.)
 */
async function settleBody(request: FastifyRequest, reply: FastifyReply, payload: unknown): Promise<unknown> {
  const req = request.raw;
  if (req.complete || req.destroyed) return payload;
  const socket = req.socket;
  answeredEarly.add(socket);
  req.once('end', () => answeredEarly.delete(socket));
  if (reply.raw.shouldKeepAlive) {
    // Node discards an unread body after the answer, but not one a route began to read (a refused upload): the next
    // request on the connection would wait behind it.
    req.resume();
    return payload;
  }
  await drain(req, DRAIN_LIMIT_BYTES);
  return payload;
}

/** drain reads and discards `body`; true if it ended, false if it went past `limit` bytes or the client went away. */
function drain(body: IncomingMessage, limit: number): Promise<boolean> {
  return new Promise((resolve) => {
    let seen = 0;
    body.on('data', (c: Buffer) => {
      seen += c.length;
      if (seen > limit) {
        body.pause();
        resolve(false);
      }
    });
    body.once('end', () => resolve(true));
    body.once('close', () => resolve(body.complete));
    body.resume();
  });
}

/** LongBodies lets a route exempt a request body it has authorized from the request deadline (object uploads). */
export interface LongBodies {
  /** allow exempts the body now arriving on `req` from the request deadline; it is dropped if nothing arrives for uploadIdleMs. */
  allow(req: IncomingMessage): void;
}

/** ListenerEdge holds one listener's deadlines and answers the refusals no route sees. */
export class ListenerEdge implements LongBodies {
  /** Sockets whose current request body is exempt from the request deadline. */
  private readonly longBodies = new WeakSet<Socket>();

  constructor(private readonly timeouts: ListenerTimeouts) {}

  /** options are the fastify (and, under `https`, Node server and TLS) options that put these deadlines and answers in place. */
  options(tls: { cert: string; key: string }) {
    const t = this.timeouts;
    return {
      https: {
        ...tls,
        minVersion: 'TLSv1.2' as const,
        handshakeTimeout: t.tlsHandshakeMs,
        headersTimeout: t.headersMs,
        requestTimeout: t.requestMs,
        connectionsCheckingInterval: TIMEOUT_CHECK_INTERVAL_MS,
        maxHeaderSize: MAX_HEADER_BYTES,
        // Checked in an onRequest hook instead, so that the refusal has the error shape (Node's own is a bare 400).
        requireHostHeader: false,
        // A client may shut its side once its request is sent and still read the answer (see guard).
        allowHalfOpen: true,
      },
      // fastify sets these two on the server it creates (its defaults: no request deadline, 72 s keep-alive).
      requestTimeout: t.requestMs,
      keepAliveTimeout: t.keepAliveMs,
      // No socket inactivity timeout: a followed job's SSE stream is silent for as long as the job prints nothing.
      connectionTimeout: 0,
      routerOptions: { maxParamLength: MAX_PARAM_CHARS },
      clientErrorHandler: (err: Error, socket: Socket) => this.answerClientError(err, socket),
      frameworkErrors: (err: FastifyError, _request: FastifyRequest, reply: FastifyReply) => answerFrameworkError(err, reply),
    };
  }

  /**
   * guard answers what Node would otherwise answer bare, not at all, or wrongly: CONNECT, expectations other than
   * 100-continue, a missing Host, an Upgrade request, and an answer that comes before its request's body (settleBody).
   */
  guard(app: FastifyInstance): void {
    const server = app.server;
    // Node's HTTP server ends a connection as soon as the client shuts its side, dropping an answer still being made. With
    // this switch (Node's own, undocumented) the answer goes out first, then the connection closes.
    (server as typeof server & { httpAllowHalfOpen: boolean }).httpAllowHalfOpen = true;
    server.on('connect', (_req: IncomingMessage, socket: Socket) => answerRaw(socket, 'not_found', 'this server is not a proxy: CONNECT is not served'));
    // RFC 9110 §10.1.1 lets a server ignore an expectation it does not know (Node's default is a bare 417): serve the request.
    server.on('checkExpectation', (req: IncomingMessage, res: ServerResponse) => server.emit('request', req, res));
    // A client that half-closes in the middle of a body it declared: Node answers that as a parse error, except after an
    // Upgrade header, when it closes without a word. This runs before Node's own handling of the end.
    server.on('secureConnection', (socket: Socket) =>
      socket.prependListener('end', () => {
        const inFlight = (socket as Socket & { _httpMessage?: ServerResponse | null })._httpMessage;
        if (inFlight && !inFlight.req.complete) answerRaw(socket, 'malformed_request', 'the connection closed before the whole body arrived');
      }),
    );
    app.addHook('onRequest', async (request, reply) => {
      // RFC 9112 §3.2: a server must refuse an HTTP/1.1 request without a Host header.
      if (request.raw.httpVersion === '1.1' && request.headers.host === undefined) throw new ApiError('malformed_request', 'an HTTP/1.1 request needs a Host header');
      // An Upgrade is ignored (RFC 9110 §7.8) and the request served, but Node's parser reads nothing more on that
      // connection: it must close after the answer, or the client's next request on it would wait for a 408.
      if (request.headers.upgrade !== undefined) void reply.header('connection', 'close');
    });
    app.addHook('onSend', settleBody);
  }

  allow(req: IncomingMessage): void {
    if (req.complete) return;
    const socket = req.socket;
    const idleMs = this.timeouts.uploadIdleMs;
    this.longBodies.add(socket);
    // The socket's inactivity timer: while the body is incomplete its 'timeout' goes to this request, which answers and closes.
    req.setTimeout(idleMs, () => answerRaw(socket, 'request_timeout', `the upload stalled: nothing arrived for ${idleMs} ms`));
    req.once('end', () => {
      this.longBodies.delete(socket);
      socket.setTimeout(0); // the response is not bounded; Node sets the keep-alive timeout once it is sent
    });
  }

  /** answerClientError answers an HTTP parse error or a missed deadline (Node's `clientError`) and closes the connection. */
  private answerClientError(err: Error & { code?: string; reason?: string }, socket: Socket): void {
    // Anything but HTTP's own errors (a TLS handshake that failed or timed out, a reset) cannot be answered in HTTP.
    const http = err.code === 'ERR_HTTP_REQUEST_TIMEOUT' || err.code?.startsWith('HPE_') === true;
    if (socket.destroyed || !http) return void socket.destroy();
    // An authorized upload outlives the request deadline (Node no longer tracks it after this); its idle timeout bounds it.
    if (err.code === 'ERR_HTTP_REQUEST_TIMEOUT' && this.longBodies.has(socket)) return;
    // A request already answered is not answered again when the rest of its body does not come in time.
    if (err.code === 'ERR_HTTP_REQUEST_TIMEOUT' && answeredEarly.has(socket)) return void socket.destroy();
    const t = this.timeouts;
    switch (err.code) {
      case 'ERR_HTTP_REQUEST_TIMEOUT':
        return answerRaw(socket, 'request_timeout', `the request did not arrive in time: headers are due within ${t.headersMs} ms, the whole request within ${t.requestMs} ms`);
      case 'HPE_HEADER_OVERFLOW':
        return answerRaw(socket, 'headers_too_large', `the request line and headers together are larger than ${MAX_HEADER_BYTES} bytes`);
      case 'HPE_CHUNK_EXTENSIONS_OVERFLOW':
        return answerRaw(socket, 'payload_too_large', 'the chunk extensions of the body are too large');
      default: {
        // llhttp's reasons are fixed phrases ("Invalid header value char"); anything else is not echoed.
        const reason = typeof err.reason === 'string' && /^[\w .,'-]{1,80}$/.test(err.reason) ? `: ${err.reason}` : '';
        return answerRaw(socket, 'malformed_request', `the request is not valid HTTP/1.1${reason}`);
      }
    }
  }
}

/** answerFrameworkError answers the errors fastify raises before routing (fastify's own answers are in another shape). */
function answerFrameworkError(err: FastifyError, reply: FastifyReply): void {
  const body: ErrorBody =
    err.code === 'FST_ERR_BAD_URL'
      ? { error: { code: 'malformed_request', message: 'the URL path is not valid percent-encoding' } }
      : err.code === 'FST_ERR_MAX_PARAM_LENGTH'
        ? { error: { code: 'uri_too_long', message: `a path parameter is longer than ${MAX_PARAM_CHARS} characters` } }
        : { error: { code: 'internal', message: 'internal error; the operator can find details in the control plane log' } };
  void reply.code(ERROR_CODES[body.error.code].status).send(body);
}

/**
 * answerRaw writes a complete HTTP/1.1 error response on a connection the HTTP server has given up on, then closes it. Answers
 * keep their order: an error in bytes after a request still being answered (pipelined junk, data after `Connection: close`)
 * waits for that answer; an error in the body of a request whose whole answer is already on its way lets it go out, then
 * closes. If that answer is only partly written (a stream), the connection is just closed.
 */
function answerRaw(socket: Socket, code: ErrorCode, message: string): void {
  if (socket.destroyed || socket.writableEnded) return; // answered already: the parser reports each further chunk it cannot read
  const inFlight = (socket as Socket & { _httpMessage?: ServerResponse | null })._httpMessage;
  if (inFlight && !inFlight.writableFinished && (inFlight.req.complete || inFlight.writableEnded)) {
    const answered = !inFlight.req.complete;
    inFlight.once('finish', () => (answered ? closeSoon(socket) : answerRaw(socket, code, message)));
    return;
  }
  if (!socket.writable || inFlight?.headersSent) return void socket.destroy();
  const status = ERROR_CODES[code].status;
  const body = JSON.stringify({ error: { code, message } } satisfies ErrorBody);
  closeSoon(socket, `HTTP/1.1 ${status} ${STATUS_CODES[status] ?? ''}\r\ncontent-type: application/json; charset=utf-8\r\ncontent-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n\r\n${body}`);
}

/** closeSoon ends the connection (after `last`), and drops it LINGER_MS later if the client has not closed its side. */
function closeSoon(socket: Socket, last?: string): void {
  if (socket.destroyed || socket.writableEnded) return;
  if (last === undefined) socket.end();
  else socket.end(last);
  setTimeout(() => socket.destroy(), LINGER_MS).unref();
}
