/** `cleanroom keys create|ls|revoke`: API keys (workspace admins: their workspace's; platform admins: any). */
import { Option, type Command } from 'commander';
import type { ApiKeyRole } from '../../sdk/client.js';
import { connect, printJson } from '../context.js';
import { printTable } from './jobs.js';

const ROLES: readonly ApiKeyRole[] = ['platform-admin', 'workspace-admin', 'member'];

/** registerKeys adds the `keys` command group. */
export function registerKeys(program: Command): void {
  const keys = program.command('keys').description("manage API keys (workspace admin: its workspace's; platform admin: any)");
  keys
    .command('create')
    .description('mint a key; it is printed once and never stored in clear')
    .requiredOption('--workspace <id-or-name>')
    .requiredOption('--name <name>')
    .addOption(
      new Option('--role <role>', 'member: jobs, data, network policy; workspace-admin: also the workspace\'s keys and audit events; platform-admin: everything (only a platform admin may give it)')
        .choices(ROLES)
        .default('member'),
    )
    .option('--json', 'JSON output')
    .action(async (opts: { workspace: string; name: string; role: ApiKeyRole; json?: boolean }) => {
      const client = connect();
      const k = await client.createApiKey({ workspace: opts.workspace, name: opts.name, role: opts.role });
      client.close();
      if (opts.json) return printJson(k);
      process.stdout.write(`${k.key}\n`);
    });
  keys
    .command('ls')
    .description("list keys, revoked ones included (your workspace's; a platform admin sees every workspace's)")
    .option('--workspace <id-or-name>', 'only this workspace')
    .option('--json', 'JSON output')
    .action(async (opts: { workspace?: string; json?: boolean }) => {
      const client = connect();
      const list = await client.listApiKeys(opts.workspace === undefined ? {} : { workspace: opts.workspace });
      client.close();
      if (opts.json) return printJson(list);
      printTable(['ID', 'WORKSPACE', 'NAME', 'ROLE', 'CREATED', 'REVOKED'], list.map((k) => [k.id, k.workspaceId, k.name, k.role, k.createdAt, k.revokedAt ?? '-']));
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
