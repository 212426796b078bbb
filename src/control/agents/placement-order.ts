/**
 * PlacementOrder keeps an agent set in placement's order of preference among equals in warmth: least loaded
 * (running / capacity) first, then by agentHash, then by id (placement.ts). Placement then reads agents in that order and
 * stops at the first that may take the job with a warm cell that fits: the same choice as choosePlacement's pass over
 * every agent (the first fitting agent in this order when none has a warm cell), found after a few agents instead of all
 * of them in a fleet with room (1,000s of agents, one pass per job).
 *
 * The owner must call `update` at every change of an agent's running count or capacity (an entry is moved only when its
 * load changed): placement stops at the first full agent (load ≥ 1), since every agent after it is full too, so a key
 * left stale could hide an agent with room. The other figures (draining, images, warm cells) are read live at choose.
 */
import { agentHash, judgeCandidate, type AgentCandidate, type PlacementWant } from './placement.js';

/** Ordered is what the order keeps of one agent: the item (its candidate is refreshed by `candidateOf` at each read) and the key it is sorted by. */
interface Ordered<T> {
  item: T;
  load: number;
  hash: number;
  id: string;
}

/** PlacementOrder holds items of the owner's (its connections) each with a candidate: `candidateOf` refreshes and returns it. */
export class PlacementOrder<T> {
  private readonly list: Array<Ordered<T>> = [];
  private readonly entries = new Map<T, Ordered<T>>();

  constructor(private readonly candidateOf: (item: T) => AgentCandidate) {}

  get size(): number {
    return this.list.length;
  }

  /** update adds an item, or moves it to the place its candidate's load says now. */
  update(item: T): void {
    const c = this.candidateOf(item);
    const load = loadOf(c);
    const e = this.entries.get(item);
    if (e) {
      if (e.load === load) return;
      this.list.splice(this.indexOf(e), 1);
      e.load = load;
      this.list.splice(this.insertionPoint(e), 0, e);
      return;
    }
    const n: Ordered<T> = { item, load, hash: c.hash ?? agentHash(c.agentId), id: c.agentId };
    this.entries.set(item, n);
    this.list.splice(this.insertionPoint(n), 0, n);
  }

  /** delete forgets an item (a connection closed). */
  delete(item: T): void {
    const e = this.entries.get(item);
    if (!e) return;
    this.entries.delete(item);
    this.list.splice(this.indexOf(e), 1);
  }

  /**
   * choose returns the item placement prefers for `want` (choosePlacement's rules) or null when none may take it. `live`
   * says whether an item still counts (a connection replaced meanwhile does not).
   */
  choose(want: PlacementWant, live: (item: T) => boolean): T | null {
    let firstCold: T | null = null;
    for (const e of this.list) {
      if (e.load >= 1) break; // full, as is every agent after it: none of them may take a job
      if (!live(e.item)) continue;
      const verdict = judgeCandidate(this.candidateOf(e.item), want);
      if (verdict === 'warm') return e.item;
      if (verdict === 'cold' && firstCold === null) firstCold = e.item;
    }
    return firstCold;
  }

  /** stale lists the items whose stored load is not their candidate's now (an update missed: tests). */
  stale(): T[] {
    return this.list.filter((e) => e.load !== loadOf(this.candidateOf(e.item))).map((e) => e.item);
  }

  /** items lists the items in order (tests). */
  items(): T[] {
    return this.list.map((e) => e.item);
  }

  private indexOf(e: Ordered<T>): number {
    // Keys are unique (ids are), so an entry sits at its own insertion point; a scan should a key have changed in place.
    const at = this.insertionPoint(e);
    return this.list[at] === e ? at : this.list.indexOf(e);
  }

  /** insertionPoint is the index of the first entry that does not sort before `e` (binary search). */
  private insertionPoint(e: Ordered<T>): number {
    let lo = 0;
    let hi = this.list.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (before(this.list[mid]!, e)) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }
}

/** loadOf is the sort key's load: running / capacity, an agent with no capacity last. */
function loadOf(c: AgentCandidate): number {
  return c.capacity > 0 ? c.running / c.capacity : Number.POSITIVE_INFINITY;
}

/** before says whether a sorts before b: by load, then hash, then id (choosePlacement's tie-breaks). */
function before<T>(a: Ordered<T>, b: Ordered<T>): boolean {
  if (a.load !== b.load) return a.load < b.load;
  if (a.hash !== b.hash) return a.hash < b.hash;
  return a.id < b.id;
}
