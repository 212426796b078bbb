/** createJobs submits many jobs through the API with a bounded number of requests in flight (a fleet test's and bench's load). */
import { TERMINAL, type CleanroomClient, type Job, type JobRequest } from '../../src/sdk/client.js';

/** Created is one job the API accepted: its id, the status the create answered with, and when its request was sent. */
export interface Created {
  id: string;
  status: Job['status'];
  /** performance.now() when the create request was sent. */
  sentMs: number;
  /** performance.now() when its answer arrived. */
  answeredMs: number;
}

/**
 * createJobs sends `n` creates, `inFlight` at a time (or until performance.now() passes `untilMs`); rejects with the first
 * failure (after the others in flight settle).
 */
export async function createJobs(client: CleanroomClient, n: number, inFlight: number, req: JobRequest = { command: ['/bin/echo', 'hi'] }, untilMs = Number.POSITIVE_INFINITY): Promise<Created[]> {
  const out: Created[] = [];
  let next = 0;
  let failure: Error | null = null;
  await Promise.all(
    Array.from({ length: Math.min(inFlight, n) }, async () => {
      while (next < n && !failure && performance.now() < untilMs) {
        next++;
        const sentMs = performance.now();
        try {
          const job = await client.createJob(req);
          out.push({ id: job.id, status: job.status, sentMs, answeredMs: performance.now() });
        } catch (e) {
          failure ??= e as Error;
        }
      }
    }),
  );
  if (failure) throw failure;
  return out;
}

/** fetchJobs reads many jobs by id, `inFlight` at a time. */
export async function fetchJobs(client: CleanroomClient, ids: readonly string[], inFlight = 32): Promise<Job[]> {
  const out: Job[] = new Array(ids.length);
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(inFlight, ids.length) }, async () => {
      while (next < ids.length) {
        const i = next++;
        out[i] = await client.getJob(ids[i]!);
      }
    }),
  );
  return out;
}

/** waitEnded polls until every job has ended and (unless it ended as error) has its wipe receipt; returns them by id. */
export async function waitEnded(client: CleanroomClient, ids: readonly string[], timeoutMs: number): Promise<Map<string, Job>> {
  const done = new Map<string, Job>();
  const deadline = Date.now() + timeoutMs;
  let open = [...ids];
  for (;;) {
    const jobs = await fetchJobs(client, open);
    for (const j of jobs) if (TERMINAL.includes(j.status as (typeof TERMINAL)[number]) && (j.wipe !== null || j.status === 'error')) done.set(j.id, j);
    open = open.filter((id) => !done.has(id));
    if (open.length === 0) return done;
    if (Date.now() > deadline) throw new Error(`${open.length} of ${ids.length} jobs not ended with a receipt within ${timeoutMs} ms (e.g. ${JSON.stringify(jobs.find((j) => j.id === open[0]))})`);
    await new Promise((r) => setTimeout(r, 250));
  }
}
