// Denied-connection records: the agent's nft `deny` / `would_deny` chains log to the kernel log with the prefix
// "<prefix> D " or "<prefix> W " (or "w ", see nft-ruleset.ts) and the cell's mark; this reader follows /dev/kmsg (non-blocking, polled, so no libuv thread is parked
// in a blocking read), skips the backlog present at start, parses the netfilter log line and emits one record each.
// Kernel-log records survive an agent restart only in the ring buffer; the agent forwards them to the audit log.
import { closeSync, constants, openSync, readSync } from 'node:fs';

/** DeniedRecord is one denied (or, in dry-run, would-be denied) connection attempt from a cell. */
export interface DeniedRecord {
  readonly action: 'denied' | 'dry-run';
  readonly cellId: string | undefined;
  /** The cell's address (informative only: the cell is named by its mark, since an address is soon another cell's). */
  readonly source: string;
  readonly destination: string;
  readonly protocol: string;
  readonly port: number | undefined;
  readonly time: Date;
}

/** DeniedLogOptions: the agent prefix, how to map a cell's mark (the record's MARK=) and address to a cell id, and the poll interval. */
export interface DeniedLogOptions {
  readonly prefix: string;
  readonly cellOf: (mark: number, address: string) => string | undefined;
  readonly pollMs?: number;
  readonly path?: string;
}

/** DeniedLog follows the kernel log and calls every onDenied listener with each record of this agent. */
export class DeniedLog {
  private fd: number | undefined;
  private timer: NodeJS.Timeout | undefined;
  private readonly listeners = new Set<(record: DeniedRecord) => void>();
  private readonly buffer = Buffer.alloc(16384);

  constructor(private readonly options: DeniedLogOptions) {}

  /** start opens the kernel log and skips what is already there; later records are delivered. */
  start(): void {
    if (this.fd !== undefined) return;
    this.fd = openSync(this.options.path ?? '/dev/kmsg', constants.O_RDONLY | constants.O_NONBLOCK);
    this.drain(false);
    this.timer = setInterval(() => this.drain(true), this.options.pollMs ?? 100);
    this.timer.unref();
  }

  /** onDenied registers a listener and returns a function that removes it. */
  onDenied(listener: (record: DeniedRecord) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** flush delivers every record logged so far (tests and shutdown call it instead of waiting for the next poll). */
  flush(): void {
    this.drain(true);
  }

  /** stop closes the kernel log. */
  stop(): void {
    if (this.timer) clearInterval(this.timer);
    if (this.fd !== undefined) closeSync(this.fd);
    this.fd = undefined;
    this.timer = undefined;
  }

  private drain(deliver: boolean): void {
    if (this.fd === undefined) return;
    for (;;) {
      let n: number;
      try {
        n = readSync(this.fd, this.buffer, 0, this.buffer.length, null);
      } catch (e) {
        const code = (e as NodeJS.ErrnoException).code;
        if (code === 'EPIPE') continue; // records were overwritten before we read them; carry on with the next
        if (code === 'EAGAIN') return;
        throw e;
      }
      if (n <= 0) return;
      if (!deliver) continue;
      const record = parseKmsgRecord(this.buffer.toString('utf8', 0, n), this.options.prefix, this.options.cellOf);
      if (record) for (const listener of this.listeners) listener(record);
    }
  }
}

/**
 * parseKmsgRecord turns one /dev/kmsg record into a DeniedRecord if it is a denial logged by this agent's table. The
 * cell is the one whose mark (and address) the record carries ("D" and "W" records; a "w" record, logged with another
 * ruleset's mark, names none).
 */
export function parseKmsgRecord(raw: string, prefix: string, cellOf: (mark: number, address: string) => string | undefined): DeniedRecord | undefined {
  const semi = raw.indexOf(';');
  if (semi < 0) return undefined;
  const message = raw.slice(semi + 1).split('\n', 1)[0] ?? '';
  const tag = message.startsWith(`${prefix} `) ? message.slice(prefix.length + 1, prefix.length + 3) : '';
  if (tag !== 'D ' && tag !== 'W ' && tag !== 'w ') return undefined;
  const fields = new Map<string, string>();
  for (const token of message.split(' ')) {
    const eq = token.indexOf('=');
    if (eq > 0) fields.set(token.slice(0, eq), token.slice(eq + 1));
  }
  const source = fields.get('SRC');
  const destination = fields.get('DST');
  if (!source || !destination) return undefined;
  const micros = Number(raw.slice(0, semi).split(',')[2]);
  const dpt = fields.get('DPT');
  const mark = tag === 'w ' ? undefined : fields.get('MARK');
  const markValue = mark === undefined ? NaN : Number(mark);
  return {
    action: tag === 'D ' ? 'denied' : 'dry-run',
    cellId: Number.isInteger(markValue) && markValue > 0 ? cellOf(markValue >>> 0, source) : undefined,
    source,
    destination,
    protocol: (fields.get('PROTO') ?? 'unknown').toLowerCase(),
    port: dpt === undefined ? undefined : Number(dpt),
    time: kernelTime(micros),
  };
}

// kmsg stamps records with the kernel's monotonic clock; map it to wall time through the process's monotonic clock.
function kernelTime(micros: number): Date {
  if (!Number.isFinite(micros)) return new Date();
  const ageMs = Number(process.hrtime.bigint() / 1000n - BigInt(Math.trunc(micros))) / 1000;
  return new Date(Date.now() - Math.max(0, ageMs));
}
