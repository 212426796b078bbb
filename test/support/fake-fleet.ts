/**
 * FakeFleet is a simulated fleet: many lightweight fake agents in this one process, each a real WebSocket over mutual TLS
 * to a control plane's agent channel, speaking the real protocol (src/shared/wire.ts). On `assign` a fake reports
 * job.started, one small job.output, job.ended (succeeded) and job.wiped with a plausible receipt, all in one job.report
 * with its load after the job, as a real agent's channel sends what is ready in one turn (protocol 5; `protocol: 4`
 * sends them one by one, as the previous build did); it answers pool.get, image.prepare/remove, takes token.refresh,
 * honours cancel, and says its load in the hello and in agent.load reports (coalesced per 200 ms tick, and every 5 s)
 * when no report carried it. It runs no cells: what it measures is the control plane's scheduling (placement, report
 * handling, store, audit, tokens) with many agents connected.
 *
 * Memory per fake is a socket and a small record: one TLS context is shared by every connection, and a fake has a timer
 * only for a job it holds (holdMs > 0). Used by test/integration/fleet.test.ts and bench/fleet.ts.
 */
import { randomBytes } from 'node:crypto';
import { createSecureContext, type SecureContext } from 'node:tls';
import WebSocket from 'ws';
import {
  AgentToControlSchema,
  HelloSchema,
  LOAD_REPORT_INTERVAL_MS,
  LOAD_REPORT_MIN_INTERVAL_MS,
  MAX_CONTROL_MESSAGE_BYTES,
  parseControlMessage,
  PROTOCOL_VERSION,
  type AgentLoad,
  type AgentToControl,
  type ControlToAgent,
  type JobReport,
  type WipeReceipt,
} from '../../src/shared/wire.js';

/** FakeFleetOptions says where the fleet connects and how its agents behave. */
export interface FakeFleetOptions {
  /** The control plane's agent channel, e.g. wss://127.0.0.1:<agentPort>/v1/agent. */
  url: string;
  /** The agent certificate and the CA (the cluster's pki/agent.pem, agent-key.pem, ca.pem). */
  tls: { ca: string; cert: string; key: string };
  agents: number;
  /** Jobs each fake runs at once (its hello's capacity). */
  capacity: number;
  /** How long a fake holds a job between job.started and job.ended (0: it reports the whole job at once). */
  holdMs?: number;
  /** Agent ids are 6 hex digits from this number on (distinct fleets, or a real agent, must not share ids). */
  firstId?: number;
  /** Connections dialed at once while the fleet starts. */
  dialConcurrency?: number;
  /** Check every received and sent message against its wire schema (a test's thoroughness; costs CPU in a bench). */
  validate?: boolean;
  /**
   * The protocol the fakes speak: PROTOCOL_VERSION (default) reports what is ready at once as one job.report with the
   * load after it, as a real agent's channel does; 4 (MIN_PROTOCOL_VERSION) sends job.started, job.output, job.ended,
   * job.wiped and agent.load one by one, as an agent of the previous build does.
   */
  protocol?: number;
}

/** Assignment is what the fleet saw of one job's assign. */
export interface Assignment {
  agentId: string;
  /** performance.now() in this process when the assign arrived. */
  atMs: number;
}

interface Fake {
  id: string;
  ws: WebSocket;
  running: number;
  /** Jobs held (holdMs > 0) with their end timers, so a cancel or disconnect can stop them. */
  held: Map<string, NodeJS.Timeout>;
  gone: boolean;
  /** Its load changed since its last agent.load (protocol 4), and when that was sent. */
  loadDirty: boolean;
  loadSentMs: number;
}

/** FakeFleet holds the connected fakes and what they saw. */
export class FakeFleet {
  /** The first assign of each job. */
  readonly assigned = new Map<string, Assignment>();
  /** Jobs assigned more than once (to any agent): must stay empty. */
  readonly duplicates: string[] = [];
  /** Assigns an agent received while already running `capacity` jobs: must stay empty. */
  readonly overCapacity: Array<{ agentId: string; jobId: string; running: number }> = [];
  /** Messages that failed their schema (received or about to be sent), with validate on: must stay empty. */
  readonly schemaProblems: string[] = [];
  /** Per agent: the most jobs it held at once. */
  readonly peak = new Map<string, number>();
  /** Counters of what the fleet received besides assigns. */
  readonly received = { tokenRefresh: 0, cancel: 0, poolGet: 0, other: 0 };
  /** Called on every first assign (a bench records latencies here). */
  onAssign: ((jobId: string, a: Assignment) => void) | null = null;

