/** `cleanroom data put|get|ls|rm`: the workspace's encrypted object store. */
import { createReadStream, createWriteStream, renameSync, rmSync, statSync } from 'node:fs';
import { pipeline } from 'node:stream/promises';
import type { Command } from 'commander';
import { connect, printJson, UsageError } from '../context.js';
import { printTable } from './jobs.js';

/** registerData adds the `data` command group. */
export function registerData(program: Command): void {
  const data = program.command('data').description("the workspace's data store (objects encrypted at rest; jobs reach it with their token)");
  data
    .command('put')
    .description('store a file (or stdin with "-") under a key; replaces an existing object')
    .argument('<key>', 'object key, e.g. inputs/train.csv')
    .argument('[file]', 'file to upload; "-" or absent reads stdin', '-')
    .option('--json', 'JSON output')
    .action(async (key: string, file: string, opts: { json?: boolean }) => {
      const client = connect();
      const fromStdin = file === '-';
      const size = fromStdin ? undefined : fileSize(file);
      const stored = await client.putObject(key, fromStdin ? process.stdin : createReadStream(file), size);
      client.close();
      if (opts.json) return printJson(stored);
      process.stdout.write(`${stored.key}  ${stored.size} bytes  sha256 ${stored.sha256}\n`);
    });
  data
    .command('get')
    .description('write an object to a file (or stdout with "-")')
    .argument('<key>', 'object key')
    .argument('[file]', 'where to write; "-" or absent writes stdout', '-')
    .action(async (key: string, file: string) => {
      const client = connect();
      const body = await client.getObject(key);
      try {
        if (file === '-') await pipeline(body, process.stdout, { end: false });
        else {
          // A partial download never takes the file's name: the service stops mid-stream if an encrypted chunk fails its check.
          const partial = `${file}.partial`;
          try {
            await pipeline(body, createWriteStream(partial, { mode: 0o600 }));
            renameSync(partial, file);
          } catch (e) {
            rmSync(partial, { force: true });
            throw e;
          }
        }
      } finally {
        client.close();
      }
    });
  data
    .command('ls')
    .description('list objects under a key prefix')
    .argument('[prefix]', 'key prefix', '')
    .option('--limit <n>', 'at most this many', '1000')
    .option('--json', 'JSON output')
    .action(async (prefix: string, opts: { limit: string; json?: boolean }) => {
      const limit = Number(opts.limit);
      if (!Number.isInteger(limit) || limit < 1) throw new UsageError(`--limit: "${opts.limit}" is not a positive whole number`);
      const client = connect();
      const all = [];
      let after: string | undefined;
      do {
        const page = await client.listObjects({ prefix, limit: Math.min(1000, limit - all.length), ...(after !== undefined ? { after } : {}) });
        all.push(...page.objects);
        after = page.next ?? undefined;
      } while (after !== undefined && all.length < limit);
      client.close();
      if (opts.json) return printJson(all);
      printTable(['KEY', 'SIZE', 'CREATED', 'SHA256'], all.map((o) => [o.key, String(o.size), o.createdAt, o.sha256.slice(0, 16)]));
    });
  data
    .command('rm')
    .description('delete an object')
    .argument('<key>', 'object key')
    .action(async (key: string) => {
      const client = connect();
      await client.deleteObject(key);
      client.close();
    });
}

function fileSize(path: string): number {
  try {
    return statSync(path).size;
  } catch (e) {
    throw new UsageError(`${path}: ${(e as Error).message}`);
  }
}
