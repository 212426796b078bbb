/**
 * Background work — refilling the warm pool and wiping cells — must yield the CPU to the start path (assignments, the
 * agent's own event loop, running workloads). Everything such work starts runs inside `inBackground`, and every helper
 * process it spawns (runtimes, mkfs, …) is moved at once into one low-weight CPU cgroup of the agent. The weight is
 * relative, so background work still gets the whole machine when nothing else wants it: the pool refills and every
 * cell is wiped, only later under load. Cell processes themselves are weighted by their own cgroup (spec.ts: low while
 * warm, normal from assignment).
 */
import { AsyncLocalStorage } from 'node:async_hooks';
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

/** BACKGROUND_CPU_SHARES is the weight of background helpers (a cgroup v1 default is 1024). */
export const BACKGROUND_CPU_SHARES = 64;

const CPU_ROOT = '/sys/fs/cgroup/cpu';
const context = new AsyncLocalStorage<true>();
let procsFile: string | null = null;

/** backgroundCgroupName is the agent's background cgroup (under its cells' prefix, so reconcile and leak checks see it). */
export function backgroundCgroupName(agentId: string): string {
  return `cr-${agentId}-background`;
}

/** useBackgroundCgroup creates (or reuses) the agent's low-weight cgroup; without cgroup v1 cpu, background runs unweighted. */
export function useBackgroundCgroup(agentId: string): void {
  if (!existsSync(join(CPU_ROOT, 'cpu.shares'))) return;
  const dir = join(CPU_ROOT, backgroundCgroupName(agentId));
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, 'cpu.shares'), String(BACKGROUND_CPU_SHARES));
  procsFile = join(dir, 'cgroup.procs');
}

/** inBackground runs `fn` (and everything it awaits) as background work. */
export function inBackground<T>(fn: () => Promise<T>): Promise<T> {
  return context.run(true, fn);
}

/** adoptIfBackground moves a just-spawned helper into the background cgroup when background work spawned it. */
export function adoptIfBackground(pid: number): void {
  if (!procsFile || context.getStore() !== true) return;
  try {
    writeFileSync(procsFile, String(pid));
  } catch {
    // It exited already, or the cgroup is gone (shutdown): nothing to weigh.
  }
}
