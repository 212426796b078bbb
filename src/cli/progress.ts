/** A one-line progress indicator on stderr for steps that take more than a second. */

/** Progress shows "label: detail" updated in place on a TTY, or line by line otherwise. */
export class Progress {
  private last = '';
  private readonly tty = process.stderr.isTTY === true;
  private readonly started = Date.now();

  constructor(private readonly label: string) {}

  /** update shows the current state; repeated identical states are printed once. */
  update(detail: string, fraction?: number): void {
    const bar = fraction === undefined ? '' : ` [${'#'.repeat(Math.round(fraction * 20)).padEnd(20, '.')}]`;
    const line = `${this.label}${bar} ${detail}`;
    if (line === this.last) return;
    this.last = line;
    if (this.tty) process.stderr.write(`\r\x1b[2K${line}`);
    else process.stderr.write(`${line}\n`);
  }

  /** done finishes the line with the elapsed time. */
  done(detail: string): void {
    const line = `${this.label}: ${detail} (${((Date.now() - this.started) / 1000).toFixed(1)}s)`;
    process.stderr.write(this.tty ? `\r\x1b[2K${line}\n` : `${line}\n`);
  }
}
