/** Direct access to a cell's cgroup v1 directories: limits at assignment, OOM check, removal. */
import { type Dirent, promises as fsp, readdirSync, readFileSync, rmdirSync, writeFileSync, existsSync } from 'node:fs';
import { join } from 'node:path';

const ROOT = '/sys/fs/cgroup';
const CPU_PERIOD_US = 100_000;
/** ASSIGNED_CPU_SHARES is a running workload's CPU weight: cgroup v1's default. */
const ASSIGNED_CPU_SHARES = 1024;
/** ONE_HIERARCHY: where empty() looks, the first that holds the cell (any hierarchy a runtime always joins will do). */
const ONE_HIERARCHY = ['pids', 'memory', 'cpu'];

/** CellCgroup addresses one cell's flat cgroup (the same name under every controller). */
export class CellCgroup {
  /**
   * The limits the runtime gave the cgroup, as read back by readLimits (null: not read; a null memory or quota could
   * not be read and is written; a null memsw is absent and never written):
   * limit() writes only what the job changes, each cgroup write being a path walk and a kernel update on the start path.
   */
  private created: { memory: string | null; memsw: string | null; quota: string | null } | null = null;

  constructor(readonly name: string) {}

  /** path is the spec's `cgroupsPath`. */
  get path(): string {
    return `/${this.name}`;
  }

  /** readLimits reads back the limits the runtime set when it made the cgroup (a warm cell's, off the start path). */
  readLimits(): void {
    const mem = join(ROOT, 'memory', this.name);
    this.created = {
      memory: readIfExists(join(mem, 'memory.limit_in_bytes')),
      // Absent (no swap accounting): never written. Present but unreadable: '?' matches no limit, so it is written.
      memsw: existsSync(join(mem, 'memory.memsw.limit_in_bytes')) ? (readIfExists(join(mem, 'memory.memsw.limit_in_bytes')) ?? '?') : null,
      quota: readIfExists(join(ROOT, 'cpu', this.name, 'cpu.cfs_quota_us')),
    };
  }

  /**
   * limit tightens memory (and memory+swap) and CPU to the job's request; writes files, spawns nothing. After
   * readLimits, a limit the cgroup already has (a job asking for its whole size class) is not written again.
   */
  limit(memoryBytes: number, cpu: number): void {
    const mem = join(ROOT, 'memory', this.name);
    const memory = String(memoryBytes);
    const quota = String(Math.round(cpu * CPU_PERIOD_US));
    const was = this.created;
    // Lower the plain limit first: memsw must never be below it.
    if (was?.memory !== memory) writeFileSync(join(mem, 'memory.limit_in_bytes'), memory);
    if (was ? was.memsw !== null && was.memsw !== memory : existsSync(join(mem, 'memory.memsw.limit_in_bytes'))) {
      writeFileSync(join(mem, 'memory.memsw.limit_in_bytes'), memory);
    }
    if (was?.quota !== quota) writeFileSync(join(ROOT, 'cpu', this.name, 'cpu.cfs_quota_us'), quota);
    // A warm cell's init starts at a low weight (spec.ts WARM_CPU_SHARES); its workload gets the normal one.
    writeFileSync(join(ROOT, 'cpu', this.name, 'cpu.shares'), String(ASSIGNED_CPU_SHARES));
  }

  /** oomKills reports how many times the kernel OOM-killed a process in this cgroup. */
  oomKills(): number {
    try {
      const text = readFileSync(join(ROOT, 'memory', this.name, 'memory.oom_control'), 'utf8');
      return Number(/oom_kill (\d+)/.exec(text)?.[1] ?? 0);
    } catch {
      return 0;
    }
  }

  /** remove deletes what the runtime left of this cgroup in every hierarchy. Throws EBUSY while a task is left in it. */
  remove(): void {
    for (const dir of cgroupDirs(this.name)) removeTree(dir);
  }

  /**
   * removeAsync is remove on the thread pool, the hierarchies at once: a cgroup v1 rmdir waits in the kernel (an RCU
   * grace period) for a millisecond or more, about ten times per cell, which the agent's thread would otherwise spend
   * blocked in every wipe.
   */
  async removeAsync(): Promise<void> {
    await Promise.all(cgroupDirs(this.name).map((dir) => removeTreeAsync(dir)));
  }

