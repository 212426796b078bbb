/** AgentHub accepts agents on the mutual-TLS channel, dispatches jobs to them and relays their reports. */
import { createServer, type Server } from 'node:https';
import type { TLSSocket } from 'node:tls';
import { randomUUID } from 'node:crypto';
import { WebSocketServer, type WebSocket } from 'ws';
import {
  AGENT_CERT_CN,
  CHANNEL_CLOSE,
  closeReason,
  helloProtocol,
  MAX_AGENT_MESSAGE_BYTES,
  MIN_PROTOCOL_VERSION,
  parseAgentMessage,
  PROTOCOL_VERSION,
  type AgentLoad,
  type AgentToControl,
  type ControlToAgent,
  type ImageManifest,
  type JobSpec,
  type PoolStatus,
  type VolumeCounts,
  type WorkloadCredentials,
} from '../../shared/wire.js';
import { startOnly, type Dispatcher, type JobService } from '../jobs/job-service.js';
import type { NetworkPolicyService } from '../network/network-policy-service.js';
import type { AgentPresence } from '../cluster/agent-presence.js';
import { isSandboxReport, type SandboxChannel, type SandboxReport, type SandboxRequestMessage } from '../sandboxes/sandbox-channel.js';
import { agentHash, jobSizeClass, offeredClass, takeWarmCell, type AgentCandidate, type PlacementClass, type PlacementWant } from './placement.js';
import { PlacementOrder } from './placement-order.js';
import { FleetCheck, OfferIndex, type WorkloadNeeds } from './fleet-offers.js';
import { AgentDirectory, offeredView, type AgentInfo } from './agent-directory.js';
import type { AgentFigures } from '../cluster/agent-presence.js';
import { ApiError } from '../../shared/errors.js';

/** SandboxReports takes the sandbox reports of agents (the process and file relays) and hears of lost agents. */
export interface SandboxReports {
  onReport(agentId: string, msg: SandboxReport): void;
  agentLost(agentId: string): void;
}

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
  /** The agent's load as last reported, less the warm cells assigned since (the next report corrects it). */
  load: AgentLoad;
  /** What placement reads of this agent, refreshed in place when it is read (see candidateOf()). */
  candidate: AgentCandidate;
  /** The images it has prepared (its hello's, then its image.prepared and image.removed): jobs on others go elsewhere. */
  images: Set<string>;
  /** Reports are applied strictly in arrival order: output before the end, seq numbers in order. */
  queue: Promise<void>;
  /** Reports received and not yet applied; past REPORTS_HIGH_WATER the socket is paused (TCP backpressure to the agent). */
  pending: number;
  /** Jobs placed here since the hello, until the hello's reconcile has read the unfinished jobs (null after): they are
   *  the agent's although its hello could not list them. */
  placedSinceHello: Set<string> | null;
}

/** ImageEvents hears what agents say about images (the image service implements it). */
export interface ImageEvents {
  /** onAgentImages: an agent said hello with the images it has prepared. */
  onAgentImages(agentId: string, digests: readonly string[]): void;
  /** onPrepared: an agent answered image.prepare (error null: the image is ready there). */
  onPrepared(agentId: string, digest: string, unpackedBytes: number, error: { code: string; message: string } | null): Promise<void>;
  /** onRemoved: an agent answered image.remove. */
  onRemoved(agentId: string, digest: string): Promise<void>;
}

/** REPORTS_HIGH_WATER / REPORTS_LOW_WATER bound the reports an agent may have waiting here. */
const REPORTS_HIGH_WATER = 256;
const REPORTS_LOW_WATER = 32;

