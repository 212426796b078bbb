// bench/baselines.ts: the bare costs our figures are compared with, measured in the same run on the same host, each
// launched the way the agent launches the same thing (LAUNCH says how, and goes into the results):
// - every process starts with posix_spawn from the agent's runtime addon (spawnHelper), not Node's fork-based spawn;
// - runc and crun are sealed in-memory copies, as the agent runs them (sealedExecutable), with the agent's global flags;
// - runsc gets the agent's flags (runtimeFlags: --network=sandbox, ptrace, --oci-seccomp) and, as a cell's sandbox does,
//   a network namespace made beforehand (outside the timing, as a warm cell's is) and /proc/sys/net hidden.
// A bare `runc run` / `runsc run` of `/bin/echo hi` uses a bundle equivalent to a cell's: the same shared read-only
// rootfs (built by the agent's own buildRootfs), and the same spec (cellSpec: mounts, user namespace with a private
// uid range, seccomp allowlist, cgroup limits, masked paths), with the workload as the container's process.
import { execFileSync, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chmodSync, chownSync, copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import type { Runtime } from '../src/shared/wire.js';
import { join } from 'node:path';
import { buildRootfs } from '../src/agent/runtime/rootfs.js';
import { cellSpec, UID_RANGE_SIZE, WORKLOAD_UID } from '../src/agent/runtime/spec.js';
import { CellCgroup } from '../src/agent/cells/cgroup.js';
import { findExecutable, sealedExecutable, spawnHelper } from '../src/agent/runtime/host-calls.js';
import { runtimeFlags, withNetSysctlsHidden } from '../src/agent/runtime/oci-runtime.js';
import { REPO_ROOT } from '../test/support/cluster.js';

/** LAUNCH describes how each baseline is started (recorded in the results). */
export const LAUNCH = {
  spawn: 'posix_spawn from the agent\'s runtime addon (spawnHelper), as the agent starts runc, runsc and mkfs',
  fork_exec: '/bin/echo hi, posix_spawn (the agent\'s spawn path)',
  fork_exec_node_spawn: '/bin/echo hi with Node\'s child_process.spawn (stdio ignore/pipe/pipe), timed to its first stdout byte: what an application developer starting a process from Node pays (the bench\'s host fork+exec before commit c11784b)',
  runc: 'runc run of a cell-equivalent bundle: the sealed memfd copy of runc the agent runs, the agent\'s global flags (--root)',
  crun: 'crun run of a cell-equivalent bundle: a sealed memfd copy of crun from PATH, as the agent runs it, --root',
  podman: 'podman run --rm --network none of a busybox image imported into podman\'s local storage (rootful, its default runtime), CONTAINERS_CONF with default_ulimits = [] (podman 4.3 cannot set its default ulimits here)',
  runsc: 'runsc run of a cell-equivalent bundle with the agent\'s flags (--platform=ptrace --network=sandbox --oci-seccomp), in a network namespace made beforehand (untimed), with /proc/sys/net hidden as for the agent\'s runsc start',
};

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
    return new BareBundles(dir);
  }

  /** bundleFor makes (once) the bundle directory of a runtime and lane: parallel lanes never share a config.json. */
  private bundleFor(runtime: Runtime, lane: number): string {
    const bundle = join(this.dir, `${runtime}-${lane}`);
    if (existsSync(bundle)) return bundle;
    const hostUid = BENCH_UID_BASE + WORKLOAD_UID;
    mkdirSync(bundle, { mode: 0o711 });
    for (const d of ['work', 'tmp', 'state']) mkdirSync(join(bundle, d), { mode: d === 'state' ? 0o700 : 0o755 });
    for (const d of ['work', 'tmp']) chownSync(join(bundle, d), hostUid, hostUid);
    chmodSync(join(bundle, 'tmp'), 0o1777);
    return bundle;
  }

  /** The sealed copy of runc, as the agent holds it (made once per bench process). */
  private readonly runc = sealedExecutable(findExecutable('runc'));
  private readonly crun = sealedExecutable(findExecutable('crun'));

  /** run starts `runtime run` of COMMAND in a fresh container (own cgroup; runsc: own netns) and times it. */
  async run(runtime: Runtime, lane = 0): Promise<ProcessTiming> {
    const bundle = this.bundleFor(runtime, lane);
    const name = `crbench-${this.tag}-${this.seq++}`;
    const cgroup = new CellCgroup(name);
    const netns = runtime === 'runsc' ? name : null;
    if (netns) execFileSync('ip', ['netns', 'add', netns]);
    const spec = cellSpec({
      runtime,
      rootfs: join(this.dir, 'rootfs'),
      workDir: join(bundle, 'work'),
      tmpDir: join(bundle, 'tmp'),
      hostUidBase: BENCH_UID_BASE,
      cgroupsPath: cgroup.path,
      netnsPath: netns ? `/run/netns/${netns}` : null,
      memoryBytes: 512 * 2 ** 20,
      cpuMillis: 1000,
      pids: runtime === 'runsc' ? 1024 : 256,
      nofile: 1024,
    });
    (spec.process as { args: string[] }).args = COMMAND;
    writeFileSync(join(bundle, 'config.json'), JSON.stringify(spec), { mode: 0o600 });
    const flags = runtimeFlags(runtime, join(bundle, 'state'));
    try {
      if (runtime === 'runc') return await timeProcess([this.runc, ...flags, 'run', '--bundle', bundle, name]);
      if (runtime === 'crun') return await timeProcess([this.crun, ...flags, 'run', '--bundle', bundle, name]);
      // As the agent does it: `create` makes the sandbox (its stdio is create's), then `start` with /proc/sys/net
      // hidden, where runsc reads the netns; the container's output arrives on the pipe create was given.
      return await timeProcess(['runsc', ...flags, 'create', '--bundle', bundle, name], withNetSysctlsHidden(['runsc', ...flags, 'start', name]));
    } finally {
      if (runtime === 'runsc') execFileSync('runsc', [...flags, 'delete', '--force', name], { stdio: 'ignore' });
      cgroup.remove();
      if (netns) execFileSync('ip', ['netns', 'del', netns]);
    }
  }

  /** close removes the scratch directory. */
  close(): void {
    rmSync(this.dir, { recursive: true, force: true });
  }
}

