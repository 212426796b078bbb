/** Sandbox process routes: start (or run and stream until exit), list, output (SSE from a seq), stdin, signal, resize. */
import { z } from 'zod';
import { ApiError } from '../../../shared/errors.js';
import type { Quotas } from '../../quotas/quotas.js';
import type { SandboxService } from '../../sandboxes/sandbox-service.js';
import type { ProcessRelay, ProcessSpec } from '../../sandboxes/process-relay.js';
import { JobRequestSchema } from '../../jobs/job-request.js';
import type { RouteTable } from '../route-table.js';
import { openSse, sseSink } from './sandbox-output.js';

/** SIGNALS are the signal names a client may send, by number. */
export const SIGNALS: Record<string, number> = { SIGHUP: 1, SIGINT: 2, SIGQUIT: 3, SIGKILL: 9, SIGUSR1: 10, SIGUSR2: 12, SIGTERM: 15, SIGCONT: 18, SIGSTOP: 19, SIGTSTP: 20, SIGWINCH: 28 };

const TermSize = z.number().int().min(1).max(1000);

/** ProcessRequestSchema is the body of `POST /v1/sandboxes/:id/processes`. */
export const ProcessRequestSchema = z
  .object({
    cmd: z.array(z.string().max(65536)).min(1).max(4096).optional().describe('argv, run directly (no shell)'),
    shell: z.string().max(262144).optional().describe('a shell command line, run as /bin/sh -c SHELL'),
    env: JobRequestSchema.shape.env.describe("added to the sandbox's env"),
    cwd: z.string().max(4096).optional().describe('working directory (default /work; created if missing)'),
    timeoutSeconds: z.number().positive().max(86400).optional().describe('kill the process (its group, SIGKILL) after this long'),
    stdin: z.boolean().optional().describe('keep stdin open for POST …/stdin and WebSocket input (default false: /dev/null)'),
    background: z.boolean().optional().describe('informational: the caller will not wait on this process'),
    keepAlive: z.boolean().optional().describe("while it runs, the process counts as activity for the sandbox's idle limit (default true)"),
    pty: z.object({ cols: TermSize, rows: TermSize }).strict().optional().describe('run on a terminal of this size (output is one stream, `pty`; input always open)'),
  })
  .strict()
  .refine((b) => (b.cmd === undefined) !== (b.shell === undefined), 'give exactly one of cmd (argv) or shell (a command line)');

const ProcessView = z.object({
  procId: z.string(),
  pid: z.number().nullable().describe('process id inside the sandbox'),
  argv: z.array(z.string()).describe('the first arguments, cut'),
  pty: z.boolean(),
  running: z.boolean(),
  exitCode: z.number().nullable(),
  signal: z.number().nullable(),
  timedOut: z.boolean(),
  startedAt: z.string(),
  firstSeq: z.number().describe('oldest output offset still retained (attach from here or later)'),
  nextSeq: z.number().describe('end of the output so far'),
});

const FromSeq = z.coerce.number().int().min(0).max(Number.MAX_SAFE_INTEGER).optional().describe('output byte offset to start from (default 0); resume with the last seq + its data length');

