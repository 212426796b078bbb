/** CellRuntime is the port through which the agent drives an OCI runtime; runc and runsc adapt it. */
import type { Readable } from 'node:stream';
import type { Runtime } from '../../shared/wire.js';
import type { SpawnOptions } from './host-calls.js';

/** CreatedContainer is a container whose init has started and waits for its assignment. */
export interface CreatedContainer {
  /** The container's stdout and stderr (the runtime command's, held open by cell init after it exits). */
  stdio: { stdout: Readable; stderr: Readable };
  /** Host pid of the container's init (runc) or sandbox (runsc). */
  pid: number;
}

/** CellRuntime creates, starts, kills and deletes cell containers. */
export interface CellRuntime {
  readonly name: Runtime;
  /**
   * specAnnotations are what a cell's spec should carry for this runtime, given the spec's seccomp profile as JSON
   * (e.g. crun's compiled filter for that profile, once it has compiled one); {} when there is nothing to add.
   */
  specAnnotations(seccompJson: string): Record<string, string>;
  /**
   * create makes the container from `bundle` with `stdinFd` as its fd 0 and starts cell init. `seccompJson` is the
   * spec's seccomp profile as JSON (the key of what specAnnotations returns). `{ background: true }`: a refill's prepare,
   * whose runtime processes get the background CPU weight (background.ts).
   */
  create(id: string, bundle: string, stdinFd: number, seccompJson?: string, options?: SpawnOptions): Promise<CreatedContainer>;
  /**
   * delete force-removes the container, killing whatever runs in it; a missing container is fine. `{ background: true }`:
   * a wipe's.
   */
  delete(id: string, options?: SpawnOptions): Promise<void>;
  /**
   * deleteStopped removes a container whose init has exited. `stopped` says whether none of its processes is left
   * (its cgroup is empty); while one is, after a short wait, it falls back to delete. Resolves false when it had to.
   */
  deleteStopped(id: string, stopped: () => boolean, options?: SpawnOptions): Promise<boolean>;
  /** list returns the ids of every container this agent's runtime root holds. */
  list(): Promise<string[]>;
}
