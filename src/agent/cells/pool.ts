/**
 * CellPool keeps warm cells per (image or host root, runtime, size class), sized from demand between each pool's minimum
 * and maximum (pool-demand.ts), and refills them in the background.
 */
import type { AgentLoad, PoolStatus, Runtime, VolumeCounts } from '../../shared/wire.js';
import type { CellRuntime } from '../runtime/cell-runtime.js';
import { Cell, type CellEnvironment } from './cell.js';
import type { SizeClass } from './size-class.js';
import type { UidRanges } from './uid-ranges.js';
import type { PreparedImage } from '../images/image-store.js';
import { PoolDemand, type PoolSize } from './pool-demand.js';

/** RESIZE_INTERVAL_MS is how often targets are recomputed (refill when short, wipe the surplus when demand fell). */
const RESIZE_INTERVAL_MS = 1000;
/** REFILL_RETRY_MS is how long a pool whose prepare failed is left alone before the refill tries it again. */
const REFILL_RETRY_MS = 1000;

/** PoolTarget is how many warm cells to keep for one root (an image, or null: the host's), runtime and class. */
export interface PoolTarget {
  runtime: Runtime;
  sizeClass: SizeClass;
  /** The minimum kept warm. */
  warm: number;
  /** The most demand may grow it to (absent or ≤ warm: a fixed pool of `warm`). */
  max?: number;
  image: PreparedImage | null;
}

interface PoolEntry {
  target: PoolTarget;
  warm: Cell[];
  preparing: number;
  demand: PoolDemand;
  size: PoolSize;
  /** Why the last prepare failed; cleared by the next success. */
  lastError: string | null;
  /** After a failed prepare the refill leaves this pool alone until then (epoch ms), so a broken pool never spins. */
  retryAt: number;
}

/** CellPool owns every cell that has not been assigned yet. */
export class CellPool {
  private readonly entries = new Map<string, PoolEntry>();
  private readonly busy = new Set<Cell>();
  /** Prepares in flight: drain waits for them so that no cell is half-made at exit. */
  private readonly inflight = new Set<Promise<unknown>>();
  /** Refill prepares in flight (at most maxConcurrentPrepares), and whether a refill pass is already scheduled. */
  private refilling = 0;
  private refillScheduled = false;
  private closed = false;
  /** Starts' prepares running now (at most maxConcurrentPrepares), and those waiting for a slot. */
  private startsPreparing = 0;
  private readonly startsWaiting: Array<() => void> = [];
  /** Told when warm or preparing counts may have changed (the agent's load reports, coalesced there). */
  private changed: () => void = () => {};

  constructor(
    private readonly env: CellEnvironment,
    private readonly runtimes: ReadonlyMap<Runtime, CellRuntime>,
    private readonly uids: UidRanges,
    targets: readonly PoolTarget[],
    private readonly log: (msg: string, extra?: object) => void,
    private readonly refillDelayMs = 0,
    private readonly maxConcurrentPrepares = 4,
    /** How far back demand counts (agent.poolDemandWindowSeconds). */
    private readonly demandWindowMs = 300_000,
  ) {
    for (const t of targets) this.entries.set(key(t.runtime, t.sizeClass, t.image), this.newEntry(t));
    this.resizer = setInterval(() => this.resize(), RESIZE_INTERVAL_MS);
    this.resizer.unref();
  }

  private readonly resizer: NodeJS.Timeout;

  private newEntry(t: PoolTarget): PoolEntry {
    return { target: t, warm: [], preparing: 0, demand: new PoolDemand(this.demandWindowMs), size: { target: t.warm, reason: `minimum ${t.warm}` }, lastError: null, retryAt: 0 };
  }

  /** sizeOf recomputes an entry's target from its demand. */
  private sizeOf(e: PoolEntry): PoolSize {
    e.size = e.demand.size(e.target.warm, e.target.max ?? e.target.warm, Date.now());
    return e.size;
  }

  /** resize recomputes every target: refills what is short, wipes (never reuses) warm cells beyond a fallen target. */
  private resize(): void {
    if (this.closed) return;
    let short = false;
    for (const e of this.entries.values()) {
      const { target } = this.sizeOf(e);
      const warm = e.warm.filter((c) => c.state === 'warm');
      if (warm.length + e.preparing < target) short = true;
      if (warm.length > target) {
        const surplus = warm.slice(0, warm.length - target); // the oldest first
        e.warm = e.warm.filter((c) => !surplus.includes(c));
        for (const c of surplus) void this.discard(c);
        this.changed();
      }
    }
    if (short) this.refill();
  }

  /** setTarget adds or changes the warm count of one pool (an image's pools appear once the image is prepared). */
  setTarget(t: PoolTarget): void {
    const e = this.entry(t.runtime, t.sizeClass, t.image);
    e.target = t;
    this.sizeOf(e);
    this.refill();
  }

