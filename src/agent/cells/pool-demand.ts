/**
 * PoolDemand sizes one warm pool from its demand: enough cells to absorb, without a cold start, the most starts seen
 * within one prepare interval over the recent past (a burst at the recent peak rate lasts until the refill can follow),
 * between the pool's configured minimum and maximum. As starts age out of the window the target falls back to the
 * minimum, and the pool wipes its surplus cells (a warm cell is never reused, only wiped).
 */

/** MIN_WINDOW_MS is the shortest interval demand is counted in (a prepare can be faster than the arrivals' jitter). */
const MIN_WINDOW_MS = 1000;
/** MAX_ARRIVALS bounds the starts remembered per pool. */
const MAX_ARRIVALS = 100_000;
/** PREPARE_EWMA weighs a new prepare duration into the running estimate. */
const PREPARE_EWMA = 0.2;
/** INITIAL_PREPARE_MS is assumed until the pool has timed a prepare of its own. */
const INITIAL_PREPARE_MS = 500;

/** PoolSize is a pool's target and why. */
export interface PoolSize {
  target: number;
  reason: string;
}

export class PoolDemand {
  private readonly arrivals: number[] = [];
  private prepareMs = INITIAL_PREPARE_MS;
  private timedPrepares = 0;

  constructor(private readonly horizonMs: number) {}

  /** started records a start (a take) at `now`. */
  started(now: number): void {
    this.arrivals.push(now);
    if (this.arrivals.length > MAX_ARRIVALS) this.arrivals.splice(0, this.arrivals.length - MAX_ARRIVALS);
  }

  /** prepared records how long one prepare of this pool took. */
  prepared(ms: number): void {
    this.prepareMs = this.timedPrepares === 0 ? ms : this.prepareMs + PREPARE_EWMA * (ms - this.prepareMs);
    this.timedPrepares++;
  }

  /** size is the target between `min` and `max` at `now`. */
  size(min: number, max: number, now: number): PoolSize {
    while (this.arrivals.length > 0 && this.arrivals[0]! < now - this.horizonMs) this.arrivals.shift();
    const windowMs = Math.max(MIN_WINDOW_MS, Math.round(this.prepareMs));
    // The most starts within any windowMs-long interval (arrivals are in time order): two pointers.
    let peak = 0;
    for (let lo = 0, hi = 0; hi < this.arrivals.length; hi++) {
      while (this.arrivals[hi]! - this.arrivals[lo]! >= windowMs) lo++;
      peak = Math.max(peak, hi - lo + 1);
    }
    const horizon = `${Math.round(this.horizonMs / 1000)} s`;
    if (max <= min) return { target: min, reason: `fixed at ${min}` };
    if (peak <= min) return { target: min, reason: `minimum ${min} (peak ${peak} starts within ${windowMs} ms over the last ${horizon})` };
    if (peak >= max) return { target: max, reason: `maximum ${max} (peak ${peak} starts within ${windowMs} ms over the last ${horizon})` };
    return { target: peak, reason: `peak ${peak} starts within one prepare (${windowMs} ms) over the last ${horizon}` };
  }
}