  private readonly fakes = new Map<string, Fake>();
  private readonly context: SecureContext;
  /** How long a fake holds each job it is assigned from now on (0: it reports the whole job at once). */
  holdMs: number;
  /** How long a fake waits after an assign before it reports anything of the job (0: at once). */
  startDelayMs = 0;
  /** The hello gains `load` with protocol 4 (Contract W): sent only if this build's schema has it, and agent.load then. */
  private readonly helloHasLoad = 'load' in HelloSchema.shape;
  /** One timer for the whole fleet sends the agent.load reports (not one per fake). */
  private loadTicker: NodeJS.Timeout | undefined;
  readonly sentLoads = { count: 0 };
  /** Messages the fakes sent after their hellos (reports, load reports, answers). */
  readonly sent = { messages: 0 };

  private readonly protocol: number;
  /** Received messages with their protocol's welcome (the control plane answers with our version). */
  readonly welcomedWith = new Set<number>();

  private constructor(private readonly opts: FakeFleetOptions) {
    this.context = createSecureContext({ ca: opts.tls.ca, cert: opts.tls.cert, key: opts.tls.key, minVersion: 'TLSv1.2' });
    this.holdMs = opts.holdMs ?? 0;
    this.protocol = opts.protocol ?? PROTOCOL_VERSION;
  }

  /** start connects every fake and resolves once each has been welcomed. */
  static async start(opts: FakeFleetOptions): Promise<FakeFleet> {
    const fleet = new FakeFleet(opts);
    const first = opts.firstId ?? 0xa00000;
    const ids = Array.from({ length: opts.agents }, (_, i) => (first + i).toString(16).padStart(6, '0'));
    let next = 0;
    const lanes = Array.from({ length: Math.min(opts.dialConcurrency ?? 32, ids.length) }, async () => {
      while (next < ids.length) await fleet.connect(ids[next++]!);
    });
    try {
      await Promise.all(lanes);
    } catch (e) {
      fleet.close();
      throw e;
    }
    if (fleet.helloHasLoad) fleet.loadTicker = setInterval(() => fleet.reportLoads(), LOAD_REPORT_MIN_INTERVAL_MS);
    return fleet;
  }

  /** ids lists the fakes' agent ids (connected or not). */
  ids(): string[] {
    return [...this.fakes.keys()];
  }

  /** connected lists the fakes whose connection is up. */
  connected(): string[] {
    return [...this.fakes.values()].filter((f) => !f.gone).map((f) => f.id);
  }

  /** holding lists the connected fakes that hold at least one job right now. */
  holding(): string[] {
    return [...this.fakes.values()].filter((f) => !f.gone && f.running > 0).map((f) => f.id);
  }

  /** disconnect drops the fakes' connections at once (as a crashed host would) and forgets their jobs; they never return. */
  disconnect(agentIds: readonly string[]): string[] {
    const jobs: string[] = [];
    for (const id of agentIds) {
      const f = this.fakes.get(id);
      if (!f || f.gone) continue;
      f.gone = true;
      for (const [jobId, t] of f.held) {
        clearTimeout(t);
        jobs.push(jobId);
      }
      f.held.clear();
      f.running = 0;
      f.ws.terminate();
    }
    return jobs;
  }

  /** release ends every held job now (succeeded), as if each had just exited. */
  release(): void {
    for (const f of this.fakes.values()) {
      if (f.gone) continue;
      for (const [jobId, t] of f.held) {
        clearTimeout(t);
        f.held.delete(jobId);
        this.finish(f, jobId, 'succeeded');
      }
    }
  }

  /** close ends every connection. */
  close(): void {
    clearInterval(this.loadTicker);
    for (const f of this.fakes.values()) {
      f.gone = true;
      for (const t of f.held.values()) clearTimeout(t);
      f.held.clear();
      f.ws.terminate();
    }
  }

