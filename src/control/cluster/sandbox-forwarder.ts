/**
 * SandboxForwarder sends a sandbox's process, file and envd requests (and an operator's drain/undrain/remove of an
 * agent) to the replica whose channel holds the sandbox's agent: the process and file relays keep per-sandbox state (streams, pending requests) tied to that connection, so
 * that replica serves them. The request is piped as it came (same method, path, headers — the Authorization too, so the
 * owner authenticates and meters it itself) over TLS verified against the platform CA, and the answer is piped back:
 * both directions keep TCP backpressure, nothing is buffered whole. A forwarded request is never forwarded again.
 */
import { Agent, request } from 'node:https';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Duplex } from 'node:stream';
import type { Store } from '../store/store.js';
import type { ReplicaRegistry } from './replica-registry.js';

/** FORWARDED_HEADER marks a request forwarded by a replica (its id): the receiver serves it itself. */
export const FORWARDED_HEADER = 'x-cleanroom-forwarded-by';
/** HOP_HEADERS are not passed on (they describe one connection, not the request). */
const HOP_HEADERS = new Set(['connection', 'keep-alive', 'proxy-connection', 'transfer-encoding', 'upgrade', 'te', 'trailer']);
/** SANDBOX_PATH matches the sandbox sub-resources served by the agent's replica (not create/get/list/delete). */
const SANDBOX_PATH = /^\/v1\/sandboxes\/(sbx_[A-Za-z0-9]{1,64})\/(processes|files|timeout)(?:[/?]|$)/;

/** E2B_SANDBOX_PATH matches the e2b REST calls that reach the sandbox's agent (its deadline). */
const E2B_SANDBOX_PATH = /^\/sandboxes\/(sbx_[A-Za-z0-9]{1,64})\/(?:timeout|connect)(?:\?|$)/;
/** AGENT_ADMIN matches an operator's drain/undrain/remove of one agent, served by the replica holding its channel. */
const AGENT_ADMIN = /^\/v1\/agents\/([A-Za-z0-9_.-]{1,64})(?:\/(?:drain|undrain))?(?:\?|$)/;

/**
 * ForwardElsewhere is thrown by a handler that learns only after authenticating which sandbox a request is for (an e2b
 * signed file URL names none) and finds its agent on another replica: the caller forwards the unread request there.
 */
export class ForwardElsewhere extends Error {
  constructor(readonly target: string) {
    super(`served by the replica at ${target}`);
  }
}

/** ForwardDeps: where the sandbox's agent is, and how to reach peers. */
export interface ForwardDeps {
  store: Pick<Store, 'getJob' | 'getAgent'>;
  registry: ReplicaRegistry;
  /** holds says whether an agent is on this replica's channel. */
  holds: (agentId: string) => boolean;
  /** envdSandboxIdOf reads the sandbox an e2b envd request names. */
  envdSandboxIdOf: (req: IncomingMessage) => string | null;
  ca: string;
  log: (msg: string, extra?: object) => void;
}

/** SandboxForwarder decides per request and pipes the forwarded ones. */
export class SandboxForwarder {
  private readonly agent: Agent;

  constructor(private readonly d: ForwardDeps) {
    this.agent = new Agent({ keepAlive: true, ca: d.ca, minVersion: 'TLSv1.2', maxSockets: 256 });
  }

  /** targetOf returns the API URL of the replica that should serve the request, or null to serve it here. */
  async targetOf(req: IncomingMessage): Promise<string | null> {
    if (req.headers[FORWARDED_HEADER] !== undefined) return null;
    const agentId = req.method === 'POST' || req.method === 'DELETE' ? AGENT_ADMIN.exec(req.url ?? '')?.[1] : undefined;
    if (agentId !== undefined) return this.replicaHolding(agentId);
    const url = req.url ?? '';
    const id = SANDBOX_PATH.exec(url)?.[1] ?? E2B_SANDBOX_PATH.exec(url)?.[1] ?? this.d.envdSandboxIdOf(req);
    if (!id) return null;
    const job = await this.d.store.getJob(id);
    return job?.agentId ? this.replicaHolding(job.agentId) : null;
  }

  /** replicaHolding is the API URL of the other live replica whose channel the agent is on; null: here, or nowhere. */
  async replicaHolding(agentId: string): Promise<string | null> {
    if (this.d.holds(agentId)) return null;
    const agent = await this.d.store.getAgent(agentId);
    if (!agent?.connected || !agent.replicaId || agent.replicaId === this.d.registry.replicaId) return null;
    return this.d.registry.apiUrlOf(agent.replicaId);
  }

