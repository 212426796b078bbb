/** Hands out a distinct host uid/gid range to each live cell. */
import { UID_RANGE_SIZE } from '../runtime/spec.js';

/** FIRST_HOST_UID is where cell ranges start: far above any host account, so host root is never mapped. */
const FIRST_HOST_UID = 1 << 24;
/** SLOTS is how many ranges fit between FIRST_HOST_UID and 2^31. */
const SLOTS = Math.floor((2 ** 31 - FIRST_HOST_UID) / UID_RANGE_SIZE);

/** UidRanges allocates per-cell uid ranges; a range is in use by at most one live cell at a time. */
export class UidRanges {
  private readonly used = new Set<number>();
  private next: number;

  /** Creates an allocator whose agent owns slots [offset, ...) — offsets differ per agent instance. */
  constructor(offset = 0) {
    this.next = offset % SLOTS;
  }

  /** acquire returns the base uid of a free range. */
  acquire(): number {
    for (let i = 0; i < SLOTS; i++) {
      const slot = (this.next + i) % SLOTS;
      if (!this.used.has(slot)) {
        this.used.add(slot);
        this.next = (slot + 1) % SLOTS;
        return FIRST_HOST_UID + slot * UID_RANGE_SIZE;
      }
    }
    throw new Error('no free uid range');
  }

  /** release frees the range starting at `base`. */
  release(base: number): void {
    this.used.delete((base - FIRST_HOST_UID) / UID_RANGE_SIZE);
  }
}
