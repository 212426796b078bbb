/**
 * SandboxForwarder sends a sandbox's process, file and envd requests to the replica whose channel holds the sandbox's
 * agent: the process and file relays keep per-sandbox state (streams, pending requests) tied to that connection, so
 * that replica serves them. The request is piped as it came (same method, path, headers — the Authorization too, so the
 * owner authenticates and meters it itself) over TLS verified against the platform CA, and the answer is piped back:
 * both directions keep TCP backpressure, nothing is buffered whole. A forwarded request is never forwarded again.
 */
import { Agent, request } from 'node:https';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Store } from '../store/store.js';
import type { ReplicaRegistry } from './replica-registry.js';

/** FORWARDED_HEADER marks a request forwarded by a replica (its id): the receiver serves it itself. */
export const FORWARDED_HEADER = 'x-cleanroom-forwarded-by';
/** HOP_HEADERS are not passed on (they describe one connection, not the request). */
const HOP_HEADERS = new Set(['connection', 'keep-alive', 'proxy-connection', 'transfer-encoding', 'upgrade', 'te', 'trailer']);
/** SANDBOX_PATH matches the sandbox sub-resources served by the agent's replica (not create/get/list/delete). */
const SANDBOX_PATH = /^\/v1\/sandboxes\/(sbx_[A-Za-z0-9]{1,64})\/(processes|files|timeout)(?:[/?]|$)/;

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
    const id = SANDBOX_PATH.exec(req.url ?? '')?.[1] ?? this.d.envdSandboxIdOf(req);
    if (!id) return null;
    const job = await this.d.store.getJob(id);
    if (!job?.agentId || this.d.holds(job.agentId)) return null;
    const agent = await this.d.store.getAgent(job.agentId);
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

  close(): void {
    this.agent.destroy();
  }
}
