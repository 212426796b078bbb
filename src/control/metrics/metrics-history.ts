/**
 * MetricsHistory keeps the last hour of the plane's throughput and start latency in fixed intervals, so the console can
 * draw them at once instead of sampling /metrics while it is open. Bounded: HISTORY_POINTS intervals, and at most
 * MAX_SAMPLES_PER_INTERVAL start latencies per interval (a uniform reservoir beyond that).
 */

/** HistoryPoint is one interval: jobs that ended in it and the start latency of those that started a workload. */
export interface HistoryPoint {
  /** End of the interval (ISO). */
  at: string;
  jobsEnded: number;
  jobsPerSecond: number;
  startP50Ms: number | null;
  startP95Ms: number | null;
}

const HISTORY_POINTS = 360;
const MAX_SAMPLES_PER_INTERVAL = 10_000;

export class MetricsHistory {
  private readonly points: HistoryPoint[] = [];
  private ended = 0;
  private starts: number[] = [];
  private seen = 0;
  private readonly timer: NodeJS.Timeout;

  constructor(readonly intervalMs = 10_000) {
    this.timer = setInterval(() => this.close(), intervalMs);
    this.timer.unref();
  }

  /** jobEnded counts a job's end; `startMs` is its creation → workload start, if it started. */
  jobEnded(startMs: number | null): void {
    this.ended++;
    if (startMs === null) return;
    this.seen++;
    if (this.starts.length < MAX_SAMPLES_PER_INTERVAL) this.starts.push(startMs);
    else {
      const i = Math.floor(Math.random() * this.seen);
      if (i < MAX_SAMPLES_PER_INTERVAL) this.starts[i] = startMs;
    }
  }

  /** list returns the closed intervals, oldest first. */
  list(): HistoryPoint[] {
    return [...this.points];
  }

  stop(): void {
    clearInterval(this.timer);
  }

  private close(): void {
    const sorted = this.starts.sort((a, b) => a - b);
    const q = (p: number) => (sorted.length ? sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))]! : null);
    this.points.push({ at: new Date().toISOString(), jobsEnded: this.ended, jobsPerSecond: Math.round((this.ended / (this.intervalMs / 1000)) * 100) / 100, startP50Ms: q(0.5), startP95Ms: q(0.95) });
    if (this.points.length > HISTORY_POINTS) this.points.shift();
    this.ended = 0;
    this.starts = [];
    this.seen = 0;
  }
}