  private connect(id: string): Promise<void> {
    return new Promise((resolve, reject) => {
      // One secure context for all: the certificate and key are parsed once, not per connection.
      const ws = new WebSocket(this.opts.url, { secureContext: this.context, perMessageDeflate: false, maxPayload: MAX_CONTROL_MESSAGE_BYTES } as WebSocket.ClientOptions);
      const fake: Fake = { id, ws, running: 0, held: new Map(), gone: false, loadDirty: false, loadSentMs: performance.now() };
      let welcomed = false;
      ws.on('open', () => {
        const hello: Record<string, unknown> = { type: 'hello', protocol: this.protocol, agentId: id, liveJobIds: [], endedJobIds: [], capacity: this.opts.capacity, images: [] };
        if (this.helloHasLoad) hello.load = this.loadOf(fake);
        this.send(fake, hello as AgentToControl);
      });
      ws.on('message', (data) => {
        const raw = data.toString();
        let msg: ControlToAgent;
        if (this.opts.validate) {
          const r = parseControlMessage(raw);
          if (!r.ok) {
            this.schemaProblems.push(`received: ${r.problem}`);
            return;
          }
          msg = r.msg;
        } else msg = JSON.parse(raw) as ControlToAgent;
        if (msg.type === 'welcome') {
          this.welcomedWith.add(msg.protocol);
          welcomed = true;
          this.fakes.set(id, fake);
          resolve();
          return;
        }
        this.onMessage(fake, msg);
      });
      ws.on('error', (e) => {
        if (!welcomed) reject(new Error(`fake agent ${id} could not connect: ${e.message}`));
      });
      ws.on('close', (code, reason) => {
        fake.gone = true;
        if (!welcomed) reject(new Error(`fake agent ${id} was closed before its welcome: ${code} ${reason.toString()}`));
      });
    });
  }

  /**
   * loadOf is a fake's load (Contract W): its warm cells refill at once, so every free slot is a warm runc cell of the
   * default class on the host root.
   */
  private loadOf(f: Fake): AgentLoad {
    const free = this.opts.capacity - f.running;
    return { running: f.running, capacity: this.opts.capacity, preparing: 0, warm: [{ image: null, runtime: 'runc', sizeClass: 'small', cells: free }] };
  }

  /** reportLoads sends agent.load for each fake whose load changed (at most every tick) or that has been quiet for 5 s. */
  private reportLoads(): void {
    const now = performance.now();
    for (const f of this.fakes.values()) {
      if (f.gone || (!f.loadDirty && now - f.loadSentMs < LOAD_REPORT_INTERVAL_MS)) continue;
      f.loadDirty = false;
      f.loadSentMs = now;
      this.sentLoads.count++;
      this.send(f, { type: 'agent.load', load: this.loadOf(f) } as AgentToControl);
    }
  }

  private onMessage(f: Fake, msg: ControlToAgent): void {
    switch (msg.type) {
      case 'assign':
        return this.onAssignMsg(f, msg.job.jobId);
      case 'token.refresh':
        this.received.tokenRefresh++;
        return;
      case 'cancel': {
        this.received.cancel++;
        const t = f.held.get(msg.jobId);
        if (t === undefined) return; // ended already: the end is on its way
        clearTimeout(t);
        f.held.delete(msg.jobId);
        this.finish(f, msg.jobId, 'cancelled');
        return;
      }
      case 'pool.get':
        this.received.poolGet++;
        this.send(f, {
          type: 'pool.status',
          requestId: msg.requestId,
          pool: { 'runc/small': { target: this.opts.capacity, warm: this.opts.capacity - f.running, preparing: 0, busy: f.running, lastError: null } },
          volumes: { warm: this.opts.capacity - f.running, inUse: f.running, wiping: 0, wiped: 0, wipeFailed: 0 },
        });
        return;
      case 'image.prepare':
        this.send(f, { type: 'image.prepared', digest: msg.image.digest, unpackedBytes: 0, error: null });
        return;
      case 'image.remove':
        this.send(f, { type: 'image.removed', digest: msg.digest });
        return;
      default:
        this.received.other++;
    }
  }

