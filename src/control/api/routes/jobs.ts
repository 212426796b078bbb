/** Job routes: create (optionally streaming the run), list, get, cancel, logs (complete or live over SSE). */
import type { FastifyReply, FastifyRequest } from 'fastify';
import { z } from 'zod';
import type { Job, Workspace } from '../../model.js';
import type { JobService } from '../../jobs/job-service.js';
import { isTerminal } from '../../jobs/job-service.js';
import { JobRequestSchema } from '../../jobs/job-request.js';
import { JOB_BATCH_MAX } from '../../jobs/job-batch.js';
import type { OutputHub } from '../../jobs/output-hub.js';
import type { Quotas } from '../../quotas/quotas.js';
import { actorOf, type RouteTable } from '../route-table.js';
import { JobView, jobView, OutputChunkView } from '../views.js';

/** LOG_PAGE_MAX bounds one page of stored output (chunks are at most 64 KiB: a page is at most 16 MiB). */
const LOG_PAGE_MAX = 256;
/** STREAM_PAGE: chunks a live stream reads from the store at a time when it catches up (≤ 1 MiB of output). */
const STREAM_PAGE = 16;
/** STREAM_HIGH_WATER_BYTES: past this much unsent, a live stream stops taking live events and catches up from the store. */
const STREAM_HIGH_WATER_BYTES = 1024 * 1024;
/** How long a stream of a job it found untouched (JobService.untouched) waits before it reads the job's status once. */
const UNTOUCHED_STATUS_CHECK_MS = 1000;

const FOLLOW = z.enum(['true', 'false', '1', '0']).optional();
const isOn = (v: z.infer<typeof FOLLOW>): boolean => v === 'true' || v === '1';

const CreateQuery = z
  .object({ follow: FOLLOW.describe('answer with a text/event-stream: `created` (Job), then `output` events and one `end` event, in this one round trip') })
  .strict();

const LogsQuery = z
  .object({
    follow: FOLLOW.describe('stream live over SSE until the job ends'),
    after: z.coerce.number().int().min(0).optional().describe('only chunks with a greater seq'),
    limit: z.coerce.number().int().min(1).max(LOG_PAGE_MAX).optional().describe(`at most this many chunks (default and maximum ${LOG_PAGE_MAX}); page on with after = nextAfter`),
  })
  .strict();