/** BareRate is how many bare runs of COMMAND `lanes` back-to-back loops finished in a window, and the CPU they took. */
export interface BareRate {
  lanes: number;
  runs: number;
  runs_per_s: number;
  /** Host CPU (all processes and the kernel) per run, in ms: what one run costs the machine. */
  host_cpu_ms_per_run: number;
  failed: number;
}

/** bareRate runs `start(lane)` in `lanes` loops, back to back, for `ms`, and counts the runs that finished in time. */
export async function bareRate(lanes: number, ms: number, start: (lane: number) => Promise<ProcessTiming>): Promise<BareRate> {
  const cpu0 = hostBusySeconds();
  const t0 = performance.now();
  const deadline = t0 + ms;
  let runs = 0;
  let failed = 0;
  await Promise.all(
    Array.from({ length: lanes }, async (_, lane) => {
      while (performance.now() < deadline) {
        try {
          await start(lane);
          if (performance.now() <= deadline) runs++;
        } catch {
          failed++;
        }
      }
    }),
  );
  const seconds = (performance.now() - t0) / 1000;
  const cpu = hostBusySeconds() - cpu0;
  return { lanes, runs, runs_per_s: Math.round((runs / (ms / 1000)) * 100) / 100, host_cpu_ms_per_run: runs ? Math.round((cpu / runs) * 1e4) / 10 : Number.NaN, failed: failed + (seconds < 0 ? 1 : 0) };
}

/** Podman runs COMMAND with `podman run --rm` on a busybox image it imports once; close() removes the image. */
export class Podman {
  private constructor(
    private readonly dir: string,
    private readonly image: string,
    private readonly env: NodeJS.ProcessEnv,
  ) {}

  /** create imports a one-binary busybox image (Debian's busybox-static) into podman's storage, or returns null. */
  static create(): Podman | null {
    let podman: string;
    let busybox: string;
    try {
      podman = findExecutable('podman');
      busybox = findExecutable('busybox');
    } catch {
      return null;
    }
    const dir = mkdtempSync('/var/tmp/cleanroom-bench-podman-');
    mkdirSync(join(dir, 'root/bin'), { recursive: true });
    copyFileSync(busybox, join(dir, 'root/bin/busybox'));
    chmodSync(join(dir, 'root/bin/busybox'), 0o755);
    symlinkSync('busybox', join(dir, 'root/bin/echo'));
    writeFileSync(join(dir, 'containers.conf'), '[containers]\ndefault_ulimits = []\n');
    execFileSync('tar', ['-C', join(dir, 'root'), '-cf', join(dir, 'root.tar'), '.']);
    const env = { ...process.env, CONTAINERS_CONF: join(dir, 'containers.conf') };
    const image = `localhost/cleanroom-bench-busybox:${randomBytes(3).toString('hex')}`;
    execFileSync(podman, ['import', join(dir, 'root.tar'), image], { env, stdio: 'ignore' });
    return new Podman(dir, image, env);
  }

