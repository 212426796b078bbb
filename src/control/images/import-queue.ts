/** ImportQueue runs imports in the background, at most `limit` at once, the rest in arrival order. */
export class ImportQueue {
  private running = 0;
  private readonly waiting: Array<() => void> = [];

  constructor(private readonly limit: number) {}

  /** run starts `task` when a slot is free; the returned promise settles with it. */
  async run<T>(task: () => Promise<T>): Promise<T> {
    if (this.running >= this.limit) await new Promise<void>((resolve) => this.waiting.push(resolve));
    this.running++;
    try {
      return await task();
    } finally {
      this.running--;
      this.waiting.shift()?.();
    }
  }

  /** depth is how many imports run or wait. */
  get depth(): number {
    return this.running + this.waiting.length;
  }
}
