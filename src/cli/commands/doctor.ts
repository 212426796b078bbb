/** `cleanroom doctor`: can this host run cells? Runtimes, cgroups, user namespaces, encrypted volumes. */
import type { Command } from 'commander';
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { checkStorageSupport } from '../../agent/storage/doctor.js';
import { checkImageRootSupport } from '../../agent/images/image-support.js';
import { printJson, UsageError } from '../context.js';
import { printTable } from './jobs.js';

interface Check {
  name: string;
  ok: boolean;
  detail: string;
}

/** registerDoctor adds `doctor`. */
export function registerDoctor(program: Command): void {
  program
    .command('doctor')
    .description('check that this host can run confined cells with encrypted storage (run as root)')
    .option('--json', 'JSON output')
    .action(async (opts: { json?: boolean }) => {
      if (process.getuid?.() !== 0) throw new UsageError('cleanroom doctor must run as root');
      const checks: Check[] = [
        version('runc', ['runc', '--version']),
        version('runsc (gVisor)', ['runsc', '--version']),
        version('tini (subreaper)', ['tini', '--version']),
        { name: 'cgroup v1 memory, cpu, pids', ok: ['memory', 'cpu', 'pids'].every((c) => existsSync(`/sys/fs/cgroup/${c}/tasks`)), detail: '/sys/fs/cgroup/{memory,cpu,pids}' },
        { name: 'user namespaces', ok: Number(readFileSync('/proc/sys/user/max_user_namespaces', 'utf8')) > 0, detail: 'user.max_user_namespaces > 0' },
        ...(await checkStorageSupport()).checks.map((c) => ({ name: `storage: ${c.name}`, ok: c.ok, detail: c.detail })),
        { name: 'image roots (idmapped layers + overlay)', ...checkImageRootSupport() },
      ];
      const ok = checks.every((c) => c.ok);
      if (opts.json) printJson({ ok, checks });
      else {
        printTable(['CHECK', 'OK', 'DETAIL'], checks.map((c) => [c.name, c.ok ? 'yes' : 'NO', c.detail]));
        process.stdout.write(ok ? '\nThis host can run Cleanroom cells.\n' : '\nThis host cannot run Cleanroom cells; fix the checks marked NO.\n');
      }
      if (!ok) process.exitCode = 1;
    });
}

function version(name: string, argv: string[]): Check {
  try {
    const out = execFileSync(argv[0]!, argv.slice(1), { stdio: ['ignore', 'pipe', 'ignore'] }).toString().split('\n')[0] ?? '';
    return { name, ok: true, detail: out.trim() };
  } catch {
    return { name, ok: false, detail: `${argv[0]} not found: apt-get install ${argv[0]}` };
  }
}
