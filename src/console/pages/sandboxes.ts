/** Sandboxes: the live list, create and end; a sandbox with its details and an interactive terminal (xterm.js over the
 *  process WebSocket, authenticated by a subprotocol since a browser cannot set Authorization on a WebSocket). */
import { apiKey, call } from '../api.js';
import { h, replace, table, when } from '../dom.js';
import type { Page } from '../page.js';
import { poll } from './jobs.js';

interface SandboxView {
  id: string;
  state: string;
  endReason: string | null;
  message: string | null;
  metadata: Record<string, string>;
  runtime: string;
  createdAt: string;
  startedAt: string | null;
  endsAt: string | null;
  wipe: unknown;
}

/** The slice of xterm.js's Terminal the console uses (loaded at run time from the shipped module). */
interface XTerm {
  open(el: HTMLElement): void;
  write(data: Uint8Array | string): void;
  onData(cb: (data: string) => void): void;
  focus(): void;
  dispose(): void;
}

const COLS = 100;
const ROWS = 28;

export const sandboxesPage: Page = (root, signal) => {
  const list = h('div', { id: 'sandbox-list' });
  const runtime = h('select', { id: 'sandbox-runtime' }, h('option', { value: 'runc' }, 'runc'), h('option', { value: 'crun' }, 'crun'), h('option', { value: 'runsc' }, 'runsc (gVisor)'));
  const status = h('p', { id: 'sandbox-status', role: 'alert' });
  const create = async () => {
    status.className = '';
    status.textContent = 'starting…';
    try {
      const sb = await call<SandboxView>('POST', '/v1/sandboxes', { runtime: runtime.value, timeoutSeconds: 900, metadata: { from: 'console' } });
      location.hash = `#/sandboxes/${encodeURIComponent(sb.id)}`;
    } catch (e) {
      status.className = 'error';
      status.textContent = (e as Error).message;
    }
  };
  replace(root, h('h2', {}, 'Sandboxes'), h('p', {}, runtime, ' ', h('button', { id: 'sandbox-create', onclick: () => void create() }, 'Create sandbox')), status, list);
  poll(
    async () => {
      const { sandboxes } = await call<{ sandboxes: SandboxView[] }>('GET', '/v1/sandboxes?state=all&limit=100');
      replace(
        list,
        table(
          ['sandbox', 'state', 'runtime', 'metadata', 'created', 'ends'],
          sandboxes.map((s) => [h('a', { href: `#/sandboxes/${encodeURIComponent(s.id)}` }, s.id), `${s.state}${s.endReason ? ` (${s.endReason})` : ''}`, s.runtime, Object.entries(s.metadata).map(([k, v]) => `${k}=${v}`).join(' '), when(s.createdAt), when(s.endsAt)]),
          { id: 'sandboxes-table' },
        ),
      );
    },
    3000,
    signal,
  );
};

export const sandboxPage: Page = (root, signal, id = '') => {
  const head = h('div', { id: 'sandbox-head' });
  const termBox = h('div', { id: 'terminal' });
  const status = h('p', { id: 'terminal-status', role: 'status' });
  const receipt = h('pre', { id: 'sandbox-receipt' });
  const path = `/v1/sandboxes/${encodeURIComponent(id)}`;
  let socket: WebSocket | null = null;
  let term: XTerm | null = null;
  signal.addEventListener('abort', () => {
    socket?.close();
    term?.dispose();
  });
  const openTerminal = async () => {
    if (socket) return;
    status.textContent = 'opening a shell…';
    const { procId } = await call<{ procId: string }>('POST', `${path}/processes`, { cmd: ['/bin/sh', '-i'], pty: { cols: COLS, rows: ROWS }, background: true, env: { TERM: 'xterm-256color' } });
    const { Terminal } = (await import(new URL('../vendor/xterm.mjs', import.meta.url).href)) as { Terminal: new (o: object) => XTerm };
    term = new Terminal({ cols: COLS, rows: ROWS, convertEol: false, cursorBlink: true });
    term.open(termBox);
    const url = new URL(`${path}/processes/${encodeURIComponent(procId)}/ws`, location.href);
    url.protocol = url.protocol === 'https:' ? 'wss:' : 'ws:';
    socket = new WebSocket(url, ['cleanroom.v1', `cleanroom.bearer.${apiKey() ?? ''}`]);
    const ws = socket;
    const encoder = new TextEncoder();
    ws.addEventListener('open', () => {
      status.textContent = 'connected';
      ws.send(JSON.stringify({ type: 'resize', cols: COLS, rows: ROWS }));
      term?.focus();
    });
    ws.addEventListener('message', (ev) => {
      const f = JSON.parse(String(ev.data)) as { type: string; data?: string; exitCode?: number | null; message?: string };
      if (f.type === 'output' && f.data) term?.write(Uint8Array.from(atob(f.data), (c) => c.charCodeAt(0)));
      else if (f.type === 'exit') status.textContent = `the shell exited (${f.exitCode ?? 'signal'})`;
      else if (f.type === 'error') status.textContent = `error: ${f.message ?? ''}`;
    });
    ws.addEventListener('close', () => {
      if (!signal.aborted) status.textContent += ' · disconnected';
    });
    term.onData((d) => {
      if (ws.readyState !== WebSocket.OPEN) return;
      let bin = '';
      for (const b of encoder.encode(d)) bin += String.fromCharCode(b);
      ws.send(JSON.stringify({ type: 'stdin', data: btoa(bin) }));
    });
  };
  const load = async () => {
    const s = await call<SandboxView>('GET', path);
    replace(
      head,
      h('p', {}, 'State ', h('strong', { id: 'sandbox-state' }, s.state), s.endReason ? ` (${s.endReason})` : '', s.message ? ` — ${s.message}` : ''),
      h('p', {}, `${s.runtime} · created ${when(s.createdAt)} · ready ${when(s.startedAt)} · ends ${when(s.endsAt)}`),
      s.state === 'running'
        ? h('p', {}, h('button', { id: 'terminal-open', onclick: () => void openTerminal().catch((e: Error) => (status.textContent = e.message)) }, 'Open terminal'), ' ', h('button', { id: 'sandbox-kill', onclick: () => void call('DELETE', path).then(load) }, 'End sandbox'))
        : null,
    );
    receipt.textContent = s.wipe ? JSON.stringify(s.wipe, null, 2) : '';
  };
  replace(root, h('h2', {}, 'Sandbox ', h('code', {}, id)), head, status, termBox, h('h3', {}, 'Wipe receipt'), receipt);
  poll(load, 3000, signal);
};
