/** Output sinks: a process's output stream as server-sent events, or over a WebSocket (with input the other way). */
import type { ServerResponse } from 'node:http';
import type { WebSocket } from 'ws';
import type { ApiError } from '../../../shared/errors.js';
import type { OutputSink, ProcessExit } from '../../sandboxes/process-relay.js';

/** WS_HIGH_WATER_BYTES: past this much unsent on a WebSocket, output is not acknowledged until it drains. */
const WS_HIGH_WATER_BYTES = 256 * 1024;
/** WS_DRAIN_POLL_MS is how often a congested WebSocket is checked (ws has no drain event of its own). */
const WS_DRAIN_POLL_MS = 10;

/** OutputFrame is one output event as clients receive it (data in base64: output need not be UTF-8). */
export interface OutputFrame {
  seq: number;
  stream: 'stdout' | 'stderr' | 'pty';
  data: string;
}

/** sseSink writes a stream as SSE events `output`, then one `exit` (or `error`), then ends the response. */
export function sseSink(res: ServerResponse): OutputSink {
  // A response whose client has gone takes nothing more (its stream is being detached).
  const event = (name: string, data: unknown) => (res.destroyed || res.writableEnded ? true : res.write(`event: ${name}\ndata: ${JSON.stringify(data)}\n\n`));
  return {
    output: (seq, stream, data) => event('output', { seq, stream, data: data.toString('base64') } satisfies OutputFrame),
    onDrain: (cb) => void res.once('drain', cb),
    exit: (e: ProcessExit) => {
      event('exit', e);
      if (!res.writableEnded) res.end();
    },
    fail: (e: ApiError) => {
      event('error', { code: e.code, message: e.message });
      if (!res.writableEnded) res.end();
    },
  };
}

/** wsSink sends a stream as JSON frames {type: output|exit|error}; the socket stays open after an exit for the client to close. */
export function wsSink(ws: WebSocket): OutputSink {
  const frame = (v: unknown) => ws.readyState === ws.OPEN && ws.send(JSON.stringify(v));
  return {
    output: (seq, stream, data) => {
      frame({ type: 'output', seq, stream, data: data.toString('base64') });
      return ws.bufferedAmount < WS_HIGH_WATER_BYTES;
    },
    onDrain: (cb) => {
      const check = () => {
        if (ws.readyState !== ws.OPEN) return;
        if (ws.bufferedAmount < WS_HIGH_WATER_BYTES / 4) cb();
        else setTimeout(check, WS_DRAIN_POLL_MS);
      };
      setTimeout(check, WS_DRAIN_POLL_MS);
    },
    exit: (e) => {
      frame({ type: 'exit', ...e });
      ws.close(1000, 'exited');
    },
    fail: (e) => {
      frame({ type: 'error', code: e.code, message: e.message });
      ws.close(1011, e.code);
    },
  };
}

/** openSse takes over a reply's response as an SSE stream. */
export function openSse(res: ServerResponse, status: number): void {
  res.writeHead(status, { 'content-type': 'text/event-stream', 'cache-control': 'no-store', connection: 'keep-alive' });
  res.flushHeaders();
}
