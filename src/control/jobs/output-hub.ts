/** OutputHub fans a running job's output and end out to live subscribers (SSE streams). */
import { EventEmitter } from 'node:events';
import type { Job, OutputChunk } from '../model.js';

/** JobStreamEvent is what a subscriber receives. */
export type JobStreamEvent =
  | { type: 'output'; chunk: OutputChunk }
  /** The job's output up to `seq` is in the store (another replica received it): live streams read it from there. */
  | { type: 'stored'; seq: number }
  /** remote: heard from another replica over the cluster bus (this replica did not apply it). */
  | { type: 'started'; job: Job; remote?: boolean }
  | { type: 'end'; job: Job; remote?: boolean };

/** LIFECYCLE is the emitter key of start and end events of every workload (job ids never contain a space). */
const LIFECYCLE = 'lifecycle events';

/** OutputHub is an in-process pub/sub keyed by job id. */
export class OutputHub {
  private readonly emitter = new EventEmitter();

  constructor() {
    this.emitter.setMaxListeners(0);
  }

  /** publish sends an event to every subscriber of the job (and a start or an end to every lifecycle watcher). */
  publish(jobId: string, event: JobStreamEvent): void {
    this.emitter.emit(jobId, event);
    if (event.type === 'started' || event.type === 'end') this.emitter.emit(LIFECYCLE, event);
  }

  /** onLifecycle registers a watcher of every workload's start and end (the sandbox relays and the metrics use it). */
  onLifecycle(listener: (e: Extract<JobStreamEvent, { type: 'started' | 'end' }>) => void): void {
    this.emitter.on(LIFECYCLE, listener);
  }

  /** listening says whether anything here follows the job (a stream of it, or a watcher of every workload's lifecycle). */
  listening(jobId: string): boolean {
    return this.emitter.listenerCount(jobId) > 0;
  }

  /** subscribe registers a listener and returns its unsubscribe function. */
  subscribe(jobId: string, listener: (e: JobStreamEvent) => void): () => void {
    this.emitter.on(jobId, listener);
    return () => this.emitter.off(jobId, listener);
  }
}