/** AgentHub is the Dispatcher backed by connected agents. */
export class AgentHub implements Dispatcher, SandboxChannel {
  private readonly agents = new Map<string, Connection>();
  /**
   * The connections that may have room (running < capacity): every change that can make room adds its connection here;
   * canDispatch (may the queue pump at all?) scans only these and drops those found full or gone, so with a fleet mostly
   * busy it reads the few with room instead of every agent. Placement itself reads `order`.
   */
  private readonly roomy = new Set<Connection>();
  /**
   * The connected agents in placement's order (placement-order.ts): a dispatch reads them from the least loaded and stops
   * at the first with a warm cell that fits, instead of judging every agent of a fleet. Every change of a connection's
   * running count or capacity updates it (touch).
   */
  private readonly order = new PlacementOrder<Connection>((c) => this.candidateOf(c));
  private readonly server: Server;
  /** Pool requests awaiting an answer, by request id, with the agent asked. */
  private readonly pending = new Map<string, { agentId: string; answer: (p: AgentPool) => void }>();
  private readonly lostTimers = new Map<string, NodeJS.Timeout>();
  private images: ImageEvents | null = null;
  private sandboxes: SandboxReports | null = null;
  private presence: AgentPresence | null = null;
  /** What operators see and decide of every agent this control plane knows (drain, remove): see agent-directory.ts. */
  readonly directory = new AgentDirectory();
  /** The size classes jobs map to for placement (config agent.classes). */
  private readonly classes: readonly PlacementClass[];
  /** What the agents on this channel offer (runtimes, classes), by distinct offers. */
  private readonly offers = new OfferIndex();
  /** Refuses workloads no agent of the fleet can run (this channel's, then the store's records). */
  private readonly fleetCheck = new FleetCheck(this.offers, (id) => this.directory.isRemoved(id));

  constructor(
    tls: AgentHubTls,
    private readonly jobs: JobService,
    private readonly network: NetworkPolicyService,
    private readonly graceMs: number,
    private readonly log: (msg: string, extra?: object) => void,
    options: { classes?: readonly PlacementClass[] } = {},
  ) {
    this.classes = options.classes ?? [];
    // A separate listener that completes a handshake only with a client certificate from our CA.
    this.server = createServer({ ...tls, requestCert: true, rejectUnauthorized: true, minVersion: 'TLSv1.2' }, (_req, res) => {
      res.writeHead(404).end();
    });
    // A larger message is refused by ws itself (close code 1009) before it is buffered whole.
    const wss = new WebSocketServer({ server: this.server, path: '/v1/agent', maxPayload: MAX_AGENT_MESSAGE_BYTES });
    wss.on('connection', (ws, req) => {
      const cert = (req.socket as TLSSocket).getPeerCertificate();
      const peer = `${req.socket.remoteAddress ?? '?'}:${req.socket.remotePort ?? '?'}`;
      if (!(req.socket as TLSSocket).authorized || cert.subject?.CN !== AGENT_CERT_CN) {
        this.log('agent channel refused a certificate', { peer });
        ws.close(CHANNEL_CLOSE.notAnAgent, 'not an agent certificate');
        return;
      }
      this.onConnection(ws, peer);
    });
  }

  /** attachImages connects the image service, which is built after the hub's own dependencies. */
  attachImages(images: ImageEvents): void {
    this.images = images;
  }

  /** prepareImage sends image.prepare to every connected agent (or only to `agentId`); returns the agents asked. */
  prepareImage(image: ImageManifest, maxUnpackedBytes: number, agentId?: string): string[] {
    const conns = agentId === undefined ? [...this.agents.values()] : [this.agents.get(agentId)].filter((c): c is Connection => c !== undefined);
    for (const c of conns) send(c.ws, { type: 'image.prepare', image, maxUnpackedBytes });
    return conns.map((c) => c.agentId);
  }

  /** removeImage sends image.remove to every connected agent; returns the agents asked. */
  removeImage(digest: string): string[] {
    const conns = [...this.agents.values()];
    for (const c of conns) send(c.ws, { type: 'image.remove', digest });
    return conns.map((c) => c.agentId);
  }

  /** attachPresence records in the store which agents are on this replica's channel (the replica set reads it). */
  attachPresence(presence: AgentPresence): void {
    this.presence = presence;
    presence.onFlags((agentId, flags) => this.applyFlags(agentId, flags));
    this.fleetCheck.attachRemote(async () => (await presence.records()).map((r) => ({ id: r.id, removed: r.removed, offers: r.load?.offers })));
  }

