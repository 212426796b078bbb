// bench/machine.ts: what the figures were measured on (cores, memory, kernel, runtime versions).
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { cpus, release, totalmem } from 'node:os';

/** Machine describes the host a run was taken on. */
export interface Machine {
  cores: number;
  cpu_model: string;
  memory_mib: number;
  kernel: string;
  runc: string;
  runsc: string;
  node: string;
}

/** describeMachine reads the host facts; a runtime that cannot report its version says why. */
export function describeMachine(): Machine {
  return {
    cores: cpus().length,
    cpu_model: cpus()[0]?.model ?? 'unknown',
    memory_mib: Math.round(totalmem() / 2 ** 20),
    kernel: release(),
    runc: firstLine('runc', ['--version']),
    runsc: firstLine('runsc', ['--version']),
    node: process.version,
  };
}

/** memAvailableMiB reads the host's MemAvailable from /proc/meminfo. */
export function memAvailableMiB(): number {
  const kib = Number(/^MemAvailable:\s+(\d+) kB$/m.exec(readFileSync('/proc/meminfo', 'utf8'))?.[1]);
  if (!Number.isFinite(kib)) throw new Error('no MemAvailable in /proc/meminfo');
  return kib / 1024;
}

function firstLine(cmd: string, args: string[]): string {
  try {
    return execFileSync(cmd, args, { encoding: 'utf8' }).split('\n')[0]?.trim() ?? '';
  } catch (e) {
    return `unavailable: ${(e as Error).message}`;
  }
}
