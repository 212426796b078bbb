/** `cleanroom doctor`: can this host run cells? Runtimes, cgroups, user namespaces, encrypted volumes. */
import type { Command } from 'commander';
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { checkStorageSupport } from '../../agent/storage/doctor.js';
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
        optional(version('crun', ['crun', '--version']), 'not installed: the agent offers runc and runsc only (apt-get install crun)'),
        crunCgroups(),
        version('tini (subreaper)', ['tini', '--version']),
        { name: 'cgroup v1 memory, cpu, pids', ok: ['memory', 'cpu', 'pids'].every((c) => existsSync(`/sys/fs/cgroup/${c}/tasks`)), detail: '/sys/fs/cgroup/{memory,cpu,pids}' },
        { name: 'user namespaces', ok: Number(readFileSync('/proc/sys/user/max_user_namespaces', 'utf8')) > 0, detail: 'user.max_user_namespaces > 0' },
        ...(await checkStorageSupport()).checks.map((c) => ({ name: `storage: ${c.name}`, ok: c.ok, detail: c.detail })),
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

/** optional turns a failed check into a note: the host can run cells without it. */
function optional(c: Check, note: string): Check {
  return c.ok ? c : { ...c, ok: true, detail: note };
}

/** crunCgroups: crun refuses a hybrid host whose cgroup v2 holds controllers; the agent moves hugetlb (the usual one) out. */
function crunCgroups(): Check {
  const file = '/sys/fs/cgroup/unified/cgroup.controllers';
  const held = existsSync(file) ? readFileSync(file, 'utf8').trim().split(/\s+/).filter(Boolean) : [];
  const other = held.filter((c) => c !== 'hugetlb');
  const detail = held.length === 0 ? 'cgroup v2 holds no controller' : other.length === 0 ? 'hugetlb is on cgroup v2; the agent gives it a v1 hierarchy at start' : `cgroup v2 holds ${other.join(', ')}: crun cells are left out`;
  return { name: 'crun: hybrid cgroup layout', ok: other.length === 0, detail };
}

function version(name: string, argv: string[]): Check {
  try {
    const out = execFileSync(argv[0]!, argv.slice(1), { stdio: ['ignore', 'pipe', 'ignore'] }).toString().split('\n')[0] ?? '';
    return { name, ok: true, detail: out.trim() };
  } catch {
    return { name, ok: false, detail: `${argv[0]} not found: apt-get install ${argv[0]}` };
  }
}
