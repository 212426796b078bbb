/**
 * The Connect protocol with the JSON codec, as envd speaks it: unary calls (a JSON body in, a JSON body out, errors as
 * `{code, message}` with a matching status) and server-streaming calls (one request envelope in; envelopes out, always
 * closed by an end-stream envelope, flag 0x02, carrying `{}` or `{error}`). Envelope: flags byte, 4-byte big-endian
 * length, message.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { ConnectError, CONNECT_STATUS } from './e2b-errors.js';

/** MAX_RPC_REQUEST_BYTES bounds one RPC request (stdin of SendInput included); more is refused unread. */
export const MAX_RPC_REQUEST_BYTES = 4 * 1024 * 1024;
/** STREAM_HIGH_WATER_BYTES: past this much unsent on a stream's socket, output is not acknowledged until it drains. */
export const STREAM_HIGH_WATER_BYTES = 256 * 1024;
/** KEEPALIVE_DEFAULT_S is the keepalive interval when the client names none (envd's Keepalive-Ping-Interval). */
export const KEEPALIVE_DEFAULT_S = 50;

const FLAG_END_STREAM = 0x02;
const FLAG_COMPRESSED = 0x01;

/** readBody reads a request body whole, up to `limit` bytes (an RPC request is small; files never come through here). */
export async function readBody(req: IncomingMessage, limit = MAX_RPC_REQUEST_BYTES): Promise<Buffer> {
  const parts: Buffer[] = [];
  let size = 0;
  for await (const c of req as AsyncIterable<Buffer>) {
    size += c.length;
    if (size > limit) throw new ConnectError('resource_exhausted', `the request is larger than ${limit} bytes`);
    parts.push(c);
  }
  return Buffer.concat(parts);
}

/** parseJson reads a JSON object, or refuses with invalid_argument. */
export function parseJson(raw: Buffer): Record<string, unknown> {
  try {
    const v: unknown = raw.length === 0 ? {} : JSON.parse(raw.toString('utf8'));
    if (v && typeof v === 'object' && !Array.isArray(v)) return v as Record<string, unknown>;
  } catch {
    /* refused below */
  }
  throw new ConnectError('invalid_argument', 'the request is not a JSON object');
}

/** readStreamRequest reads the one enveloped message of a server-streaming call. */
export async function readStreamRequest(req: IncomingMessage): Promise<Record<string, unknown>> {
  const raw = await readBody(req);
  if (raw.length < 5) throw new ConnectError('invalid_argument', 'a streaming request is one envelope');
  const flags = raw[0]!;
  const len = raw.readUInt32BE(1);
  if (flags & FLAG_COMPRESSED) throw new ConnectError('unimplemented', 'compressed envelopes are not supported');
  if (raw.length !== 5 + len) throw new ConnectError('invalid_argument', 'the request envelope length does not match the body');
  return parseJson(raw.subarray(5));
}

/** answerUnary writes a unary success. */
export function answerUnary(res: ServerResponse, message: unknown): void {
  const body = JSON.stringify(message);
  res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
  res.end(body);
}

/** answerUnaryError writes a unary error. */
export function answerUnaryError(res: ServerResponse, e: ConnectError): void {
  if (res.headersSent) return void res.destroy();
  const body = JSON.stringify({ code: e.code, message: e.message });
  res.writeHead(CONNECT_STATUS[e.code], { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
  res.end(body);
}

function envelope(flags: number, message: unknown): Buffer {
  const json = Buffer.from(JSON.stringify(message));
  const head = Buffer.alloc(5);
  head[0] = flags;
  head.writeUInt32BE(json.length, 1);
  return Buffer.concat([head, json]);
}

/**
 * ConnectStream is the server's side of one server-streaming call. It answers 200 at once (errors go in the end-stream
 * envelope, as the protocol asks), sends a keepalive message while the stream is otherwise quiet, and reports when the
 * client's socket has room again.
 */
export class ConnectStream {
  private ended = false;
  private readonly keepalive: NodeJS.Timeout;
  private lastWrite = Date.now();

  constructor(
    private readonly res: ServerResponse,
    keepaliveMessage: unknown,
    keepaliveSeconds: number,
  ) {
    res.writeHead(200, { 'content-type': 'application/connect+json', 'cache-control': 'no-store' });
    res.flushHeaders();
    const everyMs = Math.max(1, keepaliveSeconds) * 1000;
    this.keepalive = setInterval(() => {
      if (Date.now() - this.lastWrite >= everyMs / 2 && this.room()) this.send(keepaliveMessage);
    }, everyMs / 2);
    this.keepalive.unref();
    res.once('close', () => this.stop());
  }

  /** open says whether the client still listens. */
  get open(): boolean {
    return !this.ended && !this.res.destroyed;
  }

  /** send writes one message; false when the socket's buffer is over its mark (wait for onDrain before more). */
  send(message: unknown): boolean {
    if (!this.open) return true;
    this.lastWrite = Date.now();
    this.res.write(envelope(0, message));
    return this.room();
  }

  /** onDrain calls back once the socket has room (at once if it has). */
  onDrain(cb: () => void): void {
    if (this.room() || !this.open) return void setImmediate(cb);
    this.res.once('drain', cb);
  }

  /** end closes the stream with the end-stream envelope (an error, or success). */
  end(error?: ConnectError): void {
    if (!this.open) return this.stop();
    this.res.end(envelope(FLAG_END_STREAM, error ? { error: { code: error.code, message: error.message } } : {}));
    this.stop();
  }

  private room(): boolean {
    return this.res.writableLength < STREAM_HIGH_WATER_BYTES;
  }

  private stop(): void {
    this.ended = true;
    clearInterval(this.keepalive);
  }
}

/** keepaliveSeconds reads the client's Keepalive-Ping-Interval header (seconds). */
export function keepaliveSeconds(req: IncomingMessage): number {
  const v = Number(req.headers['keepalive-ping-interval']);
  return Number.isFinite(v) && v >= 1 && v <= 3600 ? v : KEEPALIVE_DEFAULT_S;
}
