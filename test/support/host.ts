/** Host inspection helpers for tests: what a cell left behind, and polling. */
import { execFileSync } from 'node:child_process';
import { readdirSync, readFileSync, existsSync } from 'node:fs';
import { join } from 'node:path';
import type { TestCluster } from './cluster.js';
import { cellNames, hubNetnsName } from '../../src/agent/network/names.js';
import { RUNTIMES } from '../../src/shared/wire.js';

/** leftovers lists host objects that still mention any of the cells. */
export function leftovers(c: TestCluster, cellIds: string[]): string[] {
  const names = cellIds.map((id) => `cr-${c.agentId}-${id}`);
  const found: string[] = [];
  for (const ctrl of readdirSync('/sys/fs/cgroup')) {
    for (const n of names) if (existsSync(join('/sys/fs/cgroup', ctrl, n))) found.push(`cgroup ${ctrl}/${n}`);
  }
  for (const id of cellIds) if (existsSync(join(c.dataDir, 'agent', 'cells', id))) found.push(`dir cells/${id}`);
  const hubLinks = agentHubLinks(`cr${c.agentId}`);
  for (const id of cellIds) {
    const n = cellNames(`cr${c.agentId}`, id);
    if (existsSync(`/run/netns/${n.netns}`)) found.push(`netns ${n.netns}`);
    if (existsSync(`/sys/class/net/${n.hostIf}`)) found.push(`veth ${n.hostIf}`);
    if (hubLinks.includes(n.hostIf)) found.push(`veth ${n.hostIf} in the hub`);
  }
  for (const rt of RUNTIMES) for (const n of names) if (existsSync(join(c.dataDir, 'agent', rt, n))) found.push(`${rt} state ${n}`);
  const mounts = readFileSync('/proc/self/mountinfo', 'utf8');
  for (const id of cellIds) if (mounts.includes(id)) found.push(`mount of ${id}`);
  for (const pid of readdirSync('/proc').filter((p) => /^\d+$/.test(p))) {
    try {
      const cmd = readFileSync(`/proc/${pid}/cmdline`, 'utf8');
      for (const n of names) if (cmd.includes(n)) found.push(`process ${pid}`);
    } catch {
      /* exited meanwhile */
    }
  }
  return found;
}

/** agentHubLinks lists the interfaces in an agent's hub netns (where cells' host-side veths live); none without a hub. */
export function agentHubLinks(prefix: string): string[] {
  const hub = hubNetnsName(prefix);
  if (!existsSync(`/run/netns/${hub}`)) return [];
  const out = execFileSync('ip', ['-n', hub, '-j', 'link', 'show'], { encoding: 'utf8' });
  return (JSON.parse(out) as Array<{ ifname: string }>).map((l) => l.ifname);
}

/** VolumeMarker is what a volume's marker (`<volumes>/<id>.cell`) says. */
export interface VolumeMarker {
  volumeId: string;
  cellId: string;
}

/**
 * volumeOfCell finds the volume of a cell through the markers in an agent's volumes directory. A marker being claimed
 * right now by a prepare is empty for a moment (created, then written): it is skipped, not a failure.
 */
export function volumeOfCell(volumesDir: string, cellId: string): VolumeMarker {
  for (const f of readdirSync(volumesDir).filter((n) => n.endsWith('.cell'))) {
    let m: Partial<VolumeMarker>;
    try {
      m = JSON.parse(readFileSync(join(volumesDir, f), 'utf8')) as Partial<VolumeMarker>;
    } catch {
      continue;
    }
    if (m.cellId === cellId && typeof m.volumeId === 'string') return { volumeId: m.volumeId, cellId };
  }
  throw new Error(`no volume for cell ${cellId} in ${volumesDir}`);
}

/** cellWorkDir finds the host path of a running cell's /work in its agent's data directory (its encrypted volume, unlocked
 *  while the cell lives): a test writes there what the cell waits for. */
export function cellWorkDir(dataDir: string, cellId: string): string {
  const dir = join(dataDir, 'agent', 'volumes');
  return join(dir, `${volumeOfCell(dir, cellId).volumeId}.mnt`, 'data', 'work');
}

/** waitFor polls until cond is true or throws after timeoutMs, with describe()'s account of what is wrong if given. */
export async function waitFor(cond: () => Promise<boolean> | boolean, timeoutMs = 20_000, describe?: () => string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await cond())) {
    if (Date.now() > deadline) throw new Error(`condition not met in ${timeoutMs} ms${describe ? `: ${describe()}` : ''}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** until polls get() until ok(value) or timeoutMs passes, and returns the last value (the caller asserts on it, with its details). */
export async function until<T>(get: () => T | Promise<T>, ok: (value: T) => boolean, timeoutMs = 20_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await get();
    if (ok(value) || Date.now() > deadline) return value;
    await new Promise((r) => setTimeout(r, 50));
  }
}
