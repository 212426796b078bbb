/** `cleanroom agents ls|drain|undrain|remove`: the fleet of agents, for operators (platform admins). */
import type { Command } from 'commander';
import type { AgentInfo } from '../../sdk/client.js';
import { connect, printJson } from '../context.js';
import { printTable } from './jobs.js';

/** registerAgents adds the `agents` command group. */
export function registerAgents(program: Command): void {
  const agents = program.command('agents').description('the agents (hosts) jobs are placed on: list, drain, undrain, remove (platform admin)');
  agents
    .command('ls')
    .description('list agents: state, running jobs of capacity, offered runtimes and size classes, warm and preparing cells, when connected and last heard from')
    .option('--json', 'JSON output')
    .action(async (opts: { json?: boolean }) => {
      const client = connect();
      const list = await client.listAgents();
      client.close();
      if (opts.json) return printJson(list);
      printTable(
        ['ID', 'STATE', 'RUNNING', 'RUNTIMES', 'CLASSES', 'WARM', 'PREPARING', 'CONNECTED', 'LAST SEEN'],
        list.map((a) => [a.id, a.state, `${a.running}/${a.capacity}`, a.offers ? a.offers.runtimes.join(',') || 'none' : 'any', classesSummary(a), warmSummary(a), String(a.preparing), a.connectedAt ?? '-', a.lastSeenAt]),
      );
    });
  agents
    .command('drain')
    .description('place no new work on the agent; what runs there finishes')
    .argument('<id>', 'agent id (cleanroom agents ls)')
    .action(async (id: string) => {
      const client = connect();
      const a = await client.drainAgent(id);
      client.close();
      process.stdout.write(`agent ${a.id} draining: ${a.running} job(s) still running\n`);
    });
  agents
    .command('undrain')
    .description('let the agent take work again (re-admits a removed agent: it may connect again)')
    .argument('<id>', 'agent id')
    .action(async (id: string) => {
      const client = connect();
      const a = await client.undrainAgent(id);
      client.close();
      process.stdout.write(`agent ${a.id} ${a.state}\n`);
    });
  agents
    .command('remove')
    .description('forget an agent: it must be disconnected, or drained with nothing running; its unfinished jobs end as error, and it is refused if it connects again until undrained')
    .argument('<id>', 'agent id')
    .action(async (id: string) => {
      const client = connect();
      const a = await client.removeAgent(id);
      client.close();
      process.stdout.write(`agent ${a.id} removed\n`);
    });
}

/** warmSummary renders warm cells per runtime/class (and image) briefly: `runc/small 2, runsc/small@0123456789ab 1`. */
function warmSummary(a: AgentInfo): string {
  if (a.warm.length === 0) return a.connected ? '0' : '-';
  return a.warm.map((w) => `${w.runtime}/${w.sizeClass}${w.image ? `@${w.image.slice(7, 19)}` : ''} ${w.cells}`).join(', ');
}

/** classesSummary renders the size classes an agent offers: `small(1cpu/512M/256M),large(…)`; `any` when it does not say. */
function classesSummary(a: AgentInfo): string {
  if (!a.offers) return 'any';
  return a.offers.classes.map((c) => `${c.name}(${c.cpu}cpu/${c.memoryMiB}M/${c.diskMiB}M)`).join(',');
}
