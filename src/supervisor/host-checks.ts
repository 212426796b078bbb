/**
 * Host checks behind `cleanroom doctor`: can this host run the cells of this build? Runtimes, cgroups, user namespaces,
 * encrypted volumes, image roots. Here, beside the process supervisor, because the checks are the agent's own (its
 * storage and image-root probes): the CLI reaches other planes only through the supervisor.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { checkStorageSupport } from '../agent/storage/doctor.js';
import { checkImageRootSupport } from '../agent/images/image-support.js';

/** HostCheck is one check's outcome; `detail` says what was seen or what to install. */
export interface HostCheck {
  name: string;
  ok: boolean;
  detail: string;
}

/** hostChecks runs every check (as root: the storage and image-root probes mount scratch filesystems). */
export async function hostChecks(): Promise<HostCheck[]> {
  return [
    version('runc', ['runc', '--version']),
    version('runsc (gVisor)', ['runsc', '--version']),
    optional(version('crun', ['crun', '--version']), 'not installed: the agent offers runc and runsc only (apt-get install crun)'),
    crunCgroups(),
    version('tini (subreaper)', ['tini', '--version']),
    { name: 'cgroup v1 memory, cpu, pids', ok: ['memory', 'cpu', 'pids'].every((c) => existsSync(`/sys/fs/cgroup/${c}/tasks`)), detail: '/sys/fs/cgroup/{memory,cpu,pids}' },
    { name: 'user namespaces', ok: Number(readFileSync('/proc/sys/user/max_user_namespaces', 'utf8')) > 0, detail: 'user.max_user_namespaces > 0' },
    ...(await checkStorageSupport()).checks.map((c) => ({ name: `storage: ${c.name}`, ok: c.ok, detail: c.detail })),
    { name: 'image roots (idmapped layers + overlay)', ...checkImageRootSupport() },
  ];
}

/** optional turns a failed check into a note: the host can run cells without it. */
function optional(c: HostCheck, note: string): HostCheck {
  return c.ok ? c : { ...c, ok: true, detail: note };
}

/** crunCgroups: crun refuses a hybrid host whose cgroup v2 holds controllers; the agent moves hugetlb (the usual one) out. */
function crunCgroups(): HostCheck {
  const file = '/sys/fs/cgroup/unified/cgroup.controllers';
  const held = existsSync(file) ? readFileSync(file, 'utf8').trim().split(/\s+/).filter(Boolean) : [];
  const other = held.filter((c) => c !== 'hugetlb');
  const detail = held.length === 0 ? 'cgroup v2 holds no controller' : other.length === 0 ? 'hugetlb is on cgroup v2; the agent gives it a v1 hierarchy at start' : `cgroup v2 holds ${other.join(', ')}: crun cells are left out`;
  return { name: 'crun: hybrid cgroup layout', ok: other.length === 0, detail };
}

function version(name: string, argv: string[]): HostCheck {
  try {
    const out = execFileSync(argv[0]!, argv.slice(1), { stdio: ['ignore', 'pipe', 'ignore'] }).toString().split('\n')[0] ?? '';
    return { name, ok: true, detail: out.trim() };
  } catch {
    return { name, ok: false, detail: `${argv[0]} not found: apt-get install ${argv[0]}` };
  }
}
