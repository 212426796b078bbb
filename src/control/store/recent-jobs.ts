/**
 * RecentJobs remembers the version and document of the jobs this process last read or wrote (a bounded, least
 * recently used set). It is never the truth: a write made from it is a compare-and-set on the version, so an entry
 * another replica has outdated only costs the write a re-read.
 */

/** RecentJob is a job's document as JSON text at a version of its row. */
export interface RecentJob {
  version: number;
  doc: string;
}

/** RecentJobs is an LRU of RecentJob by job id. */
export class RecentJobs {
  private readonly entries = new Map<string, RecentJob>();

  constructor(private readonly capacity: number) {}

  get(id: string): RecentJob | undefined {
    const e = this.entries.get(id);
    if (e) {
      // Map keeps insertion order: re-inserting makes it the most recent.
      this.entries.delete(id);
      this.entries.set(id, e);
    }
    return e;
  }

  set(id: string, e: RecentJob): void {
    this.entries.delete(id);
    this.entries.set(id, e);
    if (this.entries.size > this.capacity) this.entries.delete(this.entries.keys().next().value!);
  }

  forget(id: string): void {
    this.entries.delete(id);
  }
}
