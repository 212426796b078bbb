/** Runs a helper command (runtimes, iproute2, nft, mount) off the assignment path, without a shell. */
import { spawn } from 'node:child_process';

/** CommandError is a helper command that exited non-zero. */
export class CommandError extends Error {
  constructor(readonly argv: readonly string[], readonly code: number | null, readonly stderr: string) {
    super(`${argv.join(' ')} exited ${code}: ${stderr.trim().slice(0, 2000)}`);
  }
}

/** run executes argv with `input` on stdin and resolves with stdout; rejects with CommandError unless allowFailure. */
export function run(argv: readonly string[], input?: string, options: { allowFailure?: boolean } = {}): Promise<string> {
  const [cmd, ...args] = argv;
  if (!cmd) return Promise.reject(new Error('run: empty argv'));
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { stdio: [input === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout!.setEncoding('utf8').on('data', (d: string) => (out += d));
    child.stderr!.setEncoding('utf8').on('data', (d: string) => (err += d));
    child.on('error', reject);
    child.on('close', (code) => (code === 0 || options.allowFailure ? resolve(out) : reject(new CommandError(argv, code, out + err))));
    if (input !== undefined) {
      child.stdin!.on('error', () => undefined);
      child.stdin!.end(input);
    }
  });
}