  /** drainImage forgets the pools of an image and wipes their warm cells; returns once none is left warm or preparing. */
  async drainImage(digest: string): Promise<void> {
    const mine = [...this.entries.entries()].filter(([, e]) => e.target.image?.manifest.digest === digest);
    for (const [k] of mine) this.entries.delete(k);
    this.changed();
    while (mine.some(([, e]) => e.preparing > 0)) await new Promise((r) => setTimeout(r, 20));
    await Promise.all(mine.flatMap(([, e]) => e.warm.splice(0)).map((c) => this.discard(c)));
  }

  /** busyWith counts assigned (not yet released) cells of an image. */
  busyWith(digest: string): number {
    return [...this.busy].filter((c) => c.image?.manifest.digest === digest).length;
  }

  /** take returns a warm cell (or prepares one now: the cold path) and schedules a refill. */
  async take(runtime: Runtime, sizeClass: SizeClass, image: PreparedImage | null = null): Promise<{ cell: Cell; cold: boolean }> {
    const entry = this.entry(runtime, sizeClass, image);
    // Only recorded here: the target is recomputed off the start path, by the resizer every second.
    entry.demand.started(Date.now());
    let cell: Cell | undefined;
    while ((cell = entry.warm.shift())) if (cell.state === 'warm') break;
    const cold = !cell || cell.state !== 'warm';
    this.changed();
    if (!cell || cold) cell = await this.prepare(runtime, sizeClass, image);
    this.busy.add(cell);
    setTimeout(() => this.refill(), this.refillDelayMs).unref();
    return { cell, cold };
  }

  /** release forgets a cell that its owner has wiped. */
  release(cell: Cell): void {
    this.busy.delete(cell);
    this.uids.release(cell.hostUidBase);
  }

  /**
   * refill starts prepares, up to maxConcurrentPrepares of them at once, until every target is met; never on the request
   * path. Under sustained demand one prepare at a time fell behind the starts, and every start then paid a cold prepare.
   */
  refill(): void {
    if (this.refillScheduled || this.closed) return;
    this.refillScheduled = true;
    setImmediate(() => {
      this.refillScheduled = false;
      this.startRefills();
    });
  }

  private startRefills(): void {
    // Refills use the slots starts leave free: a start never waits behind a refill (which runs at background weight).
    // One refill runs even while starts hold every slot: a flood of cold starts of one pool (another workspace's gVisor
    // jobs, say) would otherwise keep every other pool empty, and turn their warm starts cold too.
    while (!this.closed && (this.refilling === 0 || this.refilling + this.startsPreparing < this.maxConcurrentPrepares)) {
      const short = this.shortest(Date.now());
      if (!short) return;
      this.refilling++;
      short.preparing++;
      this.changed();
      void this.refillOne(short).finally(() => {
        this.refilling--;
        short.preparing--;
        this.changed();
        this.refill();
      });
    }
  }

  // The pool furthest below its target (in cells), so that one pool's deficit does not hold every slot while another is empty.
  private shortest(now: number): PoolEntry | undefined {
    let best: PoolEntry | undefined;
    let bestDeficit = 0;
    for (const e of this.entries.values()) {
      if (e.retryAt > now) continue;
      let warm = 0;
      for (const c of e.warm) if (c.state === 'warm') warm++;
      const deficit = e.size.target - warm - e.preparing;
      if (deficit > bestDeficit) [best, bestDeficit] = [e, deficit];
    }
    return best;
  }

  private async refillOne(short: PoolEntry): Promise<void> {
    try {
      // A refill is background work: it yields the CPU to starts and workloads (runtime/background.ts).
      const cell = await this.prepare(short.target.runtime, short.target.sizeClass, short.target.image, 'refill');
      short.lastError = null;
      if (cell.timings.prepare_ms !== undefined) short.demand.prepared(cell.timings.prepare_ms);
      if (this.closed || ![...this.entries.values()].includes(short)) await this.discard(cell);
      else short.warm.push(cell);
    } catch (e) {
      short.lastError = (e as Error).message;
      this.log('cell prepare failed', { error: short.lastError });
      // The resizer (every second) starts the refill again once this pool may be retried.
      short.retryAt = Date.now() + REFILL_RETRY_MS;
    }
  }

  private prepare(runtime: Runtime, sizeClass: SizeClass, image: PreparedImage | null, why: 'start' | 'refill' = 'start'): Promise<Cell> {
    const rt = this.runtimes.get(runtime);
    if (!rt) return Promise.reject(new Error(`runtime ${runtime} is not enabled on this agent`));
    const cell = new Cell(this.env, rt, sizeClass, this.uids.acquire(), image);
    const done = this.prepareSlot(() => cell.prepare({ background: why === 'refill' }), why).then(
      () => cell,
      async (e: unknown) => {
        await this.discard(cell);
        throw e;
      },
    );
    this.inflight.add(done);
    void done.catch(() => {}).finally(() => this.inflight.delete(done));
    return done;
  }

