/** OutputHub fans a running job's output and end out to live subscribers (SSE streams). */
import { EventEmitter } from 'node:events';
import type { Job, OutputChunk } from '../model.js';

/** JobStreamEvent is what a subscriber receives. */
export type JobStreamEvent = { type: 'output'; chunk: OutputChunk } | { type: 'end'; job: Job };

/** OutputHub is an in-process pub/sub keyed by job id. */
export class OutputHub {
  private readonly emitter = new EventEmitter();

  constructor() {
    this.emitter.setMaxListeners(0);
  }

  /** publish sends an event to every subscriber of the job. */
  publish(jobId: string, event: JobStreamEvent): void {
    this.emitter.emit(jobId, event);
    if (event.type === 'end') for (const l of this.endTaps) l(event.job);
  }

  private readonly endTaps: Array<(job: Job) => void> = [];

  /** onEnd observes the end of every job (the metrics count them). */
  onEnd(listener: (job: Job) => void): void {
    this.endTaps.push(listener);
  }

  /** subscribe registers a listener and returns its unsubscribe function. */
  subscribe(jobId: string, listener: (e: JobStreamEvent) => void): () => void {
    this.emitter.on(jobId, listener);
    return () => this.emitter.off(jobId, listener);
  }
}
