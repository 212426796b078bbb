/** Starts and stops the control plane and agent processes of one data directory. */
import { spawn, execFileSync, type ChildProcess } from 'node:child_process';
import { existsSync, openSync, readFileSync, rmSync, writeFileSync, closeSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { DataPathSet } from '../shared/paths.js';
import type { Account } from './bootstrap.js';

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
  const launch = (name: ProcessName, argv: string[], extra: { uid?: number; gid?: number }) => {
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
    started.agent = launch('agent', hasTini() ? ['tini', '-s', '--', ...agentArgv] : agentArgv, {});
  }
  return started;
}

/** stopProcess sends SIGTERM, waits up to `timeoutMs`, then SIGKILL; returns whether it had to kill. */
export async function stopProcess(paths: DataPathSet, name: ProcessName, timeoutMs: number): Promise<boolean> {
  const pid = runningPid(paths, name);
  if (pid === null) return false;
  process.kill(pid, 'SIGTERM');
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (!isAlive(pid)) {
      rmSync(pidFile(paths, name), { force: true });
      return false;
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  process.kill(pid, 'SIGKILL');
  rmSync(pidFile(paths, name), { force: true });
  return true;
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
