/** Runs a helper command off the hot path and reports failures with its stderr. */
import { spawn } from 'node:child_process';

/** CommandError is a helper command that exited non-zero. */
export class CommandError extends Error {
  constructor(readonly argv: string[], readonly code: number | null, readonly stderr: string) {
    super(`${argv.join(' ')} exited ${code}: ${stderr.trim().slice(0, 500)}`);
  }
}

/** run executes argv without a shell and resolves with stdout; rejects with CommandError. */
export function run(argv: string[], input?: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const [cmd, ...args] = argv;
    if (!cmd) throw new Error('empty argv');
    const child = spawn(cmd, args, { stdio: [input === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout!.setEncoding('utf8').on('data', (d: string) => (out += d));
    child.stderr!.setEncoding('utf8').on('data', (d: string) => (err += d));
    child.on('error', reject);
    child.on('close', (code) => (code === 0 ? resolve(out) : reject(new CommandError(argv, code, err))));
    if (input !== undefined) child.stdin?.end(input);
  });
}
