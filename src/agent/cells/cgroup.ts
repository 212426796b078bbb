/** Direct access to a cell's cgroup v1 directories: limits at assignment, OOM check, removal. */
import { type Dirent, readdirSync, readFileSync, rmdirSync, writeFileSync, existsSync } from 'node:fs';
import { join } from 'node:path';

const ROOT = '/sys/fs/cgroup';
const CPU_PERIOD_US = 100_000;

/** CellCgroup addresses one cell's flat cgroup (the same name under every controller). */
export class CellCgroup {
  constructor(readonly name: string) {}

  /** path is the spec's `cgroupsPath`. */
  get path(): string {
    return `/${this.name}`;
  }

  /** limit tightens memory (and memory+swap) and CPU to the job's request; writes files, spawns nothing. */
  limit(memoryBytes: number, cpu: number): void {
    const mem = join(ROOT, 'memory', this.name);
    // Lower the plain limit first: memsw must never be below it.
    writeFileSync(join(mem, 'memory.limit_in_bytes'), String(memoryBytes));
    if (existsSync(join(mem, 'memory.memsw.limit_in_bytes'))) {
      writeFileSync(join(mem, 'memory.memsw.limit_in_bytes'), String(memoryBytes));
    }
    writeFileSync(join(ROOT, 'cpu', this.name, 'cpu.cfs_quota_us'), String(Math.round(cpu * CPU_PERIOD_US)));
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

  /** remove deletes what the runtime left of this cgroup in every hierarchy. */
  remove(): void {
    for (const dir of cgroupDirs(this.name)) removeTree(dir);
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

function removeTree(dir: string): void {
  let entries: Dirent[] = [];
  try {
    entries = readdirSync(dir, { withFileTypes: true });
  } catch {
    return;
  }
  for (const entry of entries) if (entry.isDirectory()) removeTree(join(dir, entry.name));
  try {
    rmdirSync(dir);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
  }
}

function safeReaddir(dir: string): string[] {
  try {
    return readdirSync(dir);
  } catch {
    return [];
  }
}
