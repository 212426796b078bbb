/** OciRuntime drives runc or runsc through their command lines (only off the assignment path). */
import { spawn, type ChildProcessByStdio } from 'node:child_process';
import type { Readable } from 'node:stream';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Runtime } from '../../shared/wire.js';
import type { CellRuntime, CreatedContainer } from './cell-runtime.js';
import { CommandError, run } from '../exec.js';

/** OciRuntimeOptions says which binary to use and where it keeps container state. */
export interface OciRuntimeOptions {
  name: Runtime;
  /** State directory private to this agent: `list` and reconcile see only our containers. */
  stateRoot: string;
}

/** OciRuntime is the CellRuntime adapter for runc and runsc. */
export class OciRuntime implements CellRuntime {
  readonly name: Runtime;
  private readonly globalFlags: string[];

  constructor(opts: OciRuntimeOptions) {
    this.name = opts.name;
    this.globalFlags =
      opts.name === 'runsc'
        ? // ptrace: no KVM here. network=none: gVisor's own stack is broken on this kernel and
          // network=host fails with a user namespace ("error converting mounts"); see docs/runtime-notes.md.
          // oci-seccomp: enforce the spec's seccomp profile inside the sandbox too.
          ['--root', opts.stateRoot, '--platform=ptrace', '--network=none', '--oci-seccomp']
        : ['--root', opts.stateRoot];
  }

  async create(id: string, bundle: string, stdinFd: number): Promise<CreatedContainer> {
    const pidFile = join(bundle, 'init.pid');
    const argv = [...this.globalFlags, 'create', '--bundle', bundle, '--pid-file', pidFile, id];
    const child = spawn(this.name, argv, { stdio: [stdinFd, 'pipe', 'pipe'] }) as ChildProcessByStdio<null, Readable, Readable>;
    let stderr = '';
    const collect = (d: Buffer) => (stderr += d.toString('utf8'));
    child.stderr.on('data', collect);
    const code = await new Promise<number | null>((resolve, reject) => {
      child.once('error', reject);
      child.once('exit', (c) => resolve(c));
    });
    child.stderr.off('data', collect);
    if (code !== 0) {
      child.stdout.destroy();
      child.stderr.destroy();
      throw new CommandError([this.name, ...argv], code, stderr);
    }
    await run([this.name, ...this.globalFlags, 'start', id]);
    const pid = Number(readFileSync(pidFile, 'utf8').trim());
    return { stdio: child, pid };
  }

  async delete(id: string): Promise<void> {
    try {
      await run([this.name, ...this.globalFlags, 'delete', '--force', id]);
    } catch (e) {
      if (e instanceof CommandError && /does not exist|not exist|cannot find/i.test(e.stderr)) return;
      throw e;
    }
  }

  async list(): Promise<string[]> {
    const out = await run([this.name, ...this.globalFlags, 'list', '--format', 'json']);
    const parsed = JSON.parse(out.trim() || 'null') as Array<{ id: string }> | null;
    return (parsed ?? []).map((c) => c.id);
  }
}
