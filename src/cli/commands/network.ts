/** `cleanroom network policy get|set` and `cleanroom network denied`: the workspace's egress policy and what it denied. */
import { readFileSync } from 'node:fs';
import type { Command } from 'commander';
import type { EgressPolicy, EgressRule } from '../../sdk/client.js';
import { connect, printJson, UsageError } from '../context.js';
import { printTable } from './jobs.js';

/** registerNetwork adds the `network` command group. */
export function registerNetwork(program: Command): void {
  const network = program.command('network').description("the workspace's egress policy and denied connections");
  const policy = network.command('policy').description('egress allow-list of new workloads (default: deny all egress)');
  policy
    .command('get')
    .description("show the workspace's egress policy")
    .option('--json', 'JSON output (a valid input for `set --file`)')
    .action(async (opts: { json?: boolean }) => {
      const client = connect();
      const p = await client.getNetworkPolicy();
      client.close();
      if (opts.json) return printJson(p);
      printPolicy(p);
    });
  policy
    .command('set')
    .description('replace the egress policy; it applies to workloads created from now on')
    .option('--allow <rule>', 'allow CIDR[:PORT[-PORT]][/tcp|udp|icmp|any] (repeatable; a port alone means tcp)', collect, [])
    .option('--dry-run', 'allow everything, but record what the allow-list would deny')
    .option('--file <policy.json>', 'start from a policy file ({"allow": [{"cidr", "protocol", "port"}], "dryRun"}); --allow rules are added to it')
    .option('--json', 'JSON output')
    .action(async (opts: { allow: string[]; dryRun?: boolean; file?: string; json?: boolean }) => {
      const base = opts.file ? readPolicyFile(opts.file) : { allow: [] };
      const body: EgressPolicy = { ...base, allow: [...base.allow, ...opts.allow.map(parseAllow)], ...(opts.dryRun ? { dryRun: true } : {}) };
      const client = connect();
      const p = await client.setNetworkPolicy(body);
      client.close();
      if (opts.json) return printJson(p);
      printPolicy(p);
    });
  network
    .command('denied')
    .description('list connections the egress policy denied (or in dry-run would have), newest first')
    .option('--job <id>', "only this job's")
    .option('--limit <n>', 'how many', '50')
    .option('--json', 'JSON output')
    .action(async (opts: { job?: string; limit: string; json?: boolean }) => {
      const limit = Number(opts.limit);
      if (!Number.isInteger(limit) || limit < 1) throw new UsageError(`--limit: "${opts.limit}" is not a positive whole number`);
      const client = connect();
      const list = await client.listDeniedConnections({ limit, ...(opts.job ? { jobId: opts.job } : {}) });
      client.close();
      if (opts.json) return printJson(list);
      printTable(['TIME', 'JOB', 'ACTION', 'DESTINATION', 'PROTO', 'PORT'], list.map((d) => [d.time, d.jobId, d.action, d.destination, d.protocol, d.port === null ? '-' : String(d.port)]));
    });
}

// Parses CIDR[:PORT[-PORT]][/PROTOCOL]; the control plane judges the parts (so its errors, with their codes, reach the user).
function parseAllow(spec: string): EgressRule {
  let rest = spec.trim();
  const proto = /\/([A-Za-z]+)$/.exec(rest);
  if (proto) rest = rest.slice(0, proto.index);
  const colon = rest.lastIndexOf(':');
  const cidr = colon < 0 ? rest : rest.slice(0, colon);
  const port = colon < 0 ? undefined : rest.slice(colon + 1);
  if (!cidr) throw new UsageError(`--allow ${spec}: expected CIDR[:PORT[-PORT]][/tcp|udp|icmp|any]`);
  return {
    cidr,
    ...(proto ? { protocol: proto[1]!.toLowerCase() as EgressRule['protocol'] } : {}),
    ...(port === undefined ? {} : { port: /^\d+$/.test(port) ? Number(port) : port }),
  };
}

function readPolicyFile(path: string): EgressPolicy {
  let parsed: unknown;
  try {
    parsed = JSON.parse(readFileSync(path, 'utf8'));
  } catch (e) {
    throw new UsageError(`--file ${path}: ${(e as Error).message}`);
  }
  const p = parsed as Partial<EgressPolicy> | null;
  if (typeof p !== 'object' || p === null || Array.isArray(p) || (p.allow !== undefined && !Array.isArray(p.allow))) {
    throw new UsageError(`--file ${path}: expected {"allow": [{"cidr": "…", "protocol": "…", "port": …}], "dryRun": false}`);
  }
  return { ...p, allow: p.allow ?? [] };
}

function printPolicy(p: EgressPolicy): void {
  if (p.allow.length === 0) process.stdout.write('allow: nothing (all egress denied)\n');
  else printTable(['ALLOW CIDR', 'PROTO', 'PORT'], p.allow.map((r) => [r.cidr, r.protocol ?? 'any', r.port === undefined ? '-' : String(r.port)]));
  process.stdout.write(`dry-run: ${p.dryRun ? 'on (nothing is blocked; what the allow-list would deny is recorded)' : 'off'}\n`);
}

function collect(value: string, previous: string[]): string[] {
  return [...previous, value];
}
