/** `cleanroom pool`: warm cells per agent, runtime and class. */
import type { Command } from 'commander';
import { connect, printJson } from '../context.js';
import { printTable } from './jobs.js';

/** registerPool adds `pool`. */
export function registerPool(program: Command): void {
  program
    .command('pool')
    .description('show the warm pool: target (sized from demand between min and max, and why), warm, preparing and busy cells')
    .option('--json', 'JSON output')
    .action(async (opts: { json?: boolean }) => {
      const client = connect();
      const p = await client.pool();
      client.close();
      if (opts.json) return printJson(p);
      const rows = Object.entries(p.agents).flatMap(([agent, entries]) =>
        Object.entries(entries).map(([key, e]) => [agent, key, String(e.target), `${e.min ?? '-'}..${e.max ?? '-'}`, String(e.warm), String(e.preparing), String(e.busy), e.reason ?? '']),
      );
      printTable(['AGENT', 'POOL', 'TARGET', 'MIN..MAX', 'WARM', 'PREPARING', 'BUSY', 'WHY'], rows);
      process.stdout.write('\n');
      const vols = Object.entries(p.volumes).map(([agent, v]) => [agent, String(v.warm), String(v.inUse), String(v.wiping), String(v.wiped), String(v.wipeFailed)]);
      printTable(['AGENT', 'VOLUMES WARM', 'IN USE', 'WIPING', 'WIPED', 'WIPE FAILED'], vols);
      for (const [agent, entries] of Object.entries(p.agents)) {
        for (const [key, e] of Object.entries(entries)) if (e.lastError) process.stdout.write(`\n${agent} ${key}: last prepare failed: ${e.lastError}\n`);
      }
    });
}
