// One-shot command runner for the off-hot-path steps (prepare, destroy, start-up): feeds stdin, collects merged output.
import { spawn } from 'node:child_process';

/** CommandError carries the command, its exit code and its output. */
export class CommandError extends Error {
  constructor(readonly command: string, readonly exitCode: number | null, readonly output: string) {
    super(`${command} failed (exit ${exitCode}): ${output.trim().slice(0, 2000)}`);
  }
}

/** runCommand runs argv with `input` on stdin and resolves with stdout; rejects with CommandError on a non-zero exit unless `allowFailure`. */
export function runCommand(argv: readonly string[], input = '', options: { allowFailure?: boolean } = {}): Promise<string> {
  const [file, ...args] = argv;
  if (file === undefined) return Promise.reject(new Error('runCommand: empty argv'));
  return new Promise((resolve, reject) => {
    const child = spawn(file, args, { stdio: ['pipe', 'pipe', 'pipe'] });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout.on('data', (d: Buffer) => out.push(d));
    child.stderr.on('data', (d: Buffer) => err.push(d));
    child.on('error', reject);
    child.on('close', (code) => {
      const stdout = Buffer.concat(out).toString();
      if (code === 0 || options.allowFailure) resolve(stdout);
      else reject(new CommandError(argv.join(' '), code, stdout + Buffer.concat(err).toString()));
    });
    child.stdin.on('error', () => undefined);
    child.stdin.end(input);
  });
}
