// bench/baselines.ts: the bare costs our figures are compared with, measured in the same run on the same host.
// A bare `runc run` / `runsc run` of `/bin/echo hi` uses a bundle equivalent to a cell's: the same shared read-only
// rootfs (built by the agent's own buildRootfs), and the same spec (cellSpec: mounts, user namespace with a private
// uid range, seccomp allowlist, cgroup limits, masked paths), with the workload as the container's process.
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chmodSync, chownSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { buildRootfs } from '../src/agent/runtime/rootfs.js';
import { cellSpec, UID_RANGE_SIZE, WORKLOAD_UID } from '../src/agent/runtime/spec.js';
import { CellCgroup } from '../src/agent/cells/cgroup.js';
import { REPO_ROOT } from '../test/support/cluster.js';

/** COMMAND is what every baseline and every benchmark job runs. */
export const COMMAND = ['/bin/echo', 'hi'];

/** ProcessTiming is one spawned process: spawn → first stdout byte, and spawn → exit with stdio closed. */
export interface ProcessTiming {
  firstByteMs: number;
  exitMs: number;
}

/** Host uids just below the agents' ranges (which start at 2^24): never shared with a live cell. */
const BENCH_UID_BASE = 2 ** 24 - UID_RANGE_SIZE;

/** BareBundles holds a cell-equivalent bundle per runtime in a scratch directory; close() removes it. */
export class BareBundles {
  private readonly tag = randomBytes(3).toString('hex');
  private seq = 0;

  private constructor(readonly dir: string) {}

  /** create builds the shared rootfs and one bundle for each runtime. */
  static create(): BareBundles {
    const dir = mkdtempSync('/var/tmp/cleanroom-bench-bare-');
    // 0711 on the way down: the runtime resolves bind-mount sources as the cell's unmapped root.
    chmodSync(dir, 0o711);
    buildRootfs(join(dir, 'rootfs'), join(REPO_ROOT, 'build/cell-init'), '');
    const hostUid = BENCH_UID_BASE + WORKLOAD_UID;
    for (const runtime of ['runc', 'runsc'] as const) {
      const bundle = join(dir, runtime);
      mkdirSync(bundle, { mode: 0o711 });
      for (const d of ['work', 'tmp', 'state']) mkdirSync(join(bundle, d), { mode: d === 'state' ? 0o700 : 0o755 });
      for (const d of ['work', 'tmp']) chownSync(join(bundle, d), hostUid, hostUid);
      chmodSync(join(bundle, 'tmp'), 0o1777);
    }
    return new BareBundles(dir);
  }

  /** run starts `runtime run` of COMMAND in a fresh container (own cgroup) and times it. */
  async run(runtime: 'runc' | 'runsc'): Promise<ProcessTiming> {
    const bundle = join(this.dir, runtime);
    const name = `crbench-${this.tag}-${this.seq++}`;
    const cgroup = new CellCgroup(name);
    const spec = cellSpec({
      runtime,
      rootfs: join(this.dir, 'rootfs'),
      workDir: join(bundle, 'work'),
      tmpDir: join(bundle, 'tmp'),
      hostUidBase: BENCH_UID_BASE,
      cgroupsPath: cgroup.path,
      netnsPath: null,
      memoryBytes: 512 * 2 ** 20,
      cpuMillis: 1000,
      pids: runtime === 'runsc' ? 1024 : 256,
      nofile: 1024,
    });
    (spec.process as { args: string[] }).args = COMMAND;
    writeFileSync(join(bundle, 'config.json'), JSON.stringify(spec), { mode: 0o600 });
    // The same global flags the agent's OciRuntime passes.
    const flags = ['--root', join(bundle, 'state'), ...(runtime === 'runsc' ? ['--platform=ptrace', '--network=none', '--oci-seccomp'] : [])];
    try {
      return await timeProcess(runtime, [...flags, 'run', '--bundle', bundle, name]);
    } finally {
      cgroup.remove();
    }
  }

  /** close removes the scratch directory. */
  close(): void {
    rmSync(this.dir, { recursive: true, force: true });
  }
}

/** forkExec times a plain host fork+exec of COMMAND. */
export function forkExec(): Promise<ProcessTiming> {
  return timeProcess(COMMAND[0]!, COMMAND.slice(1));
}

/** timeProcess spawns argv and times its first stdout byte and its end; rejects unless it printed "hi" and exited 0. */
function timeProcess(cmd: string, args: string[]): Promise<ProcessTiming> {
  return new Promise((resolve, reject) => {
    const t0 = performance.now();
    let firstByteMs = Number.NaN;
    let out = '';
    let err = '';
    const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    child.stdout.on('data', (d: Buffer) => {
      if (Number.isNaN(firstByteMs)) firstByteMs = performance.now() - t0;
      out += d.toString('utf8');
    });
    child.stderr.on('data', (d: Buffer) => (err += d.toString('utf8')));
    child.on('error', reject);
    child.on('close', (code) => {
      const exitMs = performance.now() - t0;
      if (code === 0 && out === 'hi\n') resolve({ firstByteMs, exitMs });
      else reject(new Error(`${cmd} ${args.join(' ')} exited ${code} with output ${JSON.stringify(out)}: ${err.trim().slice(0, 500)}`));
    });
  });
}