  /**
   * prepareSlot runs a start's prepare when fewer than maxConcurrentPrepares starts are preparing (a burst never forks
   * them all at once). A refill runs at once: startRefills admits one only while starts leave a slot free.
   */
  private async prepareSlot<T>(fn: () => Promise<T>, why: 'start' | 'refill'): Promise<T> {
    if (why === 'refill') return fn();
    // A finishing prepare hands its slot straight to the next waiter, so the count never overshoots.
    if (this.startsPreparing >= this.maxConcurrentPrepares) await new Promise<void>((resolve) => this.startsWaiting.push(resolve));
    else this.startsPreparing++;
    try {
      return await fn();
    } finally {
      const next = this.startsWaiting.shift();
      if (next) next();
      else this.startsPreparing--;
    }
  }

  private async discard(cell: Cell): Promise<void> {
    await cell.wipe().catch((e: Error) => this.log('cell wipe failed', { cell: cell.id, error: e.message }));
    this.uids.release(cell.hostUidBase);
  }

  private entry(runtime: Runtime, sizeClass: SizeClass, image: PreparedImage | null): PoolEntry {
    const k = key(runtime, sizeClass, image);
    let e = this.entries.get(k);
    if (!e) {
      e = this.newEntry({ runtime, sizeClass, warm: 0, image });
      this.entries.set(k, e);
    }
    return e;
  }

  /** onChange sets who is told when the pool's warm or preparing counts may have changed (one listener: the agent). */
  onChange(fn: () => void): void {
    this.changed = fn;
  }

  /** load is the pool's part of the agent's load: warm cells per (image, runtime, class) and cells being prepared. */
  load(): Pick<AgentLoad, 'preparing' | 'warm'> {
    const warm: AgentLoad['warm'] = [];
    let preparing = 0;
    for (const e of this.entries.values()) {
      preparing += e.preparing;
      let cells = 0;
      for (const c of e.warm) if (c.state === 'warm') cells++;
      if (cells > 0) warm.push({ image: e.target.image?.manifest.digest ?? null, runtime: e.target.runtime, sizeClass: e.target.sizeClass.name, cells });
    }
    // Cold starts prepare outside the entries' counts; every prepare in a slot or waiting for one is counted here.
    return { preparing: Math.max(preparing, this.startsPreparing + this.startsWaiting.length + this.refilling), warm };
  }

  /** runtimeNames lists the runtimes this pool can prepare cells under (what the agent offers). */
  runtimeNames(): Runtime[] {
    return [...this.runtimes.keys()];
  }

  /** volumeCounts counts this agent's volumes by state (one per live cell). */
  volumeCounts(): VolumeCounts {
    const warm = [...this.entries.values()].reduce((n, e) => n + e.warm.filter((c) => c.state === 'warm').length, 0);
    const inUse = [...this.busy].filter((c) => c.state === 'assigned' || c.state === 'exited').length;
    const s = this.env.wipeStats;
    return { warm, inUse, wiping: s.wiping, wiped: s.wiped, wipeFailed: s.wipeFailed };
  }

  /** status counts cells per pool key. */
  status(): PoolStatus {
    const out: PoolStatus = {};
    for (const [k, e] of this.entries) {
      const busy = [...this.busy].filter((c) => key(c.runtimeName as Runtime, c.sizeClass, c.image) === k).length;
      out[k] = {
        target: e.size.target,
        warm: e.warm.filter((c) => c.state === 'warm').length,
        preparing: e.preparing,
        busy,
        lastError: e.lastError,
        min: e.target.warm,
        max: Math.max(e.target.warm, e.target.max ?? e.target.warm),
        reason: e.size.reason,
      };
    }
    return out;
  }

  /** drain stops refilling, lets prepares in flight finish, and wipes every warm cell. */
  async drain(): Promise<void> {
    this.closed = true;
    clearInterval(this.resizer);
    while (this.inflight.size > 0 || this.refilling > 0) {
      await Promise.allSettled([...this.inflight]);
      await new Promise((r) => setImmediate(r));
    }
    const cells = [...this.entries.values()].flatMap((e) => e.warm.splice(0));
    await Promise.all(cells.map((c) => this.discard(c)));
  }
}

/** key names a pool: `runtime/class` on the host root, `runtime/class@<12 hex digits of the image digest>` on an image. */
function key(runtime: Runtime, c: SizeClass, image: PreparedImage | null): string {
  return image ? `${runtime}/${c.name}@${image.manifest.digest.slice(7, 19)}` : `${runtime}/${c.name}`;
}
