/**
 * What crun needs of the host. crun 1.8 refuses a host whose cgroup v2 hierarchy holds any controller while cgroup v1
 * hierarchies are mounted too ("cgroups in hybrid mode not supported, drop all controllers from cgroupv2"). On these
 * hosts the only such controller is hugetlb, which no cell limits: giving it its own v1 hierarchy (as every other
 * controller already has) empties cgroup v2 of controllers, and runc and runsc keep working as before.
 */
import { existsSync, mkdirSync, readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { run } from '../exec.js';
import { findExecutable } from './host-calls.js';

const ROOT = '/sys/fs/cgroup';
const UNIFIED = join(ROOT, 'unified');

/** CrunHost is whether crun can run cells here, and why not. */
export type CrunHost = { ok: true; binary: string; moved: string[] } | { ok: false; reason: string };

/** v2Controllers lists the controllers the cgroup v2 hierarchy holds in a hybrid layout ([] when it holds none). */
export function v2Controllers(): string[] {
  const file = join(UNIFIED, 'cgroup.controllers');
  return existsSync(file) ? readFileSync(file, 'utf8').trim().split(/\s+/).filter(Boolean) : [];
}

/** prepareCrunHost finds crun and moves any controller out of a hybrid host's cgroup v2 hierarchy (idempotent). */
export async function prepareCrunHost(): Promise<CrunHost> {
  let binary: string;
  try {
    binary = findExecutable('crun');
  } catch {
    return { ok: false, reason: 'crun is not installed (Debian package crun)' };
  }
  const hybrid = existsSync(UNIFIED) && readdirSync(ROOT).some((d) => d !== 'unified' && existsSync(join(ROOT, d, 'cgroup.procs')));
  const moved: string[] = [];
  if (hybrid) {
    for (const controller of v2Controllers()) {
      if (controller !== 'hugetlb') return { ok: false, reason: `cgroup v2 holds the ${controller} controller in a hybrid layout; crun needs it empty` };
      const dir = join(ROOT, controller);
      try {
        mkdirSync(dir, { recursive: true });
        await run(['mount', '-t', 'cgroup', '-o', controller, 'cgroup', dir]);
        moved.push(controller);
      } catch (e) {
        return { ok: false, reason: `could not give ${controller} its own cgroup v1 hierarchy: ${(e as Error).message}` };
      }
    }
    if (v2Controllers().length > 0) return { ok: false, reason: `cgroup v2 still holds ${v2Controllers().join(', ')}` };
  }
  return { ok: true, binary, moved };
}
