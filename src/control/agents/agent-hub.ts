/** AgentHub accepts agents on the mutual-TLS channel, dispatches jobs to them and relays their reports. */
import { createServer, type Server } from 'node:https';
import type { TLSSocket } from 'node:tls';
import { randomUUID } from 'node:crypto';
import { WebSocketServer, type WebSocket } from 'ws';
import { AGENT_CERT_CN, type AgentToControl, type ControlToAgent, type JobSpec, type PoolStatus, type VolumeCounts, type WorkloadCredentials } from '../../shared/wire.js';
import type { Dispatcher, JobService } from '../jobs/job-service.js';
import type { NetworkPolicyService } from '../network/network-policy-service.js';

/** AgentHubTls is the listener's certificate and the CA whose agents it accepts. */
export interface AgentHubTls {
  ca: string;
  cert: string;
  key: string;
}

/** AgentPool is one agent's warm pool and volume counts. */
export interface AgentPool {
  pool: PoolStatus;
  volumes: VolumeCounts;
}

interface Connection {
  agentId: string;
  ws: WebSocket;
  running: Set<string>;
  /** Jobs the agent runs at once (its hello says); the control plane queues the rest. */
  capacity: number;
  /** Reports are applied strictly in arrival order: output before the end, seq numbers in order. */
  queue: Promise<void>;
  /** Reports received and not yet applied; past REPORTS_HIGH_WATER the socket is paused (TCP backpressure to the agent). */
  pending: number;
}

/** DEFAULT_AGENT_CAPACITY is assumed for an agent whose hello does not say. */
const DEFAULT_AGENT_CAPACITY = 64;

/** REPORTS_HIGH_WATER / REPORTS_LOW_WATER bound the reports an agent may have waiting here. */
const REPORTS_HIGH_WATER = 256;
const REPORTS_LOW_WATER = 32;

/** AgentHub is the Dispatcher backed by connected agents. */
export class AgentHub implements Dispatcher {
  private readonly agents = new Map<string, Connection>();
  private readonly server: Server;
  private readonly pending = new Map<string, (p: AgentPool) => void>();
  private readonly lostTimers = new Map<string, NodeJS.Timeout>();

  constructor(
    tls: AgentHubTls,
    private readonly jobs: JobService,
    private readonly network: NetworkPolicyService,
    private readonly graceMs: number,
    private readonly log: (msg: string, extra?: object) => void,
  ) {
    // A separate listener that completes a handshake only with a client certificate from our CA.
    this.server = createServer({ ...tls, requestCert: true, rejectUnauthorized: true, minVersion: 'TLSv1.2' }, (_req, res) => {
      res.writeHead(404).end();
    });
    const wss = new WebSocketServer({ server: this.server, path: '/v1/agent', maxPayload: 8 * 1024 * 1024 });
    wss.on('connection', (ws, req) => {
      const cert = (req.socket as TLSSocket).getPeerCertificate();
      if (!(req.socket as TLSSocket).authorized || cert.subject?.CN !== AGENT_CERT_CN) {
        ws.close(4003, 'not an agent certificate');
        return;
      }
      this.onConnection(ws);
    });
  }

  /** listen binds the channel; resolves with the bound port. */
  listen(host: string, port: number): Promise<number> {
    return new Promise((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(port, host, () => {
        const addr = this.server.address();
        resolve(typeof addr === 'object' && addr ? addr.port : port);
      });
    });
  }

  private onConnection(ws: WebSocket): void {
    let conn: Connection | null = null;
    ws.on('message', (raw) => {
      let msg: AgentToControl;
      try {
        msg = JSON.parse(raw.toString()) as AgentToControl;
      } catch {
        ws.close(4000, 'bad message');
        return;
      }
      if (msg.type === 'hello') {
        conn = { agentId: msg.agentId, ws, running: new Set(msg.liveJobIds), capacity: msg.capacity ?? DEFAULT_AGENT_CAPACITY, queue: Promise.resolve(), pending: 0 };
        this.agents.get(msg.agentId)?.ws.terminate();
        this.agents.set(msg.agentId, conn);
        clearTimeout(this.lostTimers.get(msg.agentId));
        this.lostTimers.delete(msg.agentId);
        this.log('agent connected', { agentId: msg.agentId, live: msg.liveJobIds.length });
        // Jobs that ended on the agent while we could not hear it are not lost: their final reports follow the hello.
        const accounted = [...msg.liveJobIds, ...(msg.endedJobIds ?? [])];
        void this.jobs
          .onAgentLost(msg.agentId, accounted, 'the agent restarted and the job\'s cell was lost')
          .then(() => this.jobs.resumeCredentials(msg.agentId, msg.liveJobIds))
          .then(() => this.jobs.dispatchQueued())
          .catch((e: Error) => this.log('agent hello handling failed', { agentId: msg.agentId, error: e.message }));
        return;
      }
      const c = conn;
      if (!c) return;
      if (++c.pending > REPORTS_HIGH_WATER && !ws.isPaused) ws.pause();
      c.queue = c.queue
        .then(() => this.onReport(c, msg))
        .catch((e: Error) => this.log('agent report failed', { error: e.message }))
        .finally(() => {
          if (--c.pending < REPORTS_LOW_WATER && ws.isPaused) ws.resume();
        });
    });
    ws.on('close', () => {
      if (!conn || this.agents.get(conn.agentId) !== conn) return;
      const agentId = conn.agentId;
      this.agents.delete(agentId);
      this.log('agent disconnected', { agentId });
      this.lostTimers.set(agentId, setTimeout(() => void this.lostIfAbsent(agentId, 'the agent disconnected and did not come back'), this.graceMs));
    });
  }

