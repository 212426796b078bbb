/**
 * StatementBatch is group commit for one kind of PostgreSQL statement: the calls made while a batch of its kind is on its
 * way (and those of the same turn of the event loop) go together as one multi-row statement, so one round trip and one
 * commit serve them all. A job's life is a handful of small writes (its row, its token, its output, its transitions),
 * each made for many jobs at once under load: one statement per call made the database's per-statement work (and the
 * replicas' per-round-trip work) most of the cost of a job.
 *
 * Every call still resolves only once the statement holding it has committed, with its own row's result. A statement is
 * atomic, so one bad row (a duplicate key) would fail its batch-mates: a failed batch is run again one call at a time,
 * so that only the bad call's caller hears the error. Calls with the same key (a job's id) never share a batch: two
 * compare-and-set updates of one row in one statement would apply only one of them.
 */

/**
 * MAX_BATCH bounds the rows of one statement. The queue itself needs no bound of its own: each entry is a caller awaiting
 * its result, so it holds only the store calls in flight, which the API's quotas and the agent channel's report
 * high-water mark bound upstream; a slow database slows those callers (their awaits), it does not grow anything else.
 */
const MAX_BATCH = 256;

interface Waiting<In, Out> {
  item: In;
  resolve: (out: Out) => void;
  reject: (e: Error) => void;
}

/** StatementBatch runs `exec` on batches of calls; `exec` returns one result per item, in order. */
export class StatementBatch<In, Out> {
  private waiting: Array<Waiting<In, Out>> = [];
  private running = false;

  constructor(
    private readonly exec: (items: readonly In[]) => Promise<Out[]>,
    private readonly keyOf?: (item: In) => string,
  ) {}

  /** run queues a call and resolves with its result once its batch committed. */
  run(item: In): Promise<Out> {
    return new Promise((resolve, reject) => {
      this.waiting.push({ item, resolve, reject });
      if (this.running) return;
      this.running = true;
      setImmediate(() => void this.drain());
    });
  }

  private async drain(): Promise<void> {
    try {
      while (this.waiting.length) await this.send(this.take());
    } finally {
      this.running = false;
    }
  }

  /** take removes the next batch from the queue: in order, at most MAX_BATCH, no key twice (the rest waits its turn). */
  private take(): Array<Waiting<In, Out>> {
    const batch: Array<Waiting<In, Out>> = [];
    const rest: Array<Waiting<In, Out>> = [];
    const keys = new Set<string>();
    for (const w of this.waiting) {
      const key = this.keyOf?.(w.item);
      if (batch.length >= MAX_BATCH || (key !== undefined && keys.has(key))) {
        rest.push(w);
        continue;
      }
      batch.push(w);
      if (key !== undefined) keys.add(key);
    }
    this.waiting = rest;
    return batch;
  }

  private async send(batch: Array<Waiting<In, Out>>): Promise<void> {
    try {
      const outs = await this.exec(batch.map((w) => w.item));
      batch.forEach((w, i) => w.resolve(outs[i]!));
    } catch (e) {
      if (batch.length === 1) return batch[0]!.reject(e as Error);
      for (const w of batch) {
        await this.exec([w.item]).then(
          (outs) => w.resolve(outs[0]!),
          (err: Error) => w.reject(err),
        );
      }
    }
  }
}