  /** run times one `podman run --rm` of COMMAND. */
  run(): Promise<ProcessTiming> {
    return timeProcess(['env', `CONTAINERS_CONF=${this.env.CONTAINERS_CONF}`, 'podman', 'run', '--rm', '--network', 'none', this.image, ...COMMAND]);
  }

  close(): void {
    try {
      execFileSync('podman', ['rmi', '-f', this.image], { env: this.env, stdio: 'ignore' });
    } finally {
      rmSync(this.dir, { recursive: true, force: true });
    }
  }
}

function hostBusySeconds(): number {
  const cpu = readFileSync('/proc/stat', 'utf8').split('\n')[0]!.trim().split(/\s+/).slice(1).map(Number);
  return (cpu.slice(0, 8).reduce((a, b) => a + b, 0) - (cpu[3] ?? 0) - (cpu[4] ?? 0)) / 100;
}

/** forkExec times a plain host start of COMMAND, spawned as the agent spawns its helpers. */
export function forkExec(): Promise<ProcessTiming> {
  return timeProcess(COMMAND);
}

/**
 * forkExecNodeSpawn times COMMAND started with Node's child_process.spawn, as an application would start it (and as this
 * bench did before its baselines took the agent's posix_spawn path): spawn → first stdout byte, and → close.
 */
export function forkExecNodeSpawn(): Promise<ProcessTiming> {
  return new Promise((resolve, reject) => {
    const t0 = performance.now();
    let firstByteMs = Number.NaN;
    let out = '';
    let err = '';
    const child = spawn(COMMAND[0]!, COMMAND.slice(1), { stdio: ['ignore', 'pipe', 'pipe'] });
    child.stdout.on('data', (d: Buffer) => {
      if (Number.isNaN(firstByteMs)) firstByteMs = performance.now() - t0;
      out += d.toString('utf8');
    });
    child.stderr.on('data', (d: Buffer) => (err += d.toString('utf8')));
    child.on('error', reject);
    child.on('close', (code) => {
      const exitMs = performance.now() - t0;
      if (code === 0 && out === 'hi\n') resolve({ firstByteMs, exitMs });
      else reject(new Error(`${COMMAND.join(' ')} exited ${code} with output ${JSON.stringify(out)}: ${err.trim().slice(0, 500)}`));
    });
  });
}

/**
 * timeProcess starts argv with posix_spawn and times its first stdout byte and the close of its stdout (the container's,
 * for a runtime); `then` is started once argv has exited 0 (runsc's start after its create). Rejects unless the output
 * is "hi" and every process exited 0.
 */
async function timeProcess(argv: readonly string[], then?: readonly string[]): Promise<ProcessTiming> {
  const t0 = performance.now();
  const child = spawnHelper(argv);
  let firstByteMs = Number.NaN;
  let out = '';
  let err = '';
  const closed = (s: NodeJS.ReadableStream) => new Promise<void>((resolve) => s.once('close', () => resolve()));
  child.stdout.on('data', (d: Buffer) => {
    if (Number.isNaN(firstByteMs)) firstByteMs = performance.now() - t0;
    out += d.toString('utf8');
  });
  child.stderr.on('data', (d: Buffer) => (err += d.toString('utf8')));
  const outClosed = closed(child.stdout);
  const errClosed = closed(child.stderr);
  const status = await child.exited;
  const fail = (what: string, code: number | null, signal: number | null, stderr: string) =>
    new Error(`${what} exited ${code ?? `on signal ${signal}`} with output ${JSON.stringify(out)}: ${stderr.trim().slice(0, 500)}`);
  if (status.code !== 0) throw fail(argv.join(' '), status.code, status.signal, err);
  if (then) {
    const next = spawnHelper(then);
    let nextErr = '';
    next.stdout.resume();
    next.stderr.on('data', (d: Buffer) => (nextErr += d.toString('utf8')));
    const s = await next.exited;
    if (s.code !== 0) throw fail(then.join(' '), s.code, s.signal, nextErr);
  }
  await Promise.all([outClosed, errClosed]);
  const exitMs = performance.now() - t0;
  if (out === 'hi\n') return { firstByteMs, exitMs };
  throw fail(argv.join(' '), status.code, status.signal, err);
}