  /**
   * empty says whether no process is directly in this cgroup: one read of cgroup.procs, without listing the control
   * files (which pids() does to find child cgroups; a cell cannot make any, having no cgroupfs and no capability, and
   * remove() still finds those the host made). One hierarchy answers for all: the runtime puts the cell's init in its
   * cgroup of every hierarchy and its processes inherit them, and nothing in a cell can move itself. Each cgroup v1
   * read of cgroup.procs allocates a pid list that a kernel worker frees a second later; one per hierarchy (about ten)
   * at every look cost about a millisecond of CPU per cell under load.
   */
  empty(): boolean {
    const one = ONE_HIERARCHY.map((c) => join(ROOT, c, this.name)).find((d) => existsSync(d));
    for (const dir of one ? [one] : cgroupDirs(this.name)) if (readIfExists(join(dir, 'cgroup.procs'))) return false;
    return true;
  }

  /** pids lists every process still in this cgroup (and its children) in any hierarchy. */
  pids(): number[] {
    const found = new Set<number>();
    for (const dir of cgroupDirs(this.name)) collectProcs(dir, found);
    return [...found];
  }

  /**
   * kill empties the cgroup of a cell whose runtime is gone or failed to delete it: freeze (so nothing forks while
   * it is being killed), SIGKILL every task, thaw, then wait until the cgroup is empty. Resolves true when it is
   * empty, false if tasks were still there after `timeoutMs` (an uninterruptible sleep: the caller retries later).
   */
  async kill(timeoutMs: number): Promise<boolean> {
    const deadline = Date.now() + timeoutMs;
    if (this.pids().length === 0) return true;
    const freezer = join(ROOT, 'freezer', this.name, 'freezer.state');
    const frozen = writeIfExists(freezer, 'FROZEN');
    while (frozen && readIfExists(freezer) === 'FREEZING' && Date.now() < deadline) await sleep(10);
    for (const pid of this.pids()) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        /* exited meanwhile */
      }
    }
    if (frozen) writeIfExists(freezer, 'THAWED');
    while (Date.now() < deadline) {
      if (this.pids().length === 0) return true;
      await sleep(20);
    }
    return this.pids().length === 0;
  }
}

/** listCgroups returns names under any controller that start with `prefix`. */
export function listCgroups(prefix: string): string[] {
  const names = new Set<string>();
  for (const controller of controllers()) {
    for (const entry of safeReaddir(join(ROOT, controller))) if (entry.startsWith(prefix)) names.add(entry);
  }
  return [...names];
}

function controllers(): string[] {
  return safeReaddir(ROOT);
}

function cgroupDirs(name: string): string[] {
  return controllers()
    .map((c) => join(ROOT, c, name))
    .filter((d) => existsSync(d));
}

// A cgroup directory holds only control files, which rmdir takes with it: listing them (dozens in some hierarchies)
// is needed only when rmdir finds child cgroups (EBUSY, as for a task still in it).
function removeTree(dir: string): void {
  try {
    rmdirSync(dir);
    return;
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') return;
    if (code !== 'EBUSY' && code !== 'ENOTEMPTY') throw e;
  }
  for (const entry of safeReaddirEntries(dir)) if (entry.isDirectory()) removeTree(join(dir, entry.name));
  try {
    rmdirSync(dir);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
  }
}

async function removeTreeAsync(dir: string): Promise<void> {
  try {
    await fsp.rmdir(dir);
    return;
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') return;
    if (code !== 'EBUSY' && code !== 'ENOTEMPTY') throw e;
  }
  // Child cgroups (the host made them: a cell has no cgroupfs): the rare path, as in removeTree.
  removeTree(dir);
}

function collectProcs(dir: string, into: Set<number>): void {
  const procs = readIfExists(join(dir, 'cgroup.procs'));
  for (const line of procs?.split('\n') ?? []) if (line) into.add(Number(line));
  for (const entry of safeReaddirEntries(dir)) if (entry.isDirectory()) collectProcs(join(dir, entry.name), into);
}

function readIfExists(path: string): string | null {
  try {
    return readFileSync(path, 'utf8').trim();
  } catch {
    return null;
  }
}

function writeIfExists(path: string, value: string): boolean {
  try {
    writeFileSync(path, value);
    return true;
  } catch {
    return false;
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

function safeReaddirEntries(dir: string): Dirent[] {
  try {
    return readdirSync(dir, { withFileTypes: true });
  } catch {
    return [];
  }
}

function safeReaddir(dir: string): string[] {
  try {
    return readdirSync(dir);
  } catch {
    return [];
  }
}
