/** OciRuntime drives runc, crun or runsc through their command lines (only off the assignment path). */
import { readFileSync } from 'node:fs';
import { removeFlatDirAsync } from './flat-dir.js';
import { join } from 'node:path';
import type { Runtime } from '../../shared/wire.js';
import type { CellRuntime, CreatedContainer } from './cell-runtime.js';
import { CommandError, run } from '../exec.js';
import { spawnHelperAsync, type SpawnOptions } from './host-calls.js';

/** OciRuntimeOptions says which binary to use and where it keeps container state. */
export interface OciRuntimeOptions {
  name: Runtime;
  /** State directory private to this agent: `list` and reconcile see only our containers. */
  stateRoot: string;
  /** The executable to run (default: the runtime's name, looked up on PATH), e.g. a sealed copy of runc. */
  binary?: string;
}

/** CRUN_SECCOMP_BPF_ANNOTATION hands crun a compiled seccomp filter to load instead of compiling the spec's profile. */
export const CRUN_SECCOMP_BPF_ANNOTATION = 'run.oci.seccomp_bpf_data';
/**
 * The waits between deleteStopped's looks for an empty cgroup before it runs the runtime's delete: the last processes of
 * a cell that just ended are still being killed with its pid namespace, later on a busy host (the wipe is background work).
 */
const STOPPED_WAITS_MS = [1, 2, 4, 8, 16, 32];

/** OciRuntime is the CellRuntime adapter for runc, crun and runsc. */
export class OciRuntime implements CellRuntime {
  readonly name: Runtime;
  private readonly binary: string;
  private readonly stateRoot: string;
  private readonly globalFlags: string[];
  /**
   * crun's compiled filter (base64) per seccomp profile (as JSON). crun compiles the spec's profile with libseccomp in
   * every container start (a tenth of its CPU per start, README design notes) and keeps what it loaded in the container's state directory
   * (seccomp.bpf); the first cell of a profile is started from the profile and its file is kept here, and later cells
   * of that profile get it through CRUN_SECCOMP_BPF_ANNOTATION: the same crun and libseccomp compiled the same profile.
   */
  private readonly compiledFilters = new Map<string, string>();

  constructor(opts: OciRuntimeOptions) {
    this.name = opts.name;
    this.binary = opts.binary ?? opts.name;
    this.stateRoot = opts.stateRoot;
    this.globalFlags = runtimeFlags(opts.name, opts.stateRoot);
  }

  specAnnotations(seccompJson: string): Record<string, string> {
    const bpf = this.compiledFilters.get(seccompJson);
    return bpf === undefined ? {} : { [CRUN_SECCOMP_BPF_ANNOTATION]: bpf };
  }

  // Keeps the filter crun compiled for a cell started from its profile (see compiledFilters).
  private learnFilter(id: string, seccompJson: string | undefined): void {
    if (this.name !== 'crun' || seccompJson === undefined || this.compiledFilters.has(seccompJson)) return;
    try {
      const bpf = readFileSync(join(this.stateRoot, id, 'seccomp.bpf'));
      // A classic BPF program: whole 8-byte instructions, at least one. Anything else is not kept (crun compiles again).
      if (bpf.length >= 8 && bpf.length % 8 === 0) this.compiledFilters.set(seccompJson, bpf.toString('base64'));
    } catch {
      // Not there (another crun version): every cell keeps compiling its profile.
    }
  }

  // `start` is where runsc reads the cell's netns, so only `start` runs with /proc/sys/net hidden (see
  // withNetSysctlsHidden); the sandbox itself was made by `create`. Cells always name a netns the agent made.
  private runscStartCommand(id: string): string[] {
    return withNetSysctlsHidden([this.binary, ...this.globalFlags, 'start', id]);
  }

