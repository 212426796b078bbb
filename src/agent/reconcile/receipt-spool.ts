/**
 * ReceiptSpool keeps the wipe receipts of volumes shredded by reconcile until an agent has handed them to the control
 * plane. `cleanroom down` may reconcile while no agent runs; the next agent reports what it wiped.
 */
import { mkdirSync, readdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { WipeReceipt } from '../../shared/wire.js';

/** SpooledReceipt is a receipt and the job its volume belonged to (null when the volume was never assigned). */
export interface SpooledReceipt {
  jobId: string | null;
  receipt: WipeReceipt;
}

/** MAX_SPOOLED bounds the spool: beyond it the oldest receipts are dropped (the wipes themselves happened). */
const MAX_SPOOLED = 10_000;

/** ReceiptSpool is one directory of JSON files, one per volume. */
export class ReceiptSpool {
  constructor(private readonly dir: string) {
    mkdirSync(dir, { recursive: true, mode: 0o700 });
  }

  /** write stores a receipt durably (temp file + rename). */
  write(jobId: string | null, receipt: WipeReceipt): void {
    const file = join(this.dir, `${receipt.volumeId}.json`);
    writeFileSync(`${file}.tmp`, JSON.stringify({ jobId, receipt } satisfies SpooledReceipt), { mode: 0o600 });
    renameSync(`${file}.tmp`, file);
  }

  /** read returns every spooled receipt, oldest first; unreadable files are dropped. */
  read(): SpooledReceipt[] {
    const out: Array<SpooledReceipt & { file: string }> = [];
    for (const name of readdirSync(this.dir)) {
      const file = join(this.dir, name);
      if (!name.endsWith('.json')) {
        rmSync(file, { force: true });
        continue;
      }
      try {
        const parsed = JSON.parse(readFileSync(file, 'utf8')) as SpooledReceipt;
        if (typeof parsed.receipt?.volumeId === 'string') out.push({ ...parsed, file });
        else rmSync(file, { force: true });
      } catch {
        rmSync(file, { force: true });
      }
    }
    out.sort((a, b) => a.receipt.finishedAt.localeCompare(b.receipt.finishedAt));
    for (const old of out.splice(0, Math.max(0, out.length - MAX_SPOOLED))) rmSync(old.file, { force: true });
    return out.map(({ jobId, receipt }) => ({ jobId, receipt }));
  }

  /** remove forgets receipts the control plane has received. */
  remove(volumeIds: Iterable<string>): void {
    for (const id of volumeIds) rmSync(join(this.dir, `${id}.json`), { force: true });
  }
}
