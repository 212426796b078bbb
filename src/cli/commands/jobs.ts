/** `cleanroom jobs ls|get|logs|cancel|create-batch`. */
import { readFileSync } from 'node:fs';
import type { Command } from 'commander';
import type { JobRequest } from '../../sdk/client.js';
import { connect, printJson } from '../context.js';
import { policySummary } from '../policy-summary.js';

/** registerJobs adds the `jobs` command group. */
export function registerJobs(program: Command): void {
  const jobs = program.command('jobs').description('list and inspect jobs');
  jobs
    .command('ls')
    .description("list the workspace's jobs, newest first")
    .option('--limit <n>', 'how many', '20')
    .option('--json', 'JSON output')
    .action(async (opts: { limit: string; json?: boolean }) => {
      const client = connect();
      const list = await client.listJobs(Number(opts.limit));
      client.close();
      if (opts.json) return printJson(list);
      const rows = list.map((j) => [j.id, j.status, j.exitCode === null ? '-' : String(j.exitCode), j.runtime, j.createdAt, j.command.join(' ').slice(0, 40)]);
      printTable(['ID', 'STATUS', 'EXIT', 'RUNTIME', 'CREATED', 'COMMAND'], rows);
    });
  jobs
    .command('get')
    .argument('<id>')
    .description('show a job')
    .option('--json', 'JSON output')
    .action(async (id: string, opts: { json?: boolean }) => {
      const client = connect();
      const j = await client.getJob(id);
      client.close();
      if (opts.json) return printJson(j);
      const lines = [
        ['id', j.id],
        ['status', j.status],
        ['exit code', j.exitCode ?? '-'],
        ['signal', j.signal ?? '-'],
        ['message', j.message ?? '-'],
        ['command', JSON.stringify(j.command)],
        ['runtime', j.runtime],
        ['resources', `cpu=${j.cpu} memory=${j.memoryMiB}MiB disk=${j.diskMiB}MiB timeout=${j.timeoutSeconds}s`],
        ['created', j.createdAt],
        ['started', j.startedAt ?? '-'],
        ['ended', j.endedAt ?? '-'],
        ['egress', policySummary(j.egress)],
        ['wipe', j.wipe ? `volume ${j.wipe.volumeId} shredded in ${j.wipe.totalMs.toFixed(0)} ms (key ${j.wipe.keyIdentifier}: ${j.wipe.keyStateAfterRemoval})` : '-'],
      ];
      for (const [k, v] of lines) process.stdout.write(`${String(k).padEnd(10)} ${v}\n`);
    });
  jobs
    .command('logs')
    .argument('<id>')
    .description("print a job's output (-f to follow it live)")
    .option('-f, --follow', 'stream until the job ends')
    .option('--json', 'JSON output (chunks with base64 data)')
    .action(async (id: string, opts: { follow?: boolean; json?: boolean }) => {
      const client = connect();
      if (opts.follow) {
        await client.followLogs(id, (c) => (c.stream === 'stdout' ? process.stdout : process.stderr).write(c.data));
      } else {
        const r = await client.logs(id);
        if (opts.json) printJson({ complete: r.complete, chunks: r.chunks.map((c) => ({ seq: c.seq, stream: c.stream, data: c.data.toString('base64') })) });
        else for (const c of r.chunks) (c.stream === 'stdout' ? process.stdout : process.stderr).write(c.data);
      }
      client.close();
    });
  jobs
    .command('create-batch')
    .argument('[file]', 'a JSON array of job requests (each the body of POST /v1/jobs); "-" or absent reads stdin', '-')
    .description('create up to 100 jobs in one request, all or none (POST /v1/jobs/batch); prints their ids in order')
    .option('--json', 'JSON output (the created jobs)')
    .action(async (file: string, opts: { json?: boolean }) => {
      const text = readFileSync(file === '-' ? 0 : file, 'utf8');
      const parsed = JSON.parse(text) as JobRequest[] | { jobs: JobRequest[] };
      const client = connect();
      try {
        const created = await client.createJobs(Array.isArray(parsed) ? parsed : parsed.jobs);
        if (opts.json) return printJson(created);
        for (const j of created) process.stdout.write(`${j.id} ${j.status}\n`);
      } finally {
        client.close();
      }
    });
  jobs
    .command('cancel')
    .argument('<id>')
    .description('cancel a job')
    .option('--json', 'JSON output')
    .action(async (id: string, opts: { json?: boolean }) => {
      const client = connect();
      const j = await client.cancelJob(id);
      client.close();
      if (opts.json) return printJson(j);
      process.stdout.write(`${j.id} ${j.status === 'cancelled' ? 'cancelled' : 'cancelling'}\n`);
    });
}

/** printTable prints rows aligned under headers. */
export function printTable(headers: string[], rows: string[][]): void {
  const widths = headers.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  for (const r of [headers, ...rows]) process.stdout.write(r.map((c, i) => c.padEnd(widths[i] ?? 0)).join('  ').trimEnd() + '\n');
}