  /** forward pipes the request to `target` and its answer back; a peer that cannot be reached is answered 503. */
  forward(target: string, req: IncomingMessage, res: ServerResponse): void {
    const headers: Record<string, string | string[]> = {};
    for (const [k, v] of Object.entries(req.headers)) if (v !== undefined && !HOP_HEADERS.has(k)) headers[k] = v;
    headers[FORWARDED_HEADER] = this.d.registry.replicaId;
    const url = new URL(req.url ?? '/', target);
    const up = request(url, { method: req.method, headers, agent: this.agent }, (ans) => {
      const out: Record<string, string | string[]> = {};
      for (const [k, v] of Object.entries(ans.headers)) if (v !== undefined && !HOP_HEADERS.has(k)) out[k] = v;
      res.writeHead(ans.statusCode ?? 502, out);
      res.flushHeaders();
      ans.pipe(res);
      ans.on('error', () => res.destroy());
    });
    up.on('error', (e) => {
      this.d.log('forwarding to a replica failed', { target: url.origin, error: e.message });
      if (!res.headersSent) {
        res.writeHead(503, { 'content-type': 'application/json', 'retry-after': '1' });
        res.end(JSON.stringify({ error: { code: 'unavailable', message: "the replica holding this sandbox's agent cannot be reached; retry shortly" } }));
      } else res.destroy();
    });
    // The client went away: so does the forwarded request (a live stream must not outlive its reader).
    res.on('close', () => {
      if (!res.writableFinished) up.destroy();
    });
    req.pipe(up);
  }

  /**
   * forwardUpgrade pipes a WebSocket upgrade (a process's socket) to the replica holding the sandbox's agent; false when
   * this replica serves it. The peer's answer (101 and the frames, or a refusal) goes back byte for byte.
   */
  async forwardUpgrade(req: IncomingMessage, socket: Duplex, head: Buffer): Promise<boolean> {
    const target = await this.targetOf(req);
    if (!target) return false;
    const headers: Record<string, string | string[]> = {};
    for (const [k, v] of Object.entries(req.headers)) if (v !== undefined) headers[k] = v;
    headers[FORWARDED_HEADER] = this.d.registry.replicaId;
    const up = request(new URL(req.url ?? '/', target), { method: 'GET', headers, ca: this.d.ca, minVersion: 'TLSv1.2', agent: false });
    const rawHead = (status: string, raw: string[]) => {
      let h = `HTTP/1.1 ${status}\r\n`;
      for (let i = 0; i + 1 < raw.length; i += 2) h += `${raw[i]}: ${raw[i + 1]}\r\n`;
      return `${h}\r\n`;
    };
    up.on('upgrade', (res, peer, peerHead) => {
      socket.write(rawHead(`101 ${res.statusMessage ?? 'Switching Protocols'}`, res.rawHeaders));
      if (peerHead.length) socket.write(peerHead);
      if (head.length) peer.write(head);
      peer.pipe(socket).pipe(peer);
      const end = () => {
        peer.destroy();
        socket.destroy();
      };
      peer.on('error', end).on('close', end);
      socket.on('error', end).on('close', end);
    });
    up.on('response', (res) => {
      // A refusal (401, 404, 409…): its body is piped decoded, so the connection ends it.
      const raw: string[] = [];
      for (let k = 0; k + 1 < res.rawHeaders.length; k += 2) {
        if (!/^(connection|transfer-encoding|keep-alive)$/i.test(res.rawHeaders[k]!)) raw.push(res.rawHeaders[k]!, res.rawHeaders[k + 1]!);
      }
      socket.write(rawHead(`${res.statusCode ?? 502} ${res.statusMessage ?? ''}`, [...raw, 'connection', 'close']));
      res.pipe(socket);
    });
    up.on('error', (e) => {
      this.d.log('forwarding a socket to a replica failed', { target, error: e.message });
      socket.end('HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nconnection: close\r\n\r\n' + JSON.stringify({ error: { code: 'unavailable', message: "the replica holding this sandbox's agent cannot be reached; retry shortly" } }));
    });
    socket.on('error', () => up.destroy());
    up.end();
    return true;
  }

  close(): void {
    this.agent.destroy();
  }
}