  /** applyFlags takes an operator's decision made on another replica; a removed agent on this channel is closed. */
  private applyFlags(agentId: string, flags: { draining: boolean; removed: boolean }): void {
    if (!flags.draining && !flags.removed && !this.directory.flags(agentId).draining && !this.directory.isRemoved(agentId)) return;
    this.directory.apply(agentId, flags);
    const conn = this.agents.get(agentId);
    if (flags.removed && conn) {
      this.agents.delete(agentId);
      this.roomy.delete(conn);
      this.order.delete(conn);
      this.offers.delete(agentId);
      this.directory.disconnected(agentId, 0);
      conn.ws.close(CHANNEL_CLOSE.agentRemoved, closeReason(`removed by an operator; re-admit with: cleanroom agents undrain ${agentId}`));
      this.sandboxes?.agentLost(agentId);
    }
  }

  /** shareFlags stores an operator's decision and tells the other replicas. */
  private shareFlags(agentId: string): void {
    const f = this.directory.flags(agentId);
    void this.presence?.shareFlags(agentId, { draining: f.draining, removed: f.removed }).catch((e: Error) => this.log('sharing agent flags failed', { agentId, error: e.message }));
  }

  /**
   * listAll is every agent of the replica set: this replica's view, completed from the store with the agents on other
   * replicas' channels (their figures as their replica stored them at its last heartbeat, HEARTBEAT_MS = 2 s).
   */
  async listAll(): Promise<AgentInfo[]> {
    const local = this.listAgents();
    if (!this.presence) return local;
    const byId = new Map(local.map((a) => [a.id, a]));
    for (const r of await this.presence.records()) {
      const here = byId.get(r.id);
      if (here?.connected || (!r.live && here)) continue;
      byId.set(r.id, {
        id: r.id,
        state: r.removed ? 'removed' : r.draining ? 'draining' : r.live ? 'connected' : 'disconnected',
        connected: r.live,
        capacity: r.capacity,
        running: r.running,
        preparing: r.load?.preparing ?? 0,
        warmCells: (r.load?.warm ?? []).reduce((n, w) => n + w.cells, 0),
        warm: (r.load?.warm ?? []).filter((w) => w.cells > 0),
        offers: offeredView(r.load?.offers),
        connectedAt: r.connectedAt,
        lastSeenAt: r.lastSeenAt,
      });
    }
    return [...byId.values()].sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
  }

  /** attachSandboxes connects the sandbox relays (built after the hub). */
  attachSandboxes(s: SandboxReports): void {
    this.sandboxes = s;
  }

