/** The console's API client: the same HTTPS API as the SDK, with the key kept for this browser session only. */

const KEY = 'cleanroom.apiKey';

/** ApiError is an error answer of the API, in its one shape. */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

export function apiKey(): string | null {
  return sessionStorage.getItem(KEY);
}

export function signIn(key: string): void {
  sessionStorage.setItem(KEY, key);
}

export function signOut(): void {
  sessionStorage.removeItem(KEY);
}

/** call sends one request and returns its JSON (or the raw Response when `raw`); errors become ApiError. */
export async function call<T = any>(method: string, path: string, body?: unknown, init: { raw?: boolean; contentType?: string; signal?: AbortSignal } = {}): Promise<T> {
  const headers: Record<string, string> = { authorization: `Bearer ${apiKey() ?? ''}` };
  let payload: BodyInit | undefined;
  if (body instanceof Blob || body instanceof ArrayBuffer) {
    payload = body;
    headers['content-type'] = init.contentType ?? 'application/octet-stream';
  } else if (body !== undefined) {
    payload = JSON.stringify(body);
    headers['content-type'] = 'application/json';
  }
  const res = await fetch(path, { method, headers, body: payload, signal: init.signal });
  if (!res.ok) {
    const text = await res.text();
    let code = 'http_error';
    let message = `${res.status} ${res.statusText}`;
    try {
      const e = JSON.parse(text) as { error?: { code?: string; message?: string } };
      code = e.error?.code ?? code;
      message = e.error?.message ?? message;
    } catch {
      // not JSON: keep the status line
    }
    throw new ApiError(res.status, code, message);
  }
  if (init.raw) return res as T;
  const type = res.headers.get('content-type') ?? '';
  return (type.includes('json') ? res.json() : res.text()) as Promise<T>;
}

/** SseEvent is one server-sent event. */
export interface SseEvent {
  event: string;
  data: string;
}

/** stream reads an SSE response (fetch, because EventSource cannot send the key) until it ends or `signal` aborts. */
export async function stream(path: string, onEvent: (e: SseEvent) => void, signal: AbortSignal): Promise<void> {
  const res = await call<Response>('GET', path, undefined, { raw: true, signal });
  const reader = res.body!.pipeThrough(new TextDecoderStream()).getReader();
  let buf = '';
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buf += value;
    let cut: number;
    while ((cut = buf.indexOf('\n\n')) >= 0) {
      const block = buf.slice(0, cut);
      buf = buf.slice(cut + 2);
      let event = 'message';
      const data: string[] = [];
      for (const line of block.split('\n')) {
        if (line.startsWith('event: ')) event = line.slice(7);
        else if (line.startsWith('data: ')) data.push(line.slice(6));
      }
      onEvent({ event, data: data.join('\n') });
    }
  }
}

/** decodeBase64 turns an output chunk's data into text (UTF-8, lenient). */
export function decodeBase64(b64: string): string {
  const bin = atob(b64);
  const bytes = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
  return new TextDecoder().decode(bytes);
}
