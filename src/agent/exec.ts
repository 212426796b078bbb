/** Runs a helper command (runtimes, iproute2, nft, mount) off the assignment path, without a shell. */
import { spawn } from 'node:child_process';
import type { Readable } from 'node:stream';
import { spawnHelper, type SpawnOptions } from './runtime/host-calls.js';

/** CommandError is a helper command that exited non-zero. */
export class CommandError extends Error {
  constructor(readonly argv: readonly string[], readonly code: number | null, readonly stderr: string) {
    super(`${argv.join(' ')} exited ${code}: ${stderr.trim().slice(0, 2000)}`);
  }
}

/** RunOptions: `allowFailure` resolves on a non-zero exit too; `background` as for spawnHelper (without input only). */
export interface RunOptions extends SpawnOptions {
  allowFailure?: boolean;
}

/** run executes argv with `input` on stdin and resolves with stdout; rejects with CommandError unless allowFailure. */
export async function run(argv: readonly string[], input?: string, options: RunOptions = {}): Promise<string> {
  if (input !== undefined) return runWithInput(argv, input, options);
  // Without input (every call on a cell's path): posix_spawn, which does not fork the agent.
  const helper = spawnHelper(argv, -1, options);
  const [out, err, status] = await Promise.all([collect(helper.stdout), collect(helper.stderr), helper.exited]);
  if (status.code === 0 || options.allowFailure) return out;
  throw new CommandError(argv, status.code ?? (status.signal === null ? null : 128 + status.signal), out + err);
}

function collect(stream: Readable): Promise<string> {
  return new Promise((resolve, reject) => {
    let text = '';
    stream.setEncoding('utf8').on('data', (d: string) => (text += d));
    stream.on('error', reject).on('close', () => resolve(text));
  });
}

// Helpers fed on stdin (nft -f, ip -batch) run at start-up and reconcile only: Node's spawn is fine there.
function runWithInput(argv: readonly string[], input: string, options: { allowFailure?: boolean }): Promise<string> {
  const [cmd, ...args] = argv;
  if (!cmd) return Promise.reject(new Error('run: empty argv'));
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { stdio: ['pipe', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout!.setEncoding('utf8').on('data', (d: string) => (out += d));
    child.stderr!.setEncoding('utf8').on('data', (d: string) => (err += d));
    child.on('error', reject);
    child.on('close', (code) => (code === 0 || options.allowFailure ? resolve(out) : reject(new CommandError(argv, code, out + err))));
    child.stdin!.on('error', () => undefined);
    child.stdin!.end(input);
  });
}