/** registerSandboxProcessRoutes adds the process operations. */
export function registerSandboxProcessRoutes(t: RouteTable, sandboxes: SandboxService, processes: ProcessRelay, quotas: Quotas): void {
  t.add({
    method: 'POST',
    path: '/v1/sandboxes/:id/processes',
    operationId: 'startProcess',
    summary: 'Start a process in a sandbox; with wait=true, stream its output (SSE) until it exits in this response',
    auth: 'key',
    body: ProcessRequestSchema,
    query: z.object({ wait: z.enum(['true', 'false', '1', '0']).optional().describe('stream `started`, `output`… and `exit` as server-sent events') }).strict(),
    status: 201,
    response: z.object({ procId: z.string(), pid: z.number() }).describe('with wait=true: text/event-stream of `started` {procId, pid}, `output` {seq, stream, data (base64)} and one `exit` {exitCode, signal, timedOut, outputSeq} (or `error` {code, message})'),
    errors: ['not_found', 'sandbox_not_running', 'process_start_failed', 'quota_exceeded', 'unavailable'],
    handler: async ({ principal, params, body, query, reply }) => {
      const sb = await sandboxes.live(principal.workspace, params.id!);
      const spec = specOf(body);
      if (query.wait !== 'true' && query.wait !== '1') {
        const { procId, pid } = await processes.start(sb, spec);
        return { procId, pid };
      }
      const release = quotas.openStream(principal.workspace);
      reply.hijack();
      const res = reply.raw;
      res.once('close', release);
      openSse(res, 201);
      const sink = sseSink(res);
      // The client going away detaches (also while the start is on its way); the process runs on.
      let streamId: string | null = null;
      let gone = false;
      res.once('close', () => {
        gone = true;
        if (streamId) processes.detach(streamId);
      });
      try {
        const r = await processes.start(sb, spec, sink);
        streamId = r.streamId;
        if (gone && streamId) processes.detach(streamId);
        else res.write(`event: started\ndata: ${JSON.stringify({ procId: r.procId, pid: r.pid })}\n\n`);
      } catch (e) {
        sink.fail(e instanceof ApiError ? e : new ApiError('internal', 'internal error'));
      }
      return undefined;
    },
  });
  t.add({
    method: 'GET',
    path: '/v1/sandboxes/:id/processes',
    operationId: 'listProcesses',
    summary: "List a sandbox's processes, running and recently ended",
    auth: 'key',
    response: z.object({ processes: z.array(ProcessView) }),
    errors: ['not_found', 'sandbox_not_running', 'unavailable'],
    handler: async ({ principal, params }) => ({ processes: await processes.list(await sandboxes.live(principal.workspace, params.id!)) }),
  });
  t.add({
    method: 'GET',
    path: '/v1/sandboxes/:id/processes/:proc',
    operationId: 'getProcess',
    summary: 'Get one process (by procId or pid)',
    auth: 'key',
    response: ProcessView,
    errors: ['not_found', 'sandbox_not_running', 'unavailable'],
    handler: async ({ principal, params }) => processes.find(await sandboxes.live(principal.workspace, params.id!), params.proc!),
  });
  t.add({
    method: 'GET',
    path: '/v1/sandboxes/:id/processes/:proc/output',
    operationId: 'streamProcessOutput',
    summary: "Stream a process's output from fromSeq (SSE) until it exits; a disconnect never stops the process",
    auth: 'key',
    query: z.object({ fromSeq: FromSeq }).strict(),
    response: { contentType: 'text/event-stream', description: '`output` events {seq, stream, data (base64)}, then `exit` {exitCode, signal, timedOut, outputSeq} or `error` {code, message}' },
    errors: ['not_found', 'sandbox_not_running', 'quota_exceeded', 'unavailable'],
    handler: async ({ principal, params, query, reply }) => {
      const sb = await sandboxes.live(principal.workspace, params.id!);
      const release = quotas.openStream(principal.workspace);
      let attached: { close: () => void } | null = null;
      try {
        const res = reply.raw;
        const sink = sseSink(res);
        // Answer with an error status if the process is unknown: attach checks before anything is written.
        const pending: Array<() => void> = [];
        let open = false;
        const gated = {
          output: (seq: number, stream: 'stdout' | 'stderr' | 'pty', data: Buffer) => (open ? sink.output(seq, stream, data) : (pending.push(() => sink.output(seq, stream, data)), true)),
          onDrain: sink.onDrain,
          exit: (e: Parameters<typeof sink.exit>[0]) => (open ? sink.exit(e) : pending.push(() => sink.exit(e))),
          fail: (e: ApiError) => (open ? sink.fail(e) : pending.push(() => sink.fail(e))),
        };
        attached = await processes.attach(sb, params.proc!, query.fromSeq ?? 0, gated);
        reply.hijack();
        res.once('close', release);
        openSse(res, 200);
        open = true;
        for (const p of pending.splice(0)) p();
        const a = attached;
        if (res.destroyed) a.close();
        else res.once('close', () => a.close());
      } catch (e) {
        release();
        attached?.close();
        throw e;
      }
      return undefined;
    },
  });
  t.add({
    method: 'POST',
    path: '/v1/sandboxes/:id/processes/:proc/stdin',
    operationId: 'writeProcessStdin',
    summary: "Write to a process's stdin (data in base64, or text), and/or close it",
    auth: 'key',
    body: z
      .object({
        data: z.string().max(1_400_000).optional().describe('bytes, base64 (at most 1 MiB)'),
        text: z.string().max(1_000_000).optional().describe('UTF-8 text'),
        close: z.boolean().optional().describe('close stdin after this input (EOF)'),
      })
      .strict(),
    status: 204,
    response: { contentType: 'none', description: 'taken' },
    errors: ['not_found', 'sandbox_not_running', 'process_ended', 'conflict', 'unavailable'],
    handler: async ({ principal, params, body }) => {
      const sb = await sandboxes.live(principal.workspace, params.id!);
      const info = await processes.find(sb, params.proc!);
      if (!info.running) throw new ApiError('process_ended', `process ${params.proc!} has exited`);
      const bytes = Buffer.concat([body.data ? Buffer.from(body.data, 'base64') : Buffer.alloc(0), Buffer.from(body.text ?? '', 'utf8')]);
      if (bytes.length > 0) await processes.writeStdin(sb, info.procId, bytes);
      if (body.close) await processes.writeStdin(sb, info.procId, null);
      return null;
    },
  });
  t.add({
    method: 'POST',
    path: '/v1/sandboxes/:id/processes/:proc/signal',
    operationId: 'signalProcess',
    summary: "Send a signal to a process's group",
    auth: 'key',
    body: z.object({ signal: z.union([z.number().int().min(1).max(64), z.enum(Object.keys(SIGNALS) as [string, ...string[]])]).describe('number or name (SIGTERM, SIGKILL, SIGINT…)') }).strict(),
    status: 204,
    response: { contentType: 'none', description: 'sent' },
    errors: ['not_found', 'sandbox_not_running', 'process_ended', 'unavailable'],
    handler: async ({ principal, params, body }) => {
      const sb = await sandboxes.live(principal.workspace, params.id!);
      await processes.signal(sb, params.proc!, typeof body.signal === 'number' ? body.signal : SIGNALS[body.signal]!);
      return null;
    },
  });
  t.add({
    method: 'POST',
    path: '/v1/sandboxes/:id/processes/:proc/resize',
    operationId: 'resizeProcess',
    summary: "Change a PTY process's terminal size",
    auth: 'key',
    body: z.object({ cols: TermSize, rows: TermSize }).strict(),
    status: 204,
    response: { contentType: 'none', description: 'sent' },
    errors: ['not_found', 'sandbox_not_running', 'process_ended', 'unavailable'],
    handler: async ({ principal, params, body }) => {
      const sb = await sandboxes.live(principal.workspace, params.id!);
      const info = await processes.find(sb, params.proc!);
      if (!info.running) throw new ApiError('process_ended', `process ${params.proc!} has exited`);
      processes.resize(sb, info.procId, body.cols, body.rows);
      return null;
    },
  });
}

/** specOf turns a validated request into what the agent runs. */
export function specOf(body: z.infer<typeof ProcessRequestSchema>): ProcessSpec {
  const argv = body.cmd ?? ['/bin/sh', '-c', body.shell!];
  if (argv.some((a) => a.includes('\0'))) throw new ApiError('invalid_request', 'body.cmd: arguments must not contain NUL bytes');
  const cwd = body.cwd ?? '/work';
  if (!cwd.startsWith('/') || cwd.includes('\0') || cwd.split('/').includes('..')) throw new ApiError('invalid_request', `body.cwd must be an absolute path without "..": got ${JSON.stringify(cwd)}`);
  return {
    argv,
    env: body.env ?? {},
    cwd,
    timeoutMs: body.timeoutSeconds === undefined ? null : Math.ceil(body.timeoutSeconds * 1000),
    pty: body.pty ?? null,
    stdin: body.stdin ?? false,
    keepAlive: body.keepAlive ?? true,
  };
}
