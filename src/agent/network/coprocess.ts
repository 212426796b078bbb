// A persistent line-oriented command process (`ip -batch -`, `nft -i`) fed over stdin, so the hot path spawns nothing.
// Completion is detected with a sentinel command that fails with a unique name: its error text is the end marker.
// stderr is merged into stdout (via `sh -c 'exec ... 2>&1'`, once at start) so error text arrives in order.
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';

/** CoprocessDialect says how to build the sentinel command and how to recognise errors for one tool. */
export interface CoprocessDialect {
  readonly sentinel: (nonce: string) => string;
  /** endOf returns the index where the sentinel's output starts and the index just past its end, once it is complete. */
  readonly endOf: (buffer: string, nonce: string) => { start: number; end: number } | undefined;
  readonly isError: (output: string) => boolean;
}

/** IP_DIALECT drives `ip -force -batch -`: the sentinel is `link show dev <nonce>`, errors end with "Command failed". */
export const IP_DIALECT: CoprocessDialect = {
  sentinel: (nonce) => `link show dev ${nonce}`,
  endOf: (buffer, nonce) => {
    const start = buffer.indexOf(`Device "${nonce}" does not exist.`);
    const failed = start < 0 ? -1 : buffer.indexOf('Command failed', start);
    const end = failed < 0 ? -1 : buffer.indexOf('\n', failed);
    return end < 0 ? undefined : { start, end: end + 1 };
  },
  isError: (output) => /Command failed|Error:|RTNETLINK answers/.test(output),
};

/**
 * NFT_DIALECT drives `nft -i`: the sentinel is a line that fails to parse, so nft answers it without reading the
 * kernel's ruleset (a failing `list` would fetch a cache first); its error echoes the line, then a caret line.
 */
export const NFT_DIALECT: CoprocessDialect = {
  sentinel: (nonce) => `zz${nonce}`,
  endOf: (buffer, nonce) => {
    const at = buffer.indexOf(`\nzz${nonce}\n`);
    const start = at < 0 ? -1 : buffer.lastIndexOf('Error:', at);
    const end = at < 0 ? -1 : buffer.indexOf('\n', at + nonce.length + 4);
    return start < 0 || end < 0 ? undefined : { start, end: end + 1 };
  },
  isError: (output) => output.includes('Error:'),
};

interface Pending {
  readonly nonce: string;
  readonly resolve: (output: string) => void;
  readonly reject: (error: Error) => void;
}

/** Coprocess serialises batches of lines to one long-lived tool process and resolves each with that batch's output. */
export class Coprocess {
  private readonly child: ChildProcessWithoutNullStreams;
  private readonly queue: Pending[] = [];
  private buffer = '';
  private counter = 0;
  private exited: Error | undefined;

  constructor(private readonly argv: readonly string[], private readonly dialect: CoprocessDialect) {
    this.child = spawn('/bin/sh', ['-c', 'exec "$@" 2>&1', 'sh', ...argv], { stdio: ['pipe', 'pipe', 'pipe'] });
    this.child.stdout.setEncoding('utf8');
    this.child.stdout.on('data', (chunk: string) => this.onData(chunk));
    this.child.stdin.on('error', () => undefined);
    this.child.on('exit', (code) => this.fail(new Error(`${argv.join(' ')} exited (${code})`)));
    this.child.on('error', (e) => this.fail(e));
  }

  /** pid is the operating-system process id of the tool. */
  get pid(): number | undefined {
    return this.child.pid;
  }

  /** run sends the lines as one batch and resolves with their output; rejects if the tool reported an error. */
  run(lines: readonly string[]): Promise<string> {
    if (this.exited) return Promise.reject(this.exited);
    for (const line of lines) if (/[\r\n]/.test(line)) return Promise.reject(new Error('coprocess line contains a newline'));
    const nonce = `crs${process.pid.toString(36)}x${(this.counter++).toString(36)}`.slice(0, 15);
    return new Promise((resolve, reject) => {
      this.queue.push({ nonce, resolve, reject });
      this.child.stdin.write(`${[...lines, this.dialect.sentinel(nonce)].join('\n')}\n`);
    });
  }

  /** close ends stdin and waits for the tool to exit. */
  close(): Promise<void> {
    if (this.exited) return Promise.resolve();
    return new Promise((resolve) => {
      this.child.once('exit', () => resolve());
      this.child.stdin.end();
    });
  }

  private onData(chunk: string): void {
    this.buffer += chunk;
    for (let head = this.queue[0]; head; head = this.queue[0]) {
      const found = this.dialect.endOf(this.buffer, head.nonce);
      if (!found) return;
      const output = this.buffer.slice(0, found.start);
      this.buffer = this.buffer.slice(found.end);
      this.queue.shift();
      if (this.dialect.isError(output)) head.reject(new Error(`${this.argv.join(' ')}: ${output.trim().slice(0, 2000)}`));
      else head.resolve(output);
    }
  }

  private fail(error: Error): void {
    this.exited ??= error;
    for (const p of this.queue.splice(0)) p.reject(error);
  }
}