  /** send delivers a sandbox request to a connected agent; false if it is not connected. */
  send(agentId: string, msg: SandboxRequestMessage): boolean {
    const conn = this.agents.get(agentId);
    if (!conn) return false;
    send(conn.ws, msg);
    return true;
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

  /**
   * onConnection serves one agent connection: a hello of our protocol first (answered with a welcome), then reports.
   * Every message is checked against its schema; a bad one closes the connection with a code and a reason, and is
   * logged with the agent's id. Nothing an agent sends can throw here.
   */
  private onConnection(ws: WebSocket, peer: string): void {
    let conn: Connection | null = null;
    let refused = false;
    const refuse = (code: number, reason: string, problem: string) => {
      refused = true;
      this.log('agent channel closed: refused a message', { agentId: conn?.agentId ?? null, peer, code, problem });
      ws.close(code, closeReason(reason));
    };
    ws.on('message', (raw) => {
      // After a refusal, whatever was already on its way is ignored.
      if (refused) return;
      const r = parseAgentMessage(raw.toString());
      if (!conn) {
        if (!r.ok) {
          const p = helloProtocol(r.value);
          if (p === null || (p !== 'unreadable' && p >= MIN_PROTOCOL_VERSION && p <= PROTOCOL_VERSION)) return refuse(CHANNEL_CLOSE.badMessage, `bad message: ${r.problem}`, r.problem);
          const speaks = `${MIN_PROTOCOL_VERSION} to ${PROTOCOL_VERSION}`;
          const why =
            p === 'unreadable'
              ? `agent's hello has no readable protocol version; this control plane speaks ${speaks}`
              : `agent speaks protocol ${p}, this control plane speaks ${speaks}: upgrade the ${p < PROTOCOL_VERSION ? 'agent' : 'control plane'}`;
          return refuse(CHANNEL_CLOSE.protocolMismatch, why, why);
        }
        if (r.msg.type !== 'hello') return refuse(CHANNEL_CLOSE.protocolViolation, `the first message must be a hello, not ${r.msg.type}`, `${r.msg.type} before the hello`);
        if (this.directory.isRemoved(r.msg.agentId)) {
          const why = `agent ${r.msg.agentId} was removed by an operator; re-admit it with: cleanroom agents undrain ${r.msg.agentId}`;
          return refuse(CHANNEL_CLOSE.agentRemoved, why, 'a removed agent dialed');
        }
        conn = this.welcome(ws, r.msg);
        return;
      }
      this.directory.seen(conn.agentId);
      if (!r.ok) return refuse(CHANNEL_CLOSE.badMessage, `bad message: ${r.problem}`, r.problem);
      if (r.msg.type === 'hello') return refuse(CHANNEL_CLOSE.protocolViolation, 'a second hello on one connection', 'a second hello');
      const c = conn;
      const msg = r.msg;
      if (++c.pending > REPORTS_HIGH_WATER && !ws.isPaused) ws.pause();
      c.queue = c.queue
        .then(() => this.onReport(c, msg))
        .catch((e: Error) => this.log('agent report failed', { agentId: c.agentId, type: msg.type, error: e.message }))
        .finally(() => {
          if (--c.pending < REPORTS_LOW_WATER && ws.isPaused) ws.resume();
        });
    });
    ws.on('error', (e) => this.log('agent channel error', { agentId: conn?.agentId ?? null, peer, error: e.message }));
    ws.on('close', (code, reason) => {
      if (!conn || this.agents.get(conn.agentId) !== conn) return;
      const agentId = conn.agentId;
      this.agents.delete(agentId);
      this.roomy.delete(conn);
      this.order.delete(conn);
      this.offers.delete(agentId);
      this.directory.disconnected(agentId, conn.running.size);
      this.log('agent disconnected', { agentId, code, reason: reason.toString() });
      this.sandboxes?.agentLost(agentId);
      void this.presence?.disconnected(agentId).catch((e: Error) => this.log('agent presence update failed', { agentId, error: e.message }));
      // A removed agent's jobs were ended when it was removed.
      if (this.directory.isRemoved(agentId)) return;
      this.lostTimers.set(agentId, setTimeout(() => void this.lostIfAbsent(agentId, 'the agent disconnected and did not come back'), this.graceMs));
    });
  }

  /** welcome accepts a hello: the agent is told it may go on, replaces an earlier connection of its own, and is reconciled. */
  private welcome(ws: WebSocket, hello: Extract<AgentToControl, { type: 'hello' }>): Connection {
    const { agentId, liveJobIds, endedJobIds, capacity } = hello;
    // The agent's own version: what it sends and expects is that version's (see PROTOCOL_VERSION).
    send(ws, { type: 'welcome', protocol: hello.protocol });
    const images = new Set(hello.images);
    const candidate: AgentCandidate = { agentId, capacity, running: 0, draining: false, removed: false, load: hello.load, images, hash: agentHash(agentId) };
    const conn: Connection = { agentId, ws, running: new Set(liveJobIds), capacity, load: hello.load, candidate, images, queue: Promise.resolve(), pending: 0, placedSinceHello: new Set() };
    this.directory.connected(agentId, capacity, hello.load.offers);
    const replaced = this.agents.get(agentId);
    if (replaced) {
      replaced.ws.terminate();
      this.roomy.delete(replaced);
      this.order.delete(replaced);
    }
    this.agents.set(agentId, conn);
    this.roomy.add(conn);
    this.order.update(conn);
    this.offers.set(agentId, hello.load.offers);
    clearTimeout(this.lostTimers.get(agentId));
    this.lostTimers.delete(agentId);
    this.log('agent connected', { agentId, live: liveJobIds.length, protocol: hello.protocol, images: hello.images.length });
    this.images?.onAgentImages(agentId, hello.images);
    // An operator's decision taken on another replica (drain, remove) holds here too: it is in the agent's record.
    const recorded = this.presence
      ?.connected(agentId, capacity, liveJobIds.length, hello.load)
      .then((flags) => this.applyFlags(agentId, flags))
      .catch((e: Error) => this.log('agent presence update failed', { agentId, error: e.message }));
    // Jobs that ended on the agent while we could not hear it are not lost: their final reports follow the hello.
    // A job placed here after the hello is the agent's too, though the hello could not list it.
    const known = new Set([...liveJobIds, ...endedJobIds]);
    void Promise.resolve(recorded)
      .then(() => this.jobs.onAgentLost(agentId, (id) => known.has(id) || conn.placedSinceHello?.has(id) === true, 'the agent restarted and the job\'s cell was lost'))
      .finally(() => (conn.placedSinceHello = null))
      .then(() => this.jobs.resumeCredentials(agentId, liveJobIds))
      .then(() => this.jobs.dispatchQueued())
      .catch((e: Error) => this.log('agent hello handling failed', { agentId, error: e.message }));
    return conn;
  }

  /** onReport applies one checked report; reports about jobs that are not the agent's own are ignored by the services. */
  private async onReport(conn: Connection, msg: Exclude<AgentToControl, { type: 'hello' }>): Promise<void> {
    const { agentId } = conn;
    if (isSandboxReport(msg)) return this.sandboxes?.onReport(agentId, msg);
    switch (msg.type) {
      case 'job.report': {
        if (msg.ended && conn.running.delete(msg.jobId)) this.touch(conn);
        const applied = this.jobs.onReport(agentId, msg);
        // A start alone does not hold the agent's next report (the job's first output, most often) behind its write.
        if (startOnly(msg)) this.heard(applied, agentId, msg.type);
        else await applied;
        if (msg.load) await this.onLoad(conn, msg.load);
        return;
      }
      case 'job.started':
        return this.heard(this.jobs.onStarted(agentId, msg.jobId, msg.cellId, msg.timings), agentId, msg.type);
      case 'job.output':
        return this.jobs.onOutput(agentId, msg.jobId, msg.stream, Buffer.from(msg.data, 'base64'));
      case 'job.ended':
        if (conn.running.delete(msg.jobId)) this.touch(conn);
        return this.jobs.onEnded(agentId, msg.jobId, msg.end, msg.timings, msg.outputDroppedBytes ?? 0);
      case 'job.wiped':
        if (msg.jobId) await this.jobs.onWiped(agentId, msg.jobId, msg.receipt, msg.timings ?? {});
        // A receipt from reconcile waits on the agent's disk until it is stored here.
        if (msg.spooled) send(conn.ws, { type: 'receipts.stored', volumeIds: [msg.receipt.volumeId] });
        return;
      case 'network.denied':
        await this.network.recordDenied(agentId, msg.records);
        return;
      case 'pool.status': {
        const asked = msg.requestId === null ? undefined : this.pending.get(msg.requestId);
        if (asked?.agentId === agentId) asked.answer({ pool: msg.pool, volumes: msg.volumes });
        return;
      }
      case 'image.prepared': {
        // Known here before the image's record says ready: no job on it can be placed before this agent counts.
        const fresh = msg.error === null && !conn.images.has(msg.digest);
        if (msg.error === null) conn.images.add(msg.digest);
        await this.images?.onPrepared(agentId, msg.digest, msg.unpackedBytes, msg.error);
        // Jobs on the image may have queued for an agent that has it.
        if (fresh && conn.running.size < conn.capacity) await this.jobs.dispatchQueued();
        return;
      }
      case 'image.removed':
        conn.images.delete(msg.digest);
        return this.images?.onRemoved(agentId, msg.digest);
      case 'agent.load':
        return this.onLoad(conn, msg.load);
      default:
        assertNever(msg);
    }
  }

  /** heard logs the failure of a report applied while the agent's channel went on to its next one. */
  private heard(applied: Promise<void>, agentId: string, type: string): void {
    applied.catch((e: Error) => this.log('agent report failed', { agentId, type, error: e.message }));
  }

  /** onLoad takes an agent's load (an agent.load, or a job.report's). */
  private async onLoad(conn: Connection, load: AgentLoad): Promise<void> {
    const hadRoom = conn.running.size < conn.capacity;
    conn.load = load;
    conn.capacity = load.capacity;
    this.touch(conn);
    this.offers.set(conn.agentId, load.offers);
    // A report can reveal room (a larger capacity) or warm cells that queued jobs were waiting for.
    if (!hadRoom && conn.running.size < conn.capacity) await this.jobs.dispatchQueued();
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
    // On another replica's channel now (it failed over): its jobs go on there.
    if (await this.presence?.elsewhere(agentId)) return;
    await this.jobs.onAgentLost(agentId, () => false, why).catch((e: Error) => this.log('ending a lost agent\'s jobs failed', { agentId, error: e.message }));
  }

  canDispatch(): boolean {
    for (const c of this.roomy) {
      if (c.running.size >= c.capacity || this.agents.get(c.agentId) !== c) {
        this.roomy.delete(c);
        continue;
      }
      if (this.directory.placeable(c.agentId)) return true;
    }
    return false;
  }

  /** reserve picks an agent by choosePlacement's rules (in placement order: see `order`) and holds a slot on it. */
  reserve(spec: JobSpec): string | null {
    const want: PlacementWant = {
      image: spec.image?.digest ?? null,
      runtime: spec.runtime,
      sizeClass: jobSizeClass(this.classes, spec.cpu, spec.memoryBytes, spec.diskBytes),
      size: { cpu: spec.cpu, memoryBytes: spec.memoryBytes, diskBytes: spec.diskBytes },
    };
    const conn = this.order.choose(want, (c) => this.agents.get(c.agentId) === c);
    if (!conn) return null;
    conn.running.add(spec.jobId);
    this.order.update(conn);
    conn.placedSinceHello?.add(spec.jobId);
    const sizeClass = offeredClass(conn.load.offers, want);
    conn.load = takeWarmCell(conn.load, want, sizeClass === false ? want.sizeClass : sizeClass);
    return conn.agentId;
  }

  /**
   * checkOffered throws runtime_not_offered or size_not_offered when no agent known to the replica set (connected or
   * not, not removed) offers the workload's runtime with a size class that fits it (fleet-offers.ts). An agent that is
   * only full or away lets it through: the workload queues for it.
   */
  checkOffered(needs: WorkloadNeeds): Promise<void> {
    return this.fleetCheck.check(needs);
  }

  assign(agentId: string, spec: JobSpec, credentials: WorkloadCredentials): boolean {
    const conn = this.agents.get(agentId);
    if (!conn) return false;
    conn.running.add(spec.jobId);
    this.order.update(conn);
    conn.placedSinceHello?.add(spec.jobId);
    send(conn.ws, { type: 'assign', job: spec, credentials });
    return true;
  }

  release(agentId: string, jobId: string): void {
    const conn = this.agents.get(agentId);
    if (conn?.running.delete(jobId)) this.touch(conn);
  }

  /** touch notes that a connection's running count or capacity changed: it may have room, and its place in the order moved. */
  private touch(conn: Connection): void {
    this.roomy.add(conn);
    if (this.agents.get(conn.agentId) === conn) this.order.update(conn);
  }

  holds(agentId: string): boolean {
    return this.agents.has(agentId);
  }

  /**
   * candidateOf is what placement reads of an agent, as it stands now: each connection keeps one candidate object,
   * refreshed in place when read, so a dispatch allocates nothing per agent.
   */
  private candidateOf(c: Connection): AgentCandidate {
    const d = this.directory.flags(c.agentId);
    const k = c.candidate;
    k.capacity = c.capacity;
    k.running = c.running.size;
    k.draining = d.draining;
    k.removed = d.removed;
    k.load = c.load;
    return k;
  }

  // ---- Operators: list, drain, undrain, remove (platform admin routes) ----

  /** listAgents is every agent this control plane knows, with its state, load and times. */
  listAgents(): AgentInfo[] {
    return this.directory.list((id) => {
      const c = this.agents.get(id);
      return c ? { running: c.running.size, capacity: c.capacity, load: c.load } : null;
    });
  }

  /** drain stops new placements on an agent; its running work finishes. Throws AgentAdminError (agent_not_found). */
  drain(agentId: string): AgentInfo {
    this.directory.setDraining(agentId, true);
    this.shareFlags(agentId);
    this.log('agent draining', { agentId });
    return this.infoOf(agentId);
  }

  /** undrain lets an agent take placements again; a removed agent is re-admitted (it may dial again). */
  undrain(agentId: string): AgentInfo {
    this.directory.readmit(agentId);
    this.shareFlags(agentId);
    this.log('agent undrained', { agentId });
    void this.jobs.dispatchQueued().catch((e: Error) => this.log('dispatch after undrain failed', { agentId, error: e.message }));
    return this.infoOf(agentId);
  }

  /**
   * remove forgets an agent: allowed when it is disconnected, or draining with nothing running (else agent_busy). Its
   * unfinished jobs end as `error` now; while removed, its channel is refused (CHANNEL_CLOSE.agentRemoved), so the wipe
   * receipts it spools when it reconciles are delivered once it is re-admitted (undrain).
   */
  async remove(agentId: string): Promise<AgentInfo> {
    const conn = this.agents.get(agentId);
    this.directory.checkRemovable(agentId, conn ? conn.running.size : null);
    this.directory.setRemoved(agentId);
    this.shareFlags(agentId);
    clearTimeout(this.lostTimers.get(agentId));
    this.lostTimers.delete(agentId);
    if (conn) {
      this.agents.delete(agentId);
      this.roomy.delete(conn);
      this.order.delete(conn);
      this.offers.delete(agentId);
      this.directory.disconnected(agentId, 0);
      conn.ws.close(CHANNEL_CLOSE.agentRemoved, closeReason(`removed by an operator; re-admit with: cleanroom agents undrain ${agentId}`));
      this.sandboxes?.agentLost(agentId);
      void this.presence?.disconnected(agentId).catch(() => {});
    }
    this.log('agent removed', { agentId, wasConnected: conn !== undefined });
    await this.jobs.onAgentLost(agentId, () => false, 'the agent was removed by an operator');
    return this.infoOf(agentId);
  }

  private infoOf(agentId: string): AgentInfo {
    const info = this.listAgents().find((a) => a.id === agentId);
    if (!info) throw new ApiError('not_found', `no agent ${agentId}`);
    return info;
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
            this.pending.set(requestId, {
              agentId: conn.agentId,
              answer: (p) => {
                clearTimeout(timer);
                this.pending.delete(requestId);
                out[conn.agentId] = p;
                resolve();
              },
            });
            send(conn.ws, { type: 'pool.get', requestId });
          }),
      ),
    );
    return out;
  }

  /** figuresOf is what the replica set stores of an agent on this channel at each heartbeat (null: not connected here). */
  figuresOf(agentId: string): AgentFigures | null {
    const c = this.agents.get(agentId);
    return c ? { running: c.running.size, capacity: c.capacity, load: c.load } : null;
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

function assertNever(x: never): never {
  throw new Error(`unhandled agent message ${JSON.stringify(x).slice(0, 200)}`);
}
