/** `cleanroom workspaces ls|create` and `cleanroom keys create|revoke` (admin keys only). */
import type { Command } from 'commander';
import { connect, printJson, UsageError } from '../context.js';
import { printTable } from './jobs.js';

/** registerAdmin adds the workspace and key commands. */
export function registerAdmin(program: Command): void {
  const ws = program.command('workspaces').description('manage workspaces (admin)');
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
  const keys = program.command('keys').description('manage API keys (admin)');
  keys
    .command('create')
    .requiredOption('--workspace <id-or-name>')
    .requiredOption('--name <name>')
    .option('--admin', 'the key may manage workspaces and keys')
    .option('--json', 'JSON output')
    .action(async (opts: { workspace: string; name: string; admin?: boolean; json?: boolean }) => {
      const client = connect();
      const k = await client.createApiKey({ workspace: opts.workspace, name: opts.name, ...(opts.admin ? { admin: true } : {}) });
      client.close();
      if (opts.json) return printJson(k);
      process.stdout.write(`${k.key}\n`);
    });
  keys
    .command('revoke')
    .description('revoke an API key; it stops working at once')
    .argument('<id>', 'key id (the part after crk_ and before the next _)')
    .action(async (id: string) => {
      const client = connect();
      const r = await client.revokeApiKey(id);
      client.close();
      process.stdout.write(`revoked ${r.id} at ${r.revokedAt}\n`);
    });
}

function num(s: string): number {
  const n = Number(s);
  if (!Number.isFinite(n)) throw new UsageError(`"${s}" is not a number`);
  return n;
}
