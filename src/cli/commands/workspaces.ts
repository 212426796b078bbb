/** `cleanroom workspaces ls|create` (platform-admin keys only). */
import type { Command } from 'commander';
import { connect, printJson, UsageError } from '../context.js';
import { printTable } from './jobs.js';

/** registerWorkspaces adds the workspace commands. */
export function registerWorkspaces(program: Command): void {
  const ws = program.command('workspaces').description('manage workspaces (platform admin)');
  ws.command('ls')
    .option('--json', 'JSON output')
    .action(async (opts: { json?: boolean }) => {
      const client = connect();
      const list = await client.listWorkspaces();
      client.close();
      if (opts.json) return printJson(list);
      printTable(['ID', 'NAME', 'MAX CPU', 'MAX MEMORY MiB', 'MAX TIMEOUT s'], list.map((w) => [w.id, w.name, String(w.maxCpu), String(w.maxMemoryMiB), String(w.maxTimeoutSeconds)]));
    });
  ws.command('create')
    .argument('<name>')
    .option('--max-cpu <n>')
    .option('--max-memory-mib <n>')
    .option('--max-timeout-seconds <n>')
    .option('--json', 'JSON output')
    .action(async (name: string, opts: { maxCpu?: string; maxMemoryMib?: string; maxTimeoutSeconds?: string; json?: boolean }) => {
      const client = connect();
      const w = await client.createWorkspace({
        name,
        ...(opts.maxCpu ? { maxCpu: num(opts.maxCpu) } : {}),
        ...(opts.maxMemoryMib ? { maxMemoryMiB: num(opts.maxMemoryMib) } : {}),
        ...(opts.maxTimeoutSeconds ? { maxTimeoutSeconds: num(opts.maxTimeoutSeconds) } : {}),
      });
      client.close();
      if (opts.json) return printJson(w);
      process.stdout.write(`${w.id} ${w.name}\n`);
    });
}

function num(s: string): number {
  const n = Number(s);
  if (!Number.isFinite(n)) throw new UsageError(`"${s}" is not a number`);
  return n;
}