/** registerJobRoutes adds the job operations. */
export function registerJobRoutes(t: RouteTable, jobs: JobService, hub: OutputHub, quotas: Quotas): void {
  t.add({
    method: 'POST',
    path: '/v1/jobs',
    operationId: 'createJob',
    summary: 'Run a command in a fresh cell; with follow=true, also stream its output and end in the same response',
    auth: 'key',
    body: JobRequestSchema,
    query: CreateQuery,
    status: 201,
    response: JobView.describe('with follow=true: text/event-stream of one `created` event (Job), `output` events (OutputChunk) and one `end` event (Job)'),
    errors: ['limit_exceeded', 'unsupported_runtime', 'runtime_not_offered', 'size_not_offered', 'quota_exceeded', 'image_not_found', 'image_not_ready'],
    handler: async ({ principal, body, query, reply, request }) => {
      const job = await jobs.create(principal.workspace, body, actorOf(principal));
      if (!isOn(query.follow)) return jobView(job);
      return streamLive({ jobs, hub, quotas, workspace: principal.workspace, job, after: 0, reply, request, status: 201, created: true });
    },
  });
  t.add({
    method: 'POST',
    path: '/v1/jobs/batch',
    operationId: 'createJobs',
    summary: `Create up to ${JOB_BATCH_MAX} jobs in one request, all or none: an invalid item (its index in details.index and the message), a quota the whole batch does not fit in, or a failed write creates nothing; the jobs come back in request order, each placed or queued as by createJob`,
    auth: 'key',
    body: z
      .object({ jobs: z.array(JobRequestSchema).min(1).max(JOB_BATCH_MAX).describe('job requests, each as the body of POST /v1/jobs') })
      .strict(),
    status: 201,
    response: z.object({ jobs: z.array(JobView).describe('the created jobs, in request order') }),
    errors: ['limit_exceeded', 'unsupported_runtime', 'runtime_not_offered', 'size_not_offered', 'quota_exceeded', 'image_not_found', 'image_not_ready', 'payload_too_large'],
    handler: async ({ principal, body }) => {
      // The request paid one of the workspace's rate; each further job pays one too, so batches do not multiply it.
      if (body.jobs.length > 1) quotas.takeRequest(principal.workspace, body.jobs.length - 1);
      return { jobs: (await jobs.createBatch(principal.workspace, body.jobs, actorOf(principal))).map(jobView) };
    },
  });
  t.add({
    method: 'GET',
    path: '/v1/jobs',
    operationId: 'listJobs',
    summary: "List the workspace's jobs, newest first",
    auth: 'key',
    query: z.object({ limit: z.coerce.number().int().min(1).max(1000).optional() }).strict(),
    response: z.object({ jobs: z.array(JobView) }),
    handler: async ({ principal, query }) => ({ jobs: (await jobs.list(principal.workspace, query.limit ?? 100)).map(jobView) }),
  });
  t.add({
    method: 'GET',
    path: '/v1/jobs/:id',
    operationId: 'getJob',
    summary: 'Get a job',
    auth: 'key',
    response: JobView,
    errors: ['not_found'],
    handler: async ({ principal, params }) => jobView(await jobs.get(principal.workspace, params.id!)),
  });
  t.add({
    method: 'POST',
    path: '/v1/jobs/:id/cancel',
    operationId: 'cancelJob',
    summary: 'Cancel a job; it ends as `cancelled`',
    auth: 'key',
    status: 202,
    response: JobView,
    errors: ['not_found', 'conflict'],
    handler: async ({ principal, params }) => jobView(await jobs.cancel(principal.workspace, params.id!)),
  });
  t.add({
    method: 'GET',
    path: '/v1/jobs/:id/logs',
    operationId: 'getJobLogs',
    summary: "A job's output: JSON when complete, or a live SSE stream with follow=true",
    auth: 'key',
    query: LogsQuery,
    errors: ['not_found', 'quota_exceeded'],
    response: z
      .object({
        chunks: z.array(OutputChunkView),
        complete: z.boolean().describe('the job has ended and this page holds its last chunk'),
        nextAfter: z.number().int().nullable().describe('pass as `after` for the next page; null when there is no more output now'),
      })
      .describe('with follow=true: text/event-stream of `output` events (OutputChunk JSON) and one `end` event (Job JSON)'),
    handler: async ({ principal, params, query, reply, request }) => {
      const job = await jobs.get(principal.workspace, params.id!);
      const after = query.after ?? 0;
      if (!isOn(query.follow)) {
        const limit = query.limit ?? LOG_PAGE_MAX;
        const chunks = await jobs.output(job, after, limit);
        const full = chunks.length === limit;
        return {
          chunks: chunks.map((c) => ({ seq: c.seq, stream: c.stream, data: c.data.toString('base64') })),
          complete: isTerminal(job) && !full,
          nextAfter: full ? chunks.at(-1)!.seq : null,
        };
      }
      return streamLive({ jobs, hub, quotas, workspace: principal.workspace, job, after, reply, request, status: 200, created: false });
    },
  });
}

/** LiveStream is one SSE response following a job: which job, from which chunk, on which connection. */
interface LiveStream {
  jobs: JobService;
  hub: OutputHub;
  quotas: Quotas;
  workspace: Workspace;
  job: Job;
  after: number;
  reply: FastifyReply;
  request: FastifyRequest;
  status: number;
  /** Whether to open with a `created` event (the create call's own stream). */
  created: boolean;
}

/**
 * streamLive takes over the response and streams the job's output after `after`, then its end, as server-sent events.
 * Live events are only a prompt: the store is the source, so a reader slower than the job never grows this process's
 * memory. While the socket holds more than STREAM_HIGH_WATER_BYTES unsent, live chunks are skipped; on 'drain' the
 * stream catches up from the store, a page at a time, and then follows live again.
 */
