/**
 * LoadReporter keeps the control plane's view of this agent's load current (Contract W): changes are coalesced into at
 * most one agent.load per LOAD_REPORT_MIN_INTERVAL_MS, and the load is sent every LOAD_REPORT_INTERVAL_MS even when it
 * did not change (the control plane subtracts a warm cell per assignment; the next report corrects its guess).
 */
import { LOAD_REPORT_INTERVAL_MS, LOAD_REPORT_MIN_INTERVAL_MS, type AgentLoad, type AgentToControl } from '../shared/wire.js';

/** LoadReporterOptions are where the load comes from and where it goes. */
export interface LoadReporterOptions {
  load: () => AgentLoad;
  send: (msg: AgentToControl) => void;
  minIntervalMs?: number;
  intervalMs?: number;
}

export class LoadReporter {
  private lastSentAt = 0;
  private lastSent = '';
  private timer: NodeJS.Timeout | null = null;
  private readonly heartbeat: NodeJS.Timeout;
  private readonly minIntervalMs: number;

  constructor(private readonly o: LoadReporterOptions) {
    this.minIntervalMs = o.minIntervalMs ?? LOAD_REPORT_MIN_INTERVAL_MS;
    this.heartbeat = setInterval(() => this.flush(true), o.intervalMs ?? LOAD_REPORT_INTERVAL_MS);
    this.heartbeat.unref();
  }

  /** changed notes that the load may have changed: a report follows within minIntervalMs (one for many changes). */
  changed(): void {
    if (this.timer) return;
    const wait = Math.max(0, this.lastSentAt + this.minIntervalMs - Date.now());
    this.timer = setTimeout(() => {
      this.timer = null;
      this.flush(false);
    }, wait);
    this.timer.unref();
  }

  /** sentInHello records the load a hello carried, so that an unchanged load is not sent again at once. */
  sentInHello(load: AgentLoad): void {
    this.lastSent = JSON.stringify(load);
    this.lastSentAt = Date.now();
  }

  private flush(always: boolean): void {
    const load = this.o.load();
    const json = JSON.stringify(load);
    if (!always && json === this.lastSent) return;
    this.lastSent = json;
    this.lastSentAt = Date.now();
    this.o.send({ type: 'agent.load', load });
  }

  /** close stops reporting. */
  close(): void {
    clearInterval(this.heartbeat);
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
  }
}
