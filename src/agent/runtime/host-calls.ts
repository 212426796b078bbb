// Typed wrapper over build/runtime.node: starting helper processes without forking the agent, and the other host calls
// the cell runtime makes in-process (see native/runtime).
import { accessSync, constants } from 'node:fs';
import { Socket } from 'node:net';
import type { Readable } from 'node:stream';
import { join } from 'node:path';
import { loadNativeAddon } from '../native-addon.js';
import { adoptIntoBackground } from './background.js';

interface Addon {
  spawn(file: string, argv: readonly string[], fds: readonly [number, number, number]): number;
  spawnAsync(file: string, argv: readonly string[], fds: readonly [number, number, number]): Promise<number>;
  reap(pid: number): ExitStatus | null;
  pipe(): [number, number];
  closeFd(fd: number): void;
  mkfifo(path: string, mode: number): void;
  sealedCopy(path: string): number;
}

/** ExitStatus is how a helper ended: an exit code, or the signal that killed it. */
export interface ExitStatus {
  code: number | null;
  signal: number | null;
}

/** Helper is a started helper process: its pid, its stdout and stderr, and its end. */
export interface Helper {
  readonly pid: number;
  readonly stdout: Readable;
  readonly stderr: Readable;
  readonly exited: Promise<ExitStatus>;
}

const addon = (): Addon => loadNativeAddon<Addon>('runtime');
const running = new Map<number, (status: ExitStatus) => void>();
const resolved = new Map<string, string>();

// While helpers run, this timer keeps the event loop alive (a signal listener does not) and reaps as a fallback.
let keepAlive: NodeJS.Timeout | null = null;

// Reaps the helpers started here that have ended (waitpid on their pids only: Node's own children stay Node's).
function reapEnded(): void {
  for (const [pid, done] of running) {
    const status = addon().reap(pid);
    if (status) {
      running.delete(pid);
      done(status);
    }
  }
  if (running.size === 0 && keepAlive) {
    clearInterval(keepAlive);
    keepAlive = null;
  }
}

/**
 * SpawnOptions: `background` marks a helper of background work (a refill's, a wipe's), moved into the background cgroup
 * (background.ts) as soon as it is spawned.
 */
export interface SpawnOptions {
  background?: boolean;
}

/**
 * spawnHelper starts argv[0] (an absolute path, or a name looked up like findExecutable) with posix_spawn, which does
 * not copy the agent's page tables: Node's spawn forks the whole agent, which cost its event loop 5–20 ms per helper
 * on these VMs. stdin is `stdinFd` (or /dev/null); stdout and stderr are pipes the caller must read or destroy.
 */
export function spawnHelper(argv: readonly string[], stdinFd = -1, options: SpawnOptions = {}): Helper {
  const { file, outRead, outWrite, errRead, errWrite } = helperPipes(argv);
  let pid: number;
  try {
    pid = addon().spawn(file, argv, [stdinFd, outWrite, errWrite]);
  } catch (e) {
    closeBoth(outRead, errRead);
    throw e;
  } finally {
    closeBoth(outWrite, errWrite);
  }
  if (options.background) adoptIntoBackground(pid);
  return started(pid, outRead, errRead);
}

/**
 * spawnHelperAsync is spawnHelper from the libuv thread pool: posix_spawn suspends its calling thread until the child
 * has exec'd (CLONE_VFORK), a millisecond or more per runtime start on a loaded host, which the agent's thread spent
 * blocked in every prepare. `stdinFd` must stay open until the promise settles. A background helper is adopted only
 * once the spawn's completion is back on the agent's thread, its first moments at normal weight; spawnHelper adopts
 * one in the tick it is spawned (background.ts says which helpers need that).
 */
export async function spawnHelperAsync(argv: readonly string[], stdinFd = -1, options: SpawnOptions = {}): Promise<Helper> {
  const { file, outRead, outWrite, errRead, errWrite } = helperPipes(argv);
  let pid: number;
  try {
    pid = await addon().spawnAsync(file, argv, [stdinFd, outWrite, errWrite]);
  } catch (e) {
    closeBoth(outRead, errRead);
    throw e;
  } finally {
    closeBoth(outWrite, errWrite);
  }
  if (options.background) adoptIntoBackground(pid);
  return started(pid, outRead, errRead);
}

// The executable to start and the helper's stdout and stderr pipes (both ends close-on-exec; the child gets dups).
function helperPipes(argv: readonly string[]): { file: string; outRead: number; outWrite: number; errRead: number; errWrite: number } {
  const [cmd] = argv;
  if (!cmd) throw new Error('spawnHelper: empty argv');
  let file = cmd.startsWith('/') ? cmd : resolved.get(cmd);
  if (!file) resolved.set(cmd, (file = findExecutable(cmd)));
  if (!process.listeners('SIGCHLD').includes(reapEnded)) process.on('SIGCHLD', reapEnded); // before any child can end
  const a = addon();
  const [outRead, outWrite] = a.pipe();
  let errPipe: [number, number];
  try {
    errPipe = a.pipe();
  } catch (e) {
    closeBoth(outRead, outWrite);
    throw e;
  }
  return { file, outRead, outWrite, errRead: errPipe[0], errWrite: errPipe[1] };
}

function closeBoth(a: number, b: number): void {
  addon().closeFd(a);
  addon().closeFd(b);
}

// Registers a started helper for reaping and wraps its pipes.
function started(pid: number, outRead: number, errRead: number): Helper {
  const exited = new Promise<ExitStatus>((resolve) => running.set(pid, resolve));
  keepAlive ??= setInterval(reapEnded, 500);
  setImmediate(reapEnded); // a child that ended before it was registered: its SIGCHLD found nothing to reap
  return { pid, stdout: new Socket({ fd: outRead, readable: true, writable: false }), stderr: new Socket({ fd: errRead, readable: true, writable: false }), exited };
}

/** makeFifo creates a FIFO with exactly `mode` (the cell's control channel), without spawning `mkfifo`. */
export function makeFifo(path: string, mode: number): void {
  addon().mkfifo(path, mode);
}

/**
 * sealedExecutable copies an executable into a sealed memfd that this process keeps open for its lifetime, and returns
 * the path to run it by (/proc/<pid>/fd/<fd>). Children run the copy: a later change to the file on disk does not
 * reach them, and runc, seeing itself sealed, skips cloning itself for every container.
 */
export function sealedExecutable(path: string): string {
  const fd = addon().sealedCopy(path);
  return `/proc/${process.pid}/fd/${fd}`;
}

/** findExecutable returns the first executable `name` on PATH (then the sbin directories); throws if there is none. */
export function findExecutable(name: string): string {
  const dirs = [...(process.env.PATH ?? '').split(':'), '/usr/local/sbin', '/usr/sbin', '/sbin'].filter((d) => d.startsWith('/'));
  for (const dir of dirs) {
    const candidate = join(dir, name);
    try {
      accessSync(candidate, constants.X_OK);
      return candidate;
    } catch {
      // not here
    }
  }
  throw new Error(`${name} not found on PATH or in /usr/sbin`);
}