async function streamLive({ jobs, hub, quotas, workspace, job, after, reply, request, status, created }: LiveStream): Promise<undefined> {
  // Counted against the workspace's live-stream quota (429 before the response starts), released when it closes.
  const release = quotas.openStream(workspace);
  reply.raw.once('close', release);
  reply.hijack();
  const res = reply.raw;
  res.writeHead(status, { 'content-type': 'text/event-stream', 'cache-control': 'no-store', connection: 'keep-alive', ...(created ? { location: `/v1/jobs/${job.id}` } : {}) });
  res.flushHeaders(); // the client knows its stream is open before the job says anything
  let last = after;
  let ended: Job | null = null;
  let catchingUp = false;
  /** A 'stored' prompt came while catching up: read the store once more before following live again. */
  let storedMore = false;
  let closed = false;
  let lastLive: { seq: number; stream: string; data: Buffer } | null = null;
  const write = (event: string, data: unknown) => res.write(`event: ${event}\ndata: ${JSON.stringify(data)}\n\n`);
  const congested = () => res.writableLength > STREAM_HIGH_WATER_BYTES;
  const sendChunk = (c: { seq: number; stream: string; data: Buffer }) => {
    if (c.seq <= last) return true;
    if (c.seq !== last + 1) return false; // a gap: the store has it, catch up from there
    last = c.seq;
    write('output', { seq: c.seq, stream: c.stream, data: c.data.toString('base64') });
    return true;
  };
  const finish = () => {
    if (closed) return;
    closed = true;
    write('end', jobView(ended!));
    unsubscribe();
    res.end();
  };
  // catchUp sends stored chunks after `last` until none is left, waiting for 'drain' whenever the socket is full.
  const catchUp = async (): Promise<void> => {
    if (catchingUp || closed) return;
    catchingUp = true;
    try {
      for (;;) {
        storedMore = false;
        if (congested()) {
          await new Promise<void>((resolve) => {
            const done = () => {
              res.off('drain', done).off('close', done);
              resolve();
            };
            res.on('drain', done).on('close', done);
          });
        }
        if (closed || res.destroyed) return;
        const page = await jobs.output(job, last, STREAM_PAGE);
        for (const c of page) {
          if (c.seq > last) {
            last = c.seq;
            write('output', { seq: c.seq, stream: c.stream, data: c.data.toString('base64') });
          }
        }
        if (page.length < STREAM_PAGE && !congested()) {
          // The newest live chunk may not be stored yet (it is published first): send it from the event.
          if (lastLive && lastLive.seq === last + 1) sendChunk(lastLive);
          if (!storedMore) break;
        }
      }
    } finally {
      catchingUp = false;
    }
    if (ended) finish();
  };
  if (created) write('created', jobView(job));
  // Subscribe first, then replay what is stored, so nothing falls between the two.
  const unsubscribe = hub.subscribe(job.id, (e) => {
    if (closed || e.type === 'started') return;
    if (e.type === 'end') {
      ended = e.job;
      if (!catchingUp) void catchUp();
      return;
    }
    if (e.type === 'stored') {
      // Another replica stored output up to e.seq: read it from the store.
      if (e.seq <= last) return;
      if (catchingUp) storedMore = true;
      else void catchUp();
      return;
    }
    lastLive = e.chunk;
    if (catchingUp) return;
    if (congested() || !sendChunk(e.chunk)) void catchUp();
  });
  let statusCheck: NodeJS.Timeout | null = null;
  request.raw.on('close', () => {
    closed = true;
    unsubscribe();
    if (statusCheck) clearTimeout(statusCheck);
  });
  if (after === 0 && jobs.untouched(job.id)) {
    // A job this replica has just placed, with no output and no end heard of yet, has nothing to replay: live events
    // follow, and the first of them is not held behind a read of the store. Its status is still read, later and off that
    // path: an end announced by another replica may have been lost (the bus only prompts), and a stream must not wait for
    // it for ever.
    statusCheck = setTimeout(() => {
      statusCheck = null;
      if (closed || ended) return;
      void jobs.get(workspace, job.id).then((now) => {
        if (!closed && !ended && isTerminal(now)) {
          ended = now;
          if (!catchingUp) void catchUp();
        }
      }, () => {});
    }, UNTOUCHED_STATUS_CHECK_MS);
    statusCheck.unref();
    return undefined;
  }
  await catchUp();
  if (closed) return undefined;
  const now = await jobs.get(workspace, job.id);
  if (isTerminal(now) && !ended) {
    ended = now;
    await catchUp();
  }
  return undefined;
}
