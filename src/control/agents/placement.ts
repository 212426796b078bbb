/**
 * Placement picks the agent a job goes to (Contract W). Pure: the hub hands it what it knows of each agent.
 *
 * Rules, in order: never an agent that is draining, removed or full (running ≥ capacity), nor one that does not offer
 * the job's runtime or a size class that fits it (its load's `offers`; an agent that does not say offers everything),
 * nor, for a job on an image, one that has not prepared the image; prefer an agent with a free
 * warm cell of the job's (image, runtime, size class): the job then starts without a cold prepare; then the least
 * loaded (running / capacity); ties by a hash of the agent id, so that equal agents are not always taken in the same
 * (id) order. choosePlacement judges every candidate in one pass (O(agents × warm pools per agent)); the hub reads its
 * agents in placement order instead and stops early (placement-order.ts); both judge with judgeCandidate.
 */
import type { AgentLoad, AgentOffers, Runtime } from '../../shared/wire.js';

/** AgentCandidate is what placement knows of one agent. */
export interface AgentCandidate {
  agentId: string;
  capacity: number;
  /** Jobs the control plane has on it (assigned and not ended). */
  running: number;
  draining: boolean;
  removed: boolean;
  /** As last reported (warm counts less the cells the hub has assigned since); null: not reported yet. */
  load: AgentLoad | null;
  /** The images (manifest digests) it has prepared; absent: not checked. */
  images?: ReadonlySet<string>;
  /** agentHash(agentId), when the caller keeps it (placement compares most candidates by it). */
  hash?: number;
}

/** JobSize is what a job asks for, as size classes are measured. */
export interface JobSize {
  cpu: number;
  memoryBytes: number;
  diskBytes: number;
}

/**
 * PlacementWant is what the job needs: its image (digest; null = host root), runtime, the size class the control plane's
 * agent.classes map it to (null: any; used for agents that do not say what they offer) and its size (an agent that
 * offers classes must have one that fits; its warm cells are matched on that class, the one it will take).
 */
export interface PlacementWant {
  image: string | null;
  runtime: Runtime;
  sizeClass: string | null;
  /** Absent: the size is not checked against what agents offer. */
  size?: JobSize;
}

/** choosePlacement returns the agent id the job should go to, or null when no agent can take it now. */
export function choosePlacement(cands: Iterable<AgentCandidate>, want: PlacementWant): string | null {
  let best: AgentCandidate | null = null;
  let bestWarm = false;
  let bestLoad = 0;
  let bestHash = 0;
  for (const c of cands) {
    const verdict = judgeCandidate(c, want);
    if (verdict === null) continue;
    const warm = verdict === 'warm';
    const load = c.running / c.capacity;
    if (best !== null) {
      if (bestWarm && !warm) continue;
      if (bestWarm === warm) {
        if (load > bestLoad) continue;
        if (load === bestLoad) {
          const h = c.hash ?? agentHash(c.agentId);
          if (h > bestHash || (h === bestHash && c.agentId >= best.agentId)) continue;
          best = c;
          bestHash = h;
          continue;
        }
      }
    }
    best = c;
    bestWarm = warm;
    bestLoad = load;
    bestHash = c.hash ?? agentHash(c.agentId);
  }
  return best?.agentId ?? null;
}

/**
 * judgeCandidate is what the rules say of one agent for the job: null when it may not take it (draining, removed, full,
 * without the image, or not offering the runtime or a size that fits), 'warm' when it has a free warm cell that fits,
 * else 'cold'. choosePlacement and PlacementOrder (placement-order.ts) both judge with it.
 */
export function judgeCandidate(c: AgentCandidate, want: PlacementWant): 'warm' | 'cold' | null {
  if (c.draining || c.removed || c.running >= c.capacity || c.capacity <= 0) return null;
  if (want.image !== null && c.images && !c.images.has(want.image)) return null;
  const sizeClass = offeredClass(c.load?.offers, want);
  if (sizeClass === false) return null;
  return c.load !== null && warmCells(c.load, want, sizeClass) > 0 ? 'warm' : 'cold';
}

/**
 * offeredClass is the size class an agent would run the job in: false when the agent does not offer the job's runtime or
 * has no class that fits it; the want's own class when the agent does not say what it offers (or the want has no size);
 * else the smallest of its classes that fits.
 */
export function offeredClass(offers: AgentOffers | undefined, want: PlacementWant): string | null | false {
  if (!offers) return want.sizeClass;
  if (!offers.runtimes.includes(want.runtime)) return false;
  if (!want.size) return want.sizeClass;
  return jobSizeClass(offers.classes, want.size.cpu, want.size.memoryBytes, want.size.diskBytes) ?? false;
}

/** canRun says whether an agent that offers `offers` (undefined: it does not say, so everything) can run the job. */
export function canRun(offers: AgentOffers | undefined, runtime: Runtime, size: JobSize): boolean {
  return offeredClass(offers, { image: null, runtime, sizeClass: null, size }) !== false;
}

/** warmCells counts an agent's warm cells that fit the want (of `sizeClass`, by default the want's; any class when null). */
export function warmCells(load: AgentLoad, want: PlacementWant, sizeClass: string | null = want.sizeClass): number {
  let n = 0;
  for (const w of load.warm) {
    if (w.image === want.image && w.runtime === want.runtime && (sizeClass === null || w.sizeClass === sizeClass)) n += w.cells;
  }
  return n;
}

/**
 * takeWarmCell subtracts one warm cell that fits the want from a load (the hub's guess until the next report); the class
 * is the one the agent will take (offeredClass), by default the want's.
 */
export function takeWarmCell(load: AgentLoad, want: PlacementWant, sizeClass: string | null = want.sizeClass): AgentLoad {
  const i = load.warm.findIndex((w) => w.cells > 0 && w.image === want.image && w.runtime === want.runtime && (sizeClass === null || w.sizeClass === sizeClass));
  if (i < 0) return load;
  const warm = load.warm.slice();
  warm[i] = { ...warm[i]!, cells: warm[i]!.cells - 1 };
  return { ...load, warm };
}

/** agentHash is FNV-1a of the agent id: a stable, well-spread order among equally loaded agents. */
export function agentHash(agentId: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < agentId.length; i++) {
    h ^= agentId.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  return h >>> 0;
}

/** PlacementClass is a size class as placement maps jobs to them (agent.classes of the config, in bytes). */
export interface PlacementClass {
  name: string;
  cpu: number;
  memoryBytes: number;
  diskBytes: number;
}

/**
 * jobSizeClass is the class a job maps to: the smallest that fits its cpu, memory and disk (as an agent picks it), or
 * null when none does (then any warm cell of the image and runtime counts; the agent decides).
 */
export function jobSizeClass(classes: readonly PlacementClass[], cpu: number, memoryBytes: number, diskBytes: number): string | null {
  let best: PlacementClass | null = null;
  for (const c of classes) {
    if (c.cpu < cpu || c.memoryBytes < memoryBytes || c.diskBytes < diskBytes) continue;
    if (!best || c.memoryBytes < best.memoryBytes || (c.memoryBytes === best.memoryBytes && (c.cpu < best.cpu || (c.cpu === best.cpu && c.diskBytes < best.diskBytes)))) best = c;
  }
  return best?.name ?? null;
}