  private async onReport(conn: Connection, msg: AgentToControl): Promise<void> {
    switch (msg.type) {
      case 'job.started':
        return this.jobs.onStarted(msg.jobId, msg.cellId, msg.timings);
      case 'job.output':
        return this.jobs.onOutput(msg.jobId, msg.stream, Buffer.from(msg.data, 'base64'));
      case 'job.ended':
        conn.running.delete(msg.jobId);
        return this.jobs.end(msg.jobId, msg.end, msg.timings, msg.outputDroppedBytes ?? 0);
      case 'job.wiped':
        if (msg.jobId) await this.jobs.onWiped(msg.jobId, msg.receipt, msg.timings ?? {});
        // A receipt from reconcile waits on the agent's disk until it is stored here.
        if (msg.spooled) send(conn.ws, { type: 'receipts.stored', volumeIds: [msg.receipt.volumeId] });
        return;
      case 'network.denied':
        await this.network.recordDenied(Array.isArray(msg.records) ? msg.records : []);
        return;
      case 'pool.status':
        if (msg.requestId) this.pending.get(msg.requestId)?.({ pool: msg.pool, volumes: msg.volumes });
        return;
      case 'hello':
        return;
      default: {
        const never: never = msg;
        this.log('unknown agent message', { msg: never });
      }
    }
  }

  /**
   * expectAgents starts the grace period for agents that had unfinished jobs when this control plane started: an agent
   * that does not connect within it is lost, and its jobs end as errors (a crash must not leave a job running forever).
   */
  expectAgents(agentIds: Iterable<string>): void {
    for (const agentId of agentIds) {
      if (this.agents.has(agentId) || this.lostTimers.has(agentId)) continue;
      this.lostTimers.set(agentId, setTimeout(() => void this.lostIfAbsent(agentId, 'the agent did not come back after a control-plane restart'), this.graceMs));
    }
  }

  private async lostIfAbsent(agentId: string, why: string): Promise<void> {
    this.lostTimers.delete(agentId);
    if (this.agents.has(agentId)) return;
    await this.jobs.onAgentLost(agentId, [], why).catch((e: Error) => this.log('ending a lost agent\'s jobs failed', { agentId, error: e.message }));
  }

  canDispatch(): boolean {
    for (const c of this.agents.values()) if (c.running.size < c.capacity) return true;
    return false;
  }

  dispatch(spec: JobSpec, credentials: WorkloadCredentials): string | null {
    const conns = [...this.agents.values()].filter((c) => c.running.size < c.capacity).sort((a, b) => a.running.size / a.capacity - b.running.size / b.capacity);
    const conn = conns[0];
    if (!conn) return null;
    conn.running.add(spec.jobId);
    send(conn.ws, { type: 'assign', job: spec, credentials });
    return conn.agentId;
  }

  refreshCredentials(agentId: string, jobId: string, credentials: WorkloadCredentials): void {
    const conn = this.agents.get(agentId);
    if (conn) send(conn.ws, { type: 'token.refresh', jobId, credentials });
  }

  cancel(agentId: string, jobId: string): void {
    const conn = this.agents.get(agentId);
    if (conn) send(conn.ws, { type: 'cancel', jobId });
  }

  /** pool asks every agent for its pool status. */
  async pool(timeoutMs = 2000): Promise<Record<string, AgentPool>> {
    const out: Record<string, AgentPool> = {};
    await Promise.all(
      [...this.agents.values()].map(
        (conn) =>
          new Promise<void>((resolve) => {
            const requestId = randomUUID();
            const timer = setTimeout(() => {
              this.pending.delete(requestId);
              resolve();
            }, timeoutMs);
            this.pending.set(requestId, (p) => {
              clearTimeout(timer);
              this.pending.delete(requestId);
              out[conn.agentId] = p;
              resolve();
            });
            send(conn.ws, { type: 'pool.get', requestId });
          }),
      ),
    );
    return out;
  }

  /** connectedAgents lists agent ids currently connected. */
  connectedAgents(): string[] {
    return [...this.agents.keys()];
  }

  /** close stops accepting agents. */
  close(): Promise<void> {
    for (const t of this.lostTimers.values()) clearTimeout(t);
    for (const c of this.agents.values()) c.ws.terminate();
    return new Promise((resolve) => this.server.close(() => resolve()));
  }
}

function send(ws: WebSocket, msg: ControlToAgent): void {
  ws.send(JSON.stringify(msg));
}
