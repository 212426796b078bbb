/**
 * The process WebSocket: `GET /v1/sandboxes/:id/processes/:proc/ws?fromSeq=N` upgraded. Server → client: JSON frames
 * {type: 'output', seq, stream, data (base64)}, one {type: 'exit', exitCode, signal, timedOut, outputSeq} or
 * {type: 'error', code, message}. Client → server: {type: 'stdin', data (base64)}, {type: 'close-stdin'},
 * {type: 'resize', cols, rows}, {type: 'signal', signal}. Closing the socket detaches; the process runs on.
 * A browser cannot set Authorization on a WebSocket: it may offer the subprotocols `cleanroom.v1` and
 * `cleanroom.bearer.<API key>` instead (as Kubernetes does with its bearer subprotocol); the answer selects `cleanroom.v1`.
 */
import { ServerResponse, type IncomingMessage, type Server } from 'node:http';
import type { Duplex } from 'node:stream';
import { WebSocketServer, type WebSocket } from 'ws';
import { z } from 'zod';
import { ApiError, ERROR_CODES, type ErrorBody } from '../../../shared/errors.js';
import type { ProcessRelay } from '../../sandboxes/process-relay.js';
import type { SandboxService } from '../../sandboxes/sandbox-service.js';
import type { Quotas } from '../../quotas/quotas.js';
import type { Authenticator, RouteTable } from '../route-table.js';
import { wsSink } from './sandbox-output.js';

/** WS_MAX_MESSAGE_BYTES bounds one client frame (stdin of at most 256 KiB in base64, with room). */
const WS_MAX_MESSAGE_BYTES = 512 * 1024;
/** WS_INPUT_HIGH_WATER: client frames waiting to be relayed past which the socket stops being read. */
const WS_INPUT_HIGH_WATER = 32;

const PATH = /^\/v1\/sandboxes\/([^/?]{1,100})\/processes\/([^/?]{1,100})\/ws(?:\?(.*))?$/;

const ClientFrame = z.discriminatedUnion('type', [
  z.object({ type: z.literal('stdin'), data: z.string().max(WS_MAX_MESSAGE_BYTES) }),
  z.object({ type: z.literal('close-stdin') }),
  z.object({ type: z.literal('resize'), cols: z.number().int().min(1).max(1000), rows: z.number().int().min(1).max(1000) }),
  z.object({ type: z.literal('signal'), signal: z.number().int().min(1).max(64) }),
]);

