/**
 * Placement picks the agent a job goes to (Contract W). Pure: the hub hands it what it knows of each agent.
 *
 * Rules, in order: never an agent that is draining, removed or full (running ≥ capacity); prefer an agent with a free
 * warm cell of the job's (image, runtime, size class): the job then starts without a cold prepare; then the least
 * loaded (running / capacity); ties by a hash of the agent id, so that equal agents are not always taken in the same
 * (id) order. One pass over the candidates: O(agents × warm pools per agent).
 */
import type { AgentLoad, Runtime } from '../../shared/wire.js';

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
}

/** PlacementWant is what the job needs: its image (digest; null = host root), runtime and size class (null: any). */
export interface PlacementWant {
  image: string | null;
  runtime: Runtime;
  sizeClass: string | null;
}

/** choosePlacement returns the agent id the job should go to, or null when no agent can take it now. */
export function choosePlacement(cands: Iterable<AgentCandidate>, want: PlacementWant): string | null {
  let best: AgentCandidate | null = null;
  let bestWarm = false;
  let bestLoad = 0;
  let bestHash = 0;
  for (const c of cands) {
    if (c.draining || c.removed || c.running >= c.capacity || c.capacity <= 0) continue;
    const warm = c.load !== null && warmCells(c.load, want) > 0;
    const load = c.running / c.capacity;
    if (best !== null) {
      if (bestWarm && !warm) continue;
      if (bestWarm === warm) {
        if (load > bestLoad) continue;
        if (load === bestLoad) {
          const h = agentHash(c.agentId);
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
    bestHash = agentHash(c.agentId);
  }
  return best?.agentId ?? null;
}

/** warmCells counts an agent's warm cells that fit the want (any class when the want names none). */
export function warmCells(load: AgentLoad, want: PlacementWant): number {
  let n = 0;
  for (const w of load.warm) {
    if (w.image === want.image && w.runtime === want.runtime && (want.sizeClass === null || w.sizeClass === want.sizeClass)) n += w.cells;
  }
  return n;
}

/** takeWarmCell subtracts one warm cell that fits the want from a load (the hub's guess until the next report). */
export function takeWarmCell(load: AgentLoad, want: PlacementWant): AgentLoad {
  const i = load.warm.findIndex((w) => w.cells > 0 && w.image === want.image && w.runtime === want.runtime && (want.sizeClass === null || w.sizeClass === want.sizeClass));
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
