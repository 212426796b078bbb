/** `cleanroom audit ls|verify`: the hash-chained security log. */
import type { Command } from 'commander';
import { connect, printJson, UsageError } from '../context.js';
import { printTable } from './jobs.js';

/** registerAudit adds the `audit` command group. */
export function registerAudit(program: Command): void {
  const audit = program.command('audit').description('the append-only, hash-chained log of security events');
  audit
    .command('ls')
    .description("list events, newest first (your workspace's; a platform admin sees every workspace's)")
    .option('--type <type>', 'only this event type, e.g. token.revoked')
    .option('--limit <n>', 'how many', '50')
    .option('--before <seq>', 'only events older than this sequence number')
    .option('--workspace <id-or-name>', "only this workspace's events (a platform admin: any workspace)")
    .option('--json', 'JSON output')
    .action(async (opts: { type?: string; limit: string; before?: string; workspace?: string; json?: boolean }) => {
      const limit = Number(opts.limit);
      if (!Number.isInteger(limit) || limit < 1) throw new UsageError(`--limit: "${opts.limit}" is not a positive whole number`);
      const before = opts.before === undefined ? undefined : Number(opts.before);
      if (before !== undefined && !(Number.isInteger(before) && before > 0)) throw new UsageError(`--before: "${opts.before}" is not a sequence number`);
      const client = connect();
      const events = await client.listAuditEvents({ limit, ...(before !== undefined ? { before } : {}), ...(opts.type ? { type: opts.type } : {}), ...(opts.workspace ? { workspace: opts.workspace } : {}) });
      client.close();
      if (opts.json) return printJson(events);
      printTable(
        ['SEQ', 'TIME', 'TYPE', 'ACTOR', 'SUBJECT', 'DETAILS'],
        events.map((e) => [String(e.seq), e.time, e.type, e.actor, e.subject ?? '-', JSON.stringify(e.details).slice(0, 80)]),
      );
    });
  audit
    .command('verify')
    .description('check the whole hash chain; exits 1 and names the first broken event if it was altered (platform admin)')
    .option('--json', 'JSON output')
    .action(async (opts: { json?: boolean }) => {
      const client = connect();
      const v = await client.verifyAudit();
      client.close();
      if (opts.json) printJson(v);
      else if (v.ok) process.stdout.write(`audit chain intact: ${v.events} events, last hash ${v.lastHash}\n`);
      else process.stdout.write(`audit chain BROKEN at event ${v.brokenAt}: ${v.reason} (${v.events} events checked)\n`);
      if (!v.ok) process.exitCode = 1;
    });
}