  private onAssignMsg(f: Fake, jobId: string): void {
    const atMs = performance.now();
    if (this.assigned.has(jobId)) this.duplicates.push(jobId);
    else {
      const a = { agentId: f.id, atMs };
      this.assigned.set(jobId, a);
      this.onAssign?.(jobId, a);
    }
    if (f.running >= this.opts.capacity) this.overCapacity.push({ agentId: f.id, jobId, running: f.running });
    f.running++;
    f.loadDirty = true;
    if (f.running > (this.peak.get(f.id) ?? 0)) this.peak.set(f.id, f.running);
    if (this.startDelayMs > 0) setTimeout(() => this.run(f, jobId), this.startDelayMs).unref(); // a closed fleet reports nothing (run)
    else this.run(f, jobId);
  }

  /** run reports an assigned job: its start and output, and its end (now, or after holdMs). */
  private run(f: Fake, jobId: string): void {
    if (f.gone) return;
    const cellId = randomBytes(6).toString('hex');
    const started = { cellId, timings: { take_ms: 0.1, cold: 0 } };
    const output = { stream: 'stdout' as const, data: 'aGkK' /* "hi\n" */ };
    if (this.protocol < 5) {
      this.send(f, { type: 'job.started', jobId, ...started });
      this.send(f, { type: 'job.output', jobId, ...output });
    } else if (this.holdMs > 0) this.send(f, { type: 'job.report', jobId, started, output: [output] });
    if (this.holdMs <= 0) return this.finish(f, jobId, 'succeeded', cellId, this.protocol < 5 ? undefined : { started, output: [output] });
    f.held.set(
      jobId,
      setTimeout(() => {
        f.held.delete(jobId);
        this.finish(f, jobId, 'succeeded', cellId);
      }, this.holdMs),
    );
  }

  /** finish reports a job's end and receipt (protocol 5: in one job.report with what came before, and the load after). */
  private finish(f: Fake, jobId: string, reason: 'succeeded' | 'cancelled', cellId: string | null = null, before: Partial<JobReport> = {}): void {
    if (f.gone) return;
    f.running--;
    const ended = { end: { reason, exitCode: reason === 'succeeded' ? 0 : null, signal: null, message: null }, timings: { exec_ms: 0.5 } };
    const wiped = { receipt: receipt(cellId), timings: { wipe_ms: 1 } };
    if (this.protocol < 5) {
      f.loadDirty = true;
      this.send(f, { type: 'job.ended', jobId, ...ended });
      this.send(f, { type: 'job.wiped', jobId, ...wiped });
      return;
    }
    f.loadDirty = false;
    f.loadSentMs = performance.now();
    this.send(f, { type: 'job.report', jobId, ...before, ended, wiped, load: this.loadOf(f) });
  }

  private send(f: Fake, msg: AgentToControl): void {
    if (this.opts.validate) {
      const r = AgentToControlSchema.safeParse(msg);
      if (!r.success) this.schemaProblems.push(`sent ${msg.type}: ${r.error.issues[0]?.message ?? 'invalid'}`);
    }
    if (f.ws.readyState !== WebSocket.OPEN) return;
    if (msg.type !== 'hello') this.sent.messages++;
    f.ws.send(JSON.stringify(msg));
  }
}

/** receipt is a plausible wipe receipt: the steps a real agent records, a few ms each, no key material. */
function receipt(cellId: string | null): WipeReceipt {
  const t0 = Date.now() - 4;
  const at = (ms: number) => new Date(t0 + ms).toISOString();
  return {
    volumeId: randomBytes(8).toString('hex'),
    cellId,
    keyIdentifier: randomBytes(16).toString('hex'),
    keyStateAfterRemoval: 'absent',
    loopDevices: ['/dev/loop0'],
    startedAt: at(0),
    finishedAt: at(4),
    totalMs: 4,
    steps: [
      { step: 'container', at: at(0), ms: 1 },
      { step: 'network', at: at(1), ms: 1 },
      { step: 'volume', at: at(2), ms: 2 },
    ],
  };
}
