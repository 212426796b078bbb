/** Server-sent events, as the API streams them (job logs, process output): one parser for the whole SDK. */
import type { IncomingMessage } from 'node:http';

/** MAX_EVENT_CHARS bounds one event held while it arrives (an output event carries ≤ 1 MiB, base64 in JSON). */
const MAX_EVENT_CHARS = 4 * 1024 * 1024;

/** readEvents splits a server-sent event stream into (event, data) pairs; a stream past the bound is destroyed. */
export function readEvents(res: IncomingMessage, on: (event: string, data: string) => void): void {
  let buf = '';
  res.setEncoding('utf8');
  res.on('data', (d: string) => {
    buf += d;
    let i: number;
    while ((i = buf.indexOf('\n\n')) >= 0) {
      const block = buf.slice(0, i);
      buf = buf.slice(i + 2);
      const event = /^event: (.*)$/m.exec(block)?.[1];
      const data = /^data: (.*)$/m.exec(block)?.[1];
      if (event && data) on(event, data);
    }
    if (buf.length > MAX_EVENT_CHARS) res.destroy(new Error(`an event of the stream exceeds ${MAX_EVENT_CHARS} characters`));
  });
}
