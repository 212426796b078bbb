/** OutputRing keeps a process's most recent output, addressed by byte offset (seq), within a fixed budget. */

/** OutputSegment is one chunk of output as init read it: where it starts, which stream, the bytes. */
export interface OutputSegment {
  seq: number;
  stream: 'stdout' | 'stderr' | 'pty';
  data: Buffer;
}

/**
 * OutputRing holds at most `capacityBytes` of output (whole chunks are dropped from the front to make room). `start`
 * is the oldest retained offset, `end` the offset after the last byte ever appended.
 */
export class OutputRing {
  private segments: OutputSegment[] = [];
  private head = 0;
  private bytes = 0;
  start = 0;
  end = 0;

  constructor(private readonly capacityBytes: number) {}

  /** append adds a chunk at `end` and drops the oldest chunks beyond the capacity. */
  append(stream: OutputSegment['stream'], data: Buffer): void {
    if (data.length === 0) return;
    this.segments.push({ seq: this.end, stream, data });
    this.end += data.length;
    this.bytes += data.length;
    while (this.bytes > this.capacityBytes && this.head < this.segments.length - 1) {
      const s = this.segments[this.head++]!;
      this.bytes -= s.data.length;
      this.start = s.seq + s.data.length;
    }
    if (this.head > 64 && this.head * 2 > this.segments.length) {
      this.segments = this.segments.slice(this.head);
      this.head = 0;
    }
  }

  /** clear drops everything retained (start moves to end); later appends go on from end. */
  clear(): void {
    this.segments = [];
    this.head = 0;
    this.bytes = 0;
    this.start = this.end;
  }

  /** retainedBytes is how much output the ring holds. */
  get retainedBytes(): number {
    return this.bytes;
  }

  /**
   * read returns the output at `seq` (or at `start`, if seq was dropped), from one stream, at most `max` bytes; null
   * when nothing is there yet.
   */
  read(seq: number, max: number): OutputSegment | null {
    if (seq < this.start) seq = this.start;
    if (seq >= this.end || max <= 0) return null;
    // Binary search for the segment holding seq.
    let lo = this.head;
    let hi = this.segments.length - 1;
    while (lo < hi) {
      const mid = (lo + hi + 1) >> 1;
      if (this.segments[mid]!.seq <= seq) lo = mid;
      else hi = mid - 1;
    }
    const s = this.segments[lo]!;
    const off = seq - s.seq;
    return { seq, stream: s.stream, data: s.data.subarray(off, off + max) };
  }
}
