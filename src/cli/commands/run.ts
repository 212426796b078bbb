/** `cleanroom run -- CMD ARGS…`: run a job, stream its output live, exit with its exit code. */
import type { Command } from 'commander';
import type { Job, JobRequest } from '../../sdk/client.js';
import { parseDurationSeconds, parseSize, MIB } from '../../shared/units.js';
import { connect, printJson, UsageError } from '../context.js';

/** exitCodeOf maps a job's end to a process exit code (as `docker run` and `timeout` do). */
export function exitCodeOf(job: Job): number {
  switch (job.status) {
    case 'succeeded':
      return 0;
    case 'failed':
      return job.exitCode ?? (job.signal !== null ? 128 + job.signal : 1);
    case 'timeout':
      return 124;
    case 'oom':
      return 137;
    case 'cancelled':
      return 130;
    default:
      return 125;
  }
}

interface RunOptions {
  cpu?: string;
  memory?: string;
  timeout?: string;
  disk?: string;
  runtime?: string;
  image?: string;
  env: string[];
  read: string[];
  write: string[];
  cwd?: string;
  detach?: boolean;
  json?: boolean;
}

/** registerRun adds `run`. */
export function registerRun(program: Command): void {
  program
    .command('run')
    .description('run a command in a fresh cell and stream its output; exits with its exit code')
    .argument('[command...]', "program and arguments (put them after --); none: the image's Entrypoint + Cmd")
    .option('--cpu <cores>', 'CPU cores, e.g. 0.5')
    .option('--memory <size>', 'memory limit, e.g. 256M or 1G')
    .option('--timeout <duration>', 'time limit, e.g. 30s, 5m')
    .option('--disk <size>', 'size of the encrypted /work + /tmp volume, e.g. 512M')
    .option('--runtime <name>', 'runc (default), crun, or runsc (gVisor)')
    .option('--image <name[:tag]>', 'the image to run on (NAME[:TAG] or sha256:…; default: the configured default image)')
    .option('-e, --env <KEY=VALUE>', 'environment variable (repeatable)', (v: string, acc: string[]) => [...acc, v], [])
    .option('--read <prefix>', "the job's token may read objects under this key prefix of the data store (repeatable)", (v: string, acc: string[]) => [...acc, v], [])
    .option('--write <prefix>', "the job's token may read and write objects under this prefix (repeatable)", (v: string, acc: string[]) => [...acc, v], [])
    .option('--cwd <dir>', 'working directory inside the cell (default /work)')
    .option('-d, --detach', 'print the job id and return without waiting')
    .option('--json', 'print the final job as JSON on stdout after the output')
    .action(async (command: string[], opts: RunOptions) => {
      const client = connect();
      const env: Record<string, string> = {};
      for (const kv of opts.env) {
        const i = kv.indexOf('=');
        if (i <= 0) throw new UsageError(`--env wants KEY=VALUE, got "${kv}"`);
        env[kv.slice(0, i)] = kv.slice(i + 1);
      }
      const memoryBytes = opts.memory === undefined ? undefined : parseSize(opts.memory);
      if (memoryBytes === null) throw new UsageError(`--memory: cannot read "${opts.memory}" (try 256M or 1G)`);
      const timeout = opts.timeout === undefined ? undefined : parseDurationSeconds(opts.timeout);
      if (timeout === null) throw new UsageError(`--timeout: cannot read "${opts.timeout}" (try 30s or 5m)`);
      const diskBytes = opts.disk === undefined ? undefined : parseSize(opts.disk);
      if (diskBytes === null) throw new UsageError(`--disk: cannot read "${opts.disk}" (try 512M or 1G)`);
      const cpu = opts.cpu === undefined ? undefined : Number(opts.cpu);
      if (cpu !== undefined && !Number.isFinite(cpu)) throw new UsageError(`--cpu: "${opts.cpu}" is not a number`);
      const data = [...opts.read.map((prefix) => ({ prefix, access: 'read' as const })), ...opts.write.map((prefix) => ({ prefix, access: 'read-write' as const }))];
      const req: JobRequest = {
        ...(command.length ? { command } : {}),
        ...(opts.image ? { image: opts.image } : {}),
        ...(data.length ? { data } : {}),
        ...(Object.keys(env).length ? { env } : {}),
        ...(opts.cwd ? { cwd: opts.cwd } : {}),
        ...(cpu !== undefined ? { cpu } : {}),
        ...(memoryBytes !== undefined ? { memoryMiB: Math.ceil(memoryBytes / MIB) } : {}),
        ...(timeout !== undefined ? { timeoutSeconds: timeout } : {}),
        ...(diskBytes !== undefined ? { diskMiB: Math.ceil(diskBytes / MIB) } : {}),
        ...(opts.runtime ? { runtime: opts.runtime } : {}),
      };
      if (opts.detach) {
        process.stdout.write((await client.createJob(req)).id + '\n');
        client.close();
        return;
      }
      // One round trip: the job is created and its output streams back on the same response.
      let jobId: string | null = null;
      let cancelling = false;
      const onInt = () => {
        if (cancelling || !jobId) process.exit(130);
        cancelling = true;
        process.stderr.write(`\ncancelling ${jobId} (Ctrl-C again to stop waiting)\n`);
        void client.cancelJob(jobId).catch(() => {});
      };
      process.on('SIGINT', onInt);
      const ended = await client.runJob(
        req,
        (c) => (c.stream === 'stdout' ? process.stdout : process.stderr).write(c.data),
        (job) => (jobId = job.id),
      );
      process.off('SIGINT', onInt);
      client.close();
      if (opts.json) printJson(ended);
      if (ended.status !== 'succeeded' && ended.status !== 'failed') {
        process.stderr.write(`cleanroom: job ${ended.id} ended: ${ended.status}${ended.message ? ` (${ended.message})` : ''}\n`);
      }
      process.exitCode = exitCodeOf(ended);
    });
}
