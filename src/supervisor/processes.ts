/** Starts and stops the control plane and agent processes of one data directory. */
import { spawn, execFile, execFileSync, type ChildProcess } from 'node:child_process';
import { existsSync, openSync, readdirSync, readFileSync, rmSync, writeFileSync, closeSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { DataPathSet } from '../shared/paths.js';
import type { Account } from './bootstrap.js';
import { AGENT_THREAD_POOL_SIZE } from '../agent/thread-pool-size.js';

const DIST_SRC = join(dirname(fileURLToPath(import.meta.url)), '..');

/** ProcessName names the two long-running processes. */
export type ProcessName = 'control' | 'agent';

/** pidFile is where a process's pid is kept while it runs. */
export function pidFile(paths: DataPathSet, name: ProcessName): string {
  return join(paths.run.dir, `${name}.pid`);
}

/** logFile is where a process's log goes. */
export function logFile(paths: DataPathSet, name: ProcessName): string {
  return join(paths.run.dir, `${name}.log`);
}

/** runningPid returns the pid of a live process of ours for this data directory, or null. */
export function runningPid(paths: DataPathSet, name: ProcessName): number | null {
  const f = pidFile(paths, name);
  if (!existsSync(f)) return null;
  const pid = Number(readFileSync(f, 'utf8').trim());
  try {
    const cmdline = readFileSync(`/proc/${pid}/cmdline`, 'utf8');
    return cmdline.includes(paths.dataDir) ? pid : null;
  } catch {
    return null;
  }
}

/** startProcesses spawns those of the control plane (as `account`) and the agent (as root, under a subreaper) that are not running. */
export function startProcesses(paths: DataPathSet, account: Account, detach: boolean): Partial<Record<ProcessName, ChildProcess>> {
  const launch = (name: ProcessName, argv: string[], extra: { uid?: number; gid?: number; env?: NodeJS.ProcessEnv }) => {
    const log = openSync(logFile(paths, name), 'a', 0o600);
    const child = spawn(argv[0]!, argv.slice(1), { ...extra, detached: detach, stdio: ['ignore', log, log] });
    closeSync(log);
    writeFileSync(pidFile(paths, name), String(child.pid));
    if (detach) child.unref();
    return child;
  };
  const node = process.execPath;
  const started: Partial<Record<ProcessName, ChildProcess>> = {};
  if (runningPid(paths, 'control') === null) {
    started.control = launch('control', [node, join(DIST_SRC, 'control/main.js'), '--data-dir', paths.dataDir], { uid: account.uid, gid: account.gid });
  }
  if (runningPid(paths, 'agent') === null) {
    // tini -s: the agent's orphans (container inits after `runc create` exits) are reaped at once.
    const agentArgv = [node, ...(process.env.CR_PROF ? ['--cpu-prof', '--cpu-prof-dir=' + process.env.CR_PROF] : []), join(DIST_SRC, 'agent/main.js'), '--data-dir', paths.dataDir];
    // The pool size must be in the environment Node starts with (thread-pool-size.ts); an operator's own setting wins.
    const env = { ...process.env, UV_THREADPOOL_SIZE: process.env.UV_THREADPOOL_SIZE ?? String(AGENT_THREAD_POOL_SIZE) };
    started.agent = launch('agent', hasTini() ? ['tini', '-s', '--', ...agentArgv] : agentArgv, { env });
  }
  return started;
}

/** stopProcess sends SIGTERM, waits up to `timeoutMs`, then SIGKILLs it and every process under it, and waits for
 *  them to be gone; returns whether it had to kill. */
export async function stopProcess(paths: DataPathSet, name: ProcessName, timeoutMs: number): Promise<boolean> {
  const pid = runningPid(paths, name);
  if (pid === null) {
    rmSync(pidFile(paths, name), { force: true });
    return false;
  }
  signal(pid, 'SIGTERM');
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (!isAlive(pid)) {
      rmSync(pidFile(paths, name), { force: true });
      return false;
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  // The pid is the agent's subreaper (tini): killing only it would leave the agent itself running.
  const all = [pid, ...descendants(pid)];
  for (const p of all) signal(p, 'SIGKILL');
  const killDeadline = Date.now() + KILL_WAIT_MS;
  while (all.some(isAlive) && Date.now() < killDeadline) await new Promise((r) => setTimeout(r, 20));
  rmSync(pidFile(paths, name), { force: true });
  return true;
}

/** KILL_WAIT_MS bounds the wait for SIGKILLed processes to be gone (a process in uninterruptible sleep can linger). */
const KILL_WAIT_MS = 10_000;
/** RECONCILE_TIMEOUT_MS bounds `cleanroom down`'s own reconcile. */
const RECONCILE_TIMEOUT_MS = 120_000;

/** StopResult says which processes had to be killed and what the host still holds afterwards. */
export interface StopResult {
  forced: ProcessName[];
  /** Host objects the final reconcile could not remove (empty when the host is clean). */
  leftovers: string[];
  /** What the final reconcile found and removed (a dead or killed agent's cells). */
  reconciled: { containers: number; killed: number; cgroups: number; wiped: number; netns: number; links: number };
}

/**
 * stopAll stops the agent first (it wipes its cells and reports their jobs' ends), then runs the agent's own reconcile
 * for whatever a dead, killed or crashed agent left on the host, then stops the control plane.
 */
export async function stopAll(paths: DataPathSet, timeouts = { agentMs: 30_000, controlMs: 10_000 }): Promise<StopResult> {
  const forced: ProcessName[] = [];
  if (await stopProcess(paths, 'agent', timeouts.agentMs)) forced.push('agent');
  const result = await reconcileHost(paths);
  if (await stopProcess(paths, 'control', timeouts.controlMs)) forced.push('control');
  return { forced, ...result };
}

/** reconcileHost runs `agent --reconcile` for this data directory: the agent's start-up clean-up, with no agent left. */
async function reconcileHost(paths: DataPathSet): Promise<Omit<StopResult, 'forced'>> {
  const empty = { containers: 0, killed: 0, cgroups: 0, wiped: 0, netns: 0, links: 0 };
  if (!existsSync(paths.agent.id)) return { leftovers: [], reconciled: empty };
  const argv = [join(DIST_SRC, 'agent/main.js'), '--data-dir', paths.dataDir, '--reconcile'];
  const { code, stdout, stderr } = await new Promise<{ code: number; stdout: string; stderr: string }>((resolve) => {
    execFile(process.execPath, argv, { timeout: RECONCILE_TIMEOUT_MS, maxBuffer: 16 * 1024 * 1024 }, (err, stdout, stderr) => {
      resolve({ code: err ? (typeof err.code === 'number' ? err.code : -1) : 0, stdout, stderr });
    });
  });
  const line = stdout.split('\n').find((l) => l.startsWith('{"containers"'));
  if (!line) return { leftovers: [`reconcile failed (exit ${code}): ${(stderr.trim().split('\n').at(-1) ?? '').slice(0, 500)}`], reconciled: empty };
  const r = JSON.parse(line) as { containers: string[]; killed: string[]; cgroups: string[]; wiped: number; netns: number; links: number; leftovers: Array<{ kind: string; id: string; error: string }> };
  return {
    leftovers: r.leftovers.map((l) => `${l.kind} ${l.id}: ${l.error}`),
    reconciled: { containers: r.containers.length, killed: r.killed.length, cgroups: r.cgroups.length, wiped: r.wiped, netns: r.netns, links: r.links },
  };
}

/** descendants lists every process under pid, children first found breadth-first. */
function descendants(pid: number): number[] {
  const out: number[] = [];
  const queue = [pid];
  while (queue.length > 0) {
    const p = queue.shift()!;
    let tasks: string[] = [];
    try {
      tasks = readdirSync(`/proc/${p}/task`);
    } catch {
      continue;
    }
    for (const t of tasks) {
      try {
        for (const c of readFileSync(`/proc/${p}/task/${t}/children`, 'utf8').trim().split(/\s+/)) {
          if (c) {
            out.push(Number(c));
            queue.push(Number(c));
          }
        }
      } catch {
        /* exited meanwhile */
      }
    }
  }
  return out;
}

function signal(pid: number, sig: NodeJS.Signals): void {
  try {
    process.kill(pid, sig);
  } catch {
    /* already gone */
  }
}

function isAlive(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return !/\) Z /.test(stat);
  } catch {
    return false;
  }
}

function hasTini(): boolean {
  try {
    execFileSync('tini', ['--version'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}
