/** Job routes: create (optionally streaming the run), list, get, cancel, logs (complete or live over SSE). */
import type { FastifyReply, FastifyRequest } from 'fastify';
import { z } from 'zod';
import type { Job, Workspace } from '../../model.js';
import type { JobService } from '../../jobs/job-service.js';
import { isTerminal } from '../../jobs/job-service.js';
import { JobRequestSchema } from '../../jobs/job-request.js';
import type { OutputHub } from '../../jobs/output-hub.js';
import { actorOf, type RouteTable } from '../route-table.js';
import { JobView, jobView, OutputChunkView } from '../views.js';

const FOLLOW = z.enum(['true', 'false', '1', '0']).optional();
const isOn = (v: z.infer<typeof FOLLOW>): boolean => v === 'true' || v === '1';

const CreateQuery = z
  .object({ follow: FOLLOW.describe('answer with a text/event-stream: `created` (Job), then `output` events and one `end` event, in this one round trip') })
  .strict();

const LogsQuery = z
  .object({
    follow: FOLLOW.describe('stream live over SSE until the job ends'),
    after: z.coerce.number().int().min(0).optional().describe('only chunks with a greater seq'),
  })
  .strict();

/** registerJobRoutes adds the job operations. */
export function registerJobRoutes(t: RouteTable, jobs: JobService, hub: OutputHub): void {
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
    errors: ['limit_exceeded', 'unsupported_runtime'],
    handler: async ({ principal, body, query, reply, request }) => {
      const job = await jobs.create(principal.workspace, body, actorOf(principal));
      if (!isOn(query.follow)) return jobView(job);
      return streamLive({ jobs, hub, workspace: principal.workspace, job, after: 0, reply, request, status: 201, created: true });
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
    response: z.object({ chunks: z.array(OutputChunkView), complete: z.boolean() }).describe('with follow=true: text/event-stream of `output` events (OutputChunk JSON) and one `end` event (Job JSON)'),
    errors: ['not_found'],
    handler: async ({ principal, params, query, reply, request }) => {
      const job = await jobs.get(principal.workspace, params.id!);
      const after = query.after ?? 0;
      if (!isOn(query.follow)) {
        const chunks = await jobs.output(job, after);
        return { chunks: chunks.map((c) => ({ seq: c.seq, stream: c.stream, data: c.data.toString('base64') })), complete: isTerminal(job) };
      }
      return streamLive({ jobs, hub, workspace: principal.workspace, job, after, reply, request, status: 200, created: false });
    },
  });
}

/** LiveStream is one SSE response following a job: which job, from which chunk, on which connection. */
interface LiveStream {
  jobs: JobService;
  hub: OutputHub;
  workspace: Workspace;
  job: Job;
  after: number;
  reply: FastifyReply;
  request: FastifyRequest;
  status: number;
  /** Whether to open with a `created` event (the create call's own stream). */
  created: boolean;
}

// Takes over the response and streams the job's output after `after`, then its end, as server-sent events.
async function streamLive({ jobs, hub, workspace, job, after, reply, request, status, created }: LiveStream): Promise<undefined> {
  reply.hijack();
  const res = reply.raw;
  res.writeHead(status, { 'content-type': 'text/event-stream', 'cache-control': 'no-store', connection: 'keep-alive', ...(created ? { location: `/v1/jobs/${job.id}` } : {}) });
  let last = after;
  const write = (event: string, data: unknown) => res.write(`event: ${event}\ndata: ${JSON.stringify(data)}\n\n`);
  const sendChunk = (c: { seq: number; stream: string; data: Buffer }) => {
    if (c.seq <= last) return;
    last = c.seq;
    write('output', { seq: c.seq, stream: c.stream, data: c.data.toString('base64') });
  };
  if (created) write('created', jobView(job));
  // Subscribe first, then replay what is stored, so nothing falls between the two.
  const backlog: Parameters<Parameters<OutputHub['subscribe']>[1]>[0][] = [];
  let replaying = true;
  const finish = (j: Job) => {
    write('end', jobView(j));
    unsubscribe();
    res.end();
  };
  const unsubscribe = hub.subscribe(job.id, (e) => {
    if (replaying) return void backlog.push(e);
    if (e.type === 'output') sendChunk(e.chunk);
    else finish(e.job);
  });
  request.raw.on('close', unsubscribe);
  for (const c of await jobs.output(job, after)) sendChunk(c);
  replaying = false;
  for (const e of backlog) {
    if (e.type === 'output') sendChunk(e.chunk);
    else return void finish(e.job);
  }
  const now = await jobs.get(workspace, job.id);
  if (isTerminal(now)) {
    for (const c of await jobs.output(job, last)) sendChunk(c);
    finish(now);
  }
  return undefined;
}