  async create(id: string, bundle: string, stdinFd: number, seccompJson?: string, options: SpawnOptions = {}): Promise<CreatedContainer> {
    const pidFile = join(bundle, 'init.pid');
    // runc and crun: `run --detach` creates and starts in one process (each runc start-up costs ~20 ms of CPU here);
    // runsc's start needs its own wrapper (runscStartCommand), so it keeps the two steps.
    const verb = this.name === 'runsc' ? 'create' : 'run';
    const argv = [...this.globalFlags, verb, ...(verb === 'run' ? ['--detach'] : []), '--bundle', bundle, '--pid-file', pidFile, id];
    const helper = await spawnHelperAsync([this.binary, ...argv], stdinFd, options);
    let stderr = '';
    const collect = (d: Buffer) => (stderr += d.toString('utf8'));
    helper.stderr.on('data', collect);
    const status = await helper.exited;
    if (status.code !== 0) {
      // The message may still be in the pipe when the exit is reaped; nothing else holds it open after a failure.
      await new Promise((resolve) => setTimeout(resolve, 200).unref() && helper.stderr.once('close', resolve));
      helper.stdout.destroy();
      helper.stderr.destroy();
      throw new CommandError([this.binary, ...argv], status.code, stderr);
    }
    helper.stderr.off('data', collect);
    if (verb === 'create') await run(this.runscStartCommand(id), undefined, options);
    this.learnFilter(id, seccompJson);
    const pid = Number(readFileSync(pidFile, 'utf8').trim());
    return { stdio: { stdout: helper.stdout, stderr: helper.stderr }, pid };
  }

  async delete(id: string, options: SpawnOptions = {}): Promise<void> {
    try {
      await run([this.binary, ...this.globalFlags, 'delete', '--force', id], undefined, options);
    } catch (e) {
      if (e instanceof CommandError && /does not exist|not exist|cannot find/i.test(e.stderr)) return;
      throw e;
    }
  }

  /**
   * deleteStopped: for runc and crun, a container none of whose processes is left is only its state directory (the
   * agent removes its cgroups with the cell), and what `delete` would do is remove both: a runtime process started per
   * cell for an rm. runsc's sandbox and gofer are processes of their own: its delete runs.
   */
  async deleteStopped(id: string, stopped: () => boolean, options: SpawnOptions = {}): Promise<boolean> {
    if (this.name !== 'runsc' && !id.includes('/') && id !== '' && id !== '.' && id !== '..') {
      for (const wait of [...STOPPED_WAITS_MS, -1]) {
        if (stopped()) {
          await removeFlatDirAsync(join(this.stateRoot, id));
          return true;
        }
        if (wait > 0) await new Promise((r) => setTimeout(r, wait));
      }
    }
    await this.delete(id, options);
    return false;
  }

  async list(): Promise<string[]> {
    const out = await run([this.binary, ...this.globalFlags, 'list', '--format', 'json']);
    const parsed = JSON.parse(out.trim() || 'null') as Array<{ id: string }> | null;
    return (parsed ?? []).map((c) => c.id);
  }
}

/** runtimeFlags are the global flags every call of a runtime gets (the benchmark's baselines use the same). */
export function runtimeFlags(name: Runtime, stateRoot: string): string[] {
  return name === 'runsc'
    ? // ptrace: no KVM here. network=sandbox: gVisor's own network stack runs in the sandbox and takes over the
      // cell's prepared netns (network=host fails with a user namespace: "error converting mounts").
      // oci-seccomp: enforce the spec's seccomp profile inside the sandbox too.
      ['--root', stateRoot, '--platform=ptrace', '--network=sandbox', '--oci-seccomp']
    : ['--root', stateRoot];
}

/**
 * withNetSysctlsHidden wraps argv to run in a private mount namespace with /proc/sys/net hidden. runsc 20221219 decides
 * it is in the host's network namespace when /proc/sys/net/core/rmem_default exists, which on newer kernels it does in
 * every netns (gVisor issue 10704), and then refuses to start with its own network stack.
 */
export function withNetSysctlsHidden(argv: readonly string[]): string[] {
  const script = 'mount -t tmpfs -o ro,size=4k,mode=555 cleanroom-no-net-sysctl /proc/sys/net && exec "$@"';
  return ['unshare', '--mount', '--propagation', 'private', 'sh', '-c', script, 'runsc-start', ...argv];
}
