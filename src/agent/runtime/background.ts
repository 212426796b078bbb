/**
 * Background work — refilling the warm pool, wiping cells, forcing down a cell that outlived its exit — must yield the
 * CPU to the start path (assignments, the agent's own event loop, running workloads). Every runtime process such work
 * spawns (a refill's create, runsc's start; a wipe's delete) is moved into one low-weight CPU cgroup of the agent: its
 * caller says so (`{ background: true }`) down to the spawn. Deletes and runsc's start are spawned synchronously
 * (spawnHelper), so the move is queued in the tick the process starts: a Go runtime moved once its threads are
 * spawning runs far slower under concurrency. An implicit async context (AsyncLocalStorage) is not used for this:
 * enabling one puts async hooks on every promise of the process, a cost on every await of a job. The weight is
 * relative, so background work still gets the whole machine when nothing else wants it: the pool refills and every
 * cell is wiped, only later under load. Cell processes themselves are weighted by their own cgroup (spec.ts: low while
 * warm, normal from assignment).
 */
import { constants, existsSync, mkdirSync, openSync, write, writeFileSync } from 'node:fs';
import { join } from 'node:path';

/** BACKGROUND_CPU_SHARES is the weight of background helpers (a cgroup v1 default is 1024). */
export const BACKGROUND_CPU_SHARES = 64;

const CPU_ROOT = '/sys/fs/cgroup/cpu';
/** The background cgroup's cgroup.procs, held open: each adoption is then one write(2). */
let procsFd: number | null = null;

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
  procsFd ??= openSync(join(dir, 'cgroup.procs'), constants.O_WRONLY) // libuv opens with O_CLOEXEC;
}

/**
 * adoptIntoBackground moves a just-spawned helper of background work into the background cgroup. The write runs on the
 * thread pool: moving a task between cgroup v1 groups waits for an RCU grace period (milliseconds), which on the agent's
 * own thread stalled every start and attach queued behind it.
 */
export function adoptIntoBackground(pid: number): void {
  if (procsFd === null) return;
  write(procsFd, String(pid), () => {
    // An error: it exited already, or the cgroup is gone (shutdown): nothing to weigh.
  });
}