/** registerSandboxSocketRoute documents the WebSocket route (a plain GET is answered 426) and serves its upgrades. */
export function registerSandboxSocketRoute(
  t: RouteTable,
  server: Server,
  authenticate: Authenticator,
  sandboxes: SandboxService,
  processes: ProcessRelay,
  quotas: Quotas,
  /** forward hands an upgrade to the replica holding the sandbox's agent; false: served here (several replicas only). */
  forward?: (req: IncomingMessage, socket: Duplex, head: Buffer) => Promise<boolean>,
): void {
  t.add({
    method: 'GET',
    path: '/v1/sandboxes/:id/processes/:proc/ws',
    operationId: 'processSocket',
    summary: "A process's output and input over a WebSocket (send Upgrade: websocket); fromSeq resumes the output",
    auth: 'key',
    query: z.object({ fromSeq: z.coerce.number().int().min(0).optional() }).strict(),
    response: { contentType: 'application/json', description: '101 Switching Protocols to a WebSocket of JSON frames (see the README); a plain GET without Upgrade is refused with 409 conflict' },
    errors: ['not_found', 'sandbox_not_running', 'conflict'],
    handler: async () => {
      throw new ApiError('conflict', 'this is a WebSocket endpoint: connect with Upgrade: websocket');
    },
  });
  const wss = new WebSocketServer({ noServer: true, maxPayload: WS_MAX_MESSAGE_BYTES, handleProtocols: (offered) => (offered.has(PROTOCOL) ? PROTOCOL : false) });
  server.on('upgrade', (req: IncomingMessage, socket: Duplex, head: Buffer) => {
    const m = PATH.exec(req.url ?? '');
    if (!m || (req.headers.upgrade ?? '').toLowerCase() !== 'websocket') return servePlain(server, req, socket, head);
    void (async () => {
      try {
        if (forward && (await forward(req, socket, head))) return;
        const principal = await authenticate(req.headers.authorization ?? bearerProtocol(req.headers['sec-websocket-protocol']), 'key');
        const fromSeq = Number(new URLSearchParams(m[3] ?? '').get('fromSeq') ?? 0);
        if (!Number.isSafeInteger(fromSeq) || fromSeq < 0) throw new ApiError('invalid_request', 'query.fromSeq: a byte offset (integer ≥ 0)');
        const sb = await sandboxes.live(principal.workspace, decodeURIComponent(m[1]!));
        const info = await processes.find(sb, decodeURIComponent(m[2]!));
        const release = quotas.openStream(principal.workspace);
        wss.handleUpgrade(req, socket, head, (ws) => void serve(ws, sb, info.procId, fromSeq, release));
      } catch (e) {
        refuse(socket, e);
      }
    })();
  });

  async function serve(ws: WebSocket, sb: Awaited<ReturnType<SandboxService['live']>>, procId: string, fromSeq: number, release: () => void): Promise<void> {
    let attached: { close: () => void } | null = null;
    let closed = false;
    ws.on('close', () => {
      closed = true;
      release();
      attached?.close();
    });
    ws.on('error', () => ws.terminate());
    // Client frames are relayed in order; while many wait (stdin over the process's window), the socket is not read.
    let chain = Promise.resolve();
    let waiting = 0;
    const raw = (ws as unknown as { _socket?: Duplex })._socket;
    ws.on('message', (data) => {
      waiting++;
      if (waiting > WS_INPUT_HIGH_WATER) raw?.pause();
      chain = chain
        .then(async () => {
          const frame = ClientFrame.safeParse(safeJson(data.toString()));
          if (!frame.success) throw new ApiError('invalid_request', 'a frame must be {type: stdin|close-stdin|resize|signal, …}');
          sandboxes.touch(sb.job.id);
          const f = frame.data;
          if (f.type === 'stdin') await processes.writeStdin(sb, procId, Buffer.from(f.data, 'base64'));
          else if (f.type === 'close-stdin') await processes.writeStdin(sb, procId, null);
          else if (f.type === 'resize') processes.resize(sb, procId, f.cols, f.rows);
          else processes.send(sb, procId, f.signal);
        })
        .catch((e: unknown) => {
          const err = e instanceof ApiError ? e : new ApiError('internal', 'internal error');
          if (ws.readyState === ws.OPEN) ws.send(JSON.stringify({ type: 'error', code: err.code, message: err.message }));
        })
        .finally(() => {
          if (--waiting <= WS_INPUT_HIGH_WATER / 2) raw?.resume();
        });
    });
    try {
      const a = await processes.attach(sb, procId, fromSeq, wsSink(ws));
      attached = a;
      if (closed) a.close();
    } catch (e) {
      const err = e instanceof ApiError ? e : new ApiError('internal', 'internal error');
      if (ws.readyState === ws.OPEN) ws.send(JSON.stringify({ type: 'error', code: err.code, message: err.message }));
      ws.close(1011, err.code);
    }
  }
}

/** PROTOCOL is the subprotocol a browser offers (with its key in BEARER_PREFIX…) and the server selects. */
const PROTOCOL = 'cleanroom.v1';
const BEARER_PREFIX = 'cleanroom.bearer.';

/** bearerProtocol turns an offered `cleanroom.bearer.<key>` subprotocol into an Authorization header value. */
function bearerProtocol(header: string | undefined): string | undefined {
  const key = header?.split(',').map((s) => s.trim()).find((s) => s.startsWith(BEARER_PREFIX));
  return key ? `Bearer ${key.slice(BEARER_PREFIX.length)}` : undefined;
}

function safeJson(s: string): unknown {
  try {
    return JSON.parse(s);
  } catch {
    return null;
  }
}

/** refuse answers a WebSocket request that cannot be served with the API's error shape, and closes. */
function refuse(socket: Duplex, e: unknown): void {
  const body: ErrorBody = e instanceof ApiError ? { error: { code: e.code, message: e.message } } : { error: { code: 'internal', message: 'internal error' } };
  const status = ERROR_CODES[body.error.code].status;
  const text = JSON.stringify(body);
  if (socket.writable) socket.end(`HTTP/1.1 ${status} Refused\r\ncontent-type: application/json; charset=utf-8\r\ncontent-length: ${Buffer.byteLength(text)}\r\nconnection: close\r\n\r\n${text}`);
  setTimeout(() => socket.destroy(), 2000).unref();
}

/**
 * servePlain serves an Upgrade request for anything but the process socket as Node serves an Upgrade nobody takes: as
 * a plain request without a body (Node reads nothing after an Upgrade's headers), and the connection closes after it.
 */
function servePlain(server: Server, req: IncomingMessage, socket: Duplex, head: Buffer): void {
  void head; // bytes after the headers are not read, as without an upgrade handler
  req.complete = true;
  req.push(null);
  const res = new ServerResponse(req);
  res.shouldKeepAlive = false;
  res.assignSocket(socket as never);
  res.once('finish', () => {
    res.detachSocket(socket as never);
    socket.end();
  });
  server.emit('request', req, res);
}
