/** `cleanroom sandbox create|ls|get|exec|shell|cp|kill`, on the public SDK's Sandbox. */
import { createReadStream, createWriteStream, statSync } from 'node:fs';
import { pipeline } from 'node:stream/promises';
import type { Command } from 'commander';
import { Sandbox } from '../../sdk/sandbox.js';
import { parseDurationSeconds, parseSize, MIB } from '../../shared/units.js';
import { connect, printJson, UsageError } from '../context.js';
import { printTable } from './jobs.js';

interface CreateOptions {
  cpu?: string;
  memory?: string;
  disk?: string;
  timeout?: string;
  idleTimeout?: string;
  runtime?: string;
  env: string[];
  meta: string[];
  json?: boolean;
}

const collect = (v: string, acc: string[]) => [...acc, v];

/** registerSandbox adds the `sandbox` command group. */
export function registerSandbox(program: Command): void {
  const sb = program.command('sandbox').description('long-lived cells: run commands, open a shell, copy files');
  sb.command('create')
    .description('create a sandbox and print its id once it is ready')
    .option('--cpu <cores>', 'CPU cores')
    .option('--memory <size>', 'memory limit, e.g. 512M')
    .option('--disk <size>', 'encrypted volume size, e.g. 1G')
    .option('--timeout <duration>', 'life from ready, e.g. 30m (default 5m)')
    .option('--idle-timeout <duration>', 'end after this long without activity, e.g. 10m')
    .option('--runtime <name>', 'runc (default) or runsc')
    .option('-e, --env <KEY=VALUE>', 'environment of its processes (repeatable)', collect, [])
    .option('-m, --meta <KEY=VALUE>', 'metadata to find it by (repeatable)', collect, [])
    .option('--json', 'print the sandbox as JSON')
    .action(async (opts: CreateOptions) => {
      const client = connect();
      const num = (v: string | undefined, what: string, parse: (s: string) => number | null) => {
        if (v === undefined) return undefined;
        const n = parse(v);
        if (n === null) throw new UsageError(`${what}: cannot read "${v}"`);
        return n;
      };
      const memory = num(opts.memory, '--memory', parseSize);
      const disk = num(opts.disk, '--disk', parseSize);
      const timeout = num(opts.timeout, '--timeout', parseDurationSeconds);
      const idle = num(opts.idleTimeout, '--idle-timeout', parseDurationSeconds);
      const s = await Sandbox.create(
        {
          ...(opts.cpu ? { cpu: Number(opts.cpu) } : {}),
          ...(memory !== undefined ? { memoryMiB: Math.ceil(memory / MIB) } : {}),
          ...(disk !== undefined ? { diskMiB: Math.ceil(disk / MIB) } : {}),
          ...(timeout !== undefined ? { timeoutSeconds: timeout } : {}),
          ...(idle !== undefined ? { idleTimeoutSeconds: idle } : {}),
          ...(opts.runtime ? { runtime: opts.runtime } : {}),
          ...(opts.env.length ? { env: pairs(opts.env, '--env') } : {}),
          ...(opts.meta.length ? { metadata: pairs(opts.meta, '--meta') } : {}),
        },
        client,
      );
      client.close();
      if (opts.json) return printJson(s.info);
      process.stdout.write(`${s.id}\n`);
    });
  sb.command('ls')
    .description("list the workspace's sandboxes (live by default)")
    .option('-m, --meta <KEY=VALUE>', 'only those with this metadata (repeatable)', collect, [])
    .option('--all', 'ended ones too')
    .option('--limit <n>', 'how many', '50')
    .option('--json', 'JSON output')
    .action(async (opts: { meta: string[]; all?: boolean; limit: string; json?: boolean }) => {
      const client = connect();
      const page = await Sandbox.list({ metadata: pairs(opts.meta, '--meta'), state: opts.all ? 'all' : 'live', limit: Number(opts.limit) }, client);
      client.close();
      if (opts.json) return printJson(page.sandboxes);
      printTable(
        ['ID', 'STATE', 'ENDS/ENDED', 'RUNTIME', 'METADATA'],
        page.sandboxes.map((s) => [s.id, s.state === 'ended' ? `ended (${s.endReason ?? ''})` : s.state, s.endsAt ?? s.endedAt ?? '-', s.runtime, Object.entries(s.metadata).map(([k, v]) => `${k}=${v}`).join(',')]),
      );
    });
  sb.command('get')
    .argument('<id>')
    .description('show a sandbox')
    .option('--json', 'JSON output')
    .action(async (id: string, opts: { json?: boolean }) => {
      const client = connect();
      const s = await Sandbox.connect(id, client);
      client.close();
      if (opts.json) return printJson(s.info);
      const i = s.info;
      const lines: Array<[string, string]> = [
        ['id', i.id],
        ['state', i.state + (i.endReason ? ` (${i.endReason})` : '')],
        ['message', i.message ?? '-'],
        ['runtime', i.runtime],
        ['resources', `cpu=${i.cpu} memory=${i.memoryMiB}MiB disk=${i.diskMiB}MiB`],
        ['timeout', `${i.timeoutSeconds}s, idle ${i.idleTimeoutSeconds || '-'}s`],
        ['ends', i.endsAt ?? '-'],
        ['ended', i.endedAt ?? '-'],
        ['metadata', JSON.stringify(i.metadata)],
        ['wipe', i.wipe ? `volume ${i.wipe.volumeId} shredded in ${i.wipe.totalMs.toFixed(0)} ms (key ${i.wipe.keyIdentifier}: ${i.wipe.keyStateAfterRemoval})` : '-'],
      ];
      for (const [k, v] of lines) process.stdout.write(`${k.padEnd(10)} ${v}\n`);
    });
  sb.command('exec')
    .argument('<id>')
    .argument('<command...>', 'program and arguments (after --); one argument with spaces runs through /bin/sh -c')
    .description('run a command in a sandbox, stream its output, exit with its exit code')
    .option('-e, --env <KEY=VALUE>', 'environment variable (repeatable)', collect, [])
    .option('--cwd <dir>', 'working directory (default /work)')
    .option('--timeout <duration>', 'kill it after this long')
    .option('-i, --stdin', 'pass this terminal\'s stdin to the process')
    .action(async (id: string, command: string[], opts: { env: string[]; cwd?: string; timeout?: string; stdin?: boolean }) => {
      const client = connect();
      const s = await Sandbox.connect(id, client);
      const timeout = opts.timeout === undefined ? undefined : parseDurationSeconds(opts.timeout);
      if (timeout === null) throw new UsageError(`--timeout: cannot read "${opts.timeout}"`);
      const cmd = command.length === 1 && /\s/.test(command[0]!) ? command[0]! : command;
      const started = await s.start(cmd, { ...(opts.env.length ? { env: pairs(opts.env, '--env') } : {}), ...(opts.cwd ? { cwd: opts.cwd } : {}), ...(timeout !== undefined ? { timeoutSeconds: timeout } : {}), ...(opts.stdin ? { stdin: true } : {}) });
      if (opts.stdin) {
        void (async () => {
          for await (const chunk of process.stdin) await s.sendStdin(started.procId, chunk as Buffer);
          await s.closeStdin(started.procId).catch(() => {});
        })();
      }
      const exit = await s.attach(started.procId, { onStdout: (d) => process.stdout.write(d), onStderr: (d) => process.stderr.write(d) });
      client.close();
      process.exitCode = exit.exitCode ?? (exit.signal !== null ? 128 + exit.signal : 1);
      if (!opts.stdin) return;
      process.exit(process.exitCode);
    });
  sb.command('shell')
    .argument('<id>')
    .description('open an interactive terminal in a sandbox (exit the shell to leave)')
    .option('--cmd <program>', 'program to run instead of /bin/sh -l')
    .action(async (id: string, opts: { cmd?: string }) => {
      const client = connect();
      const s = await Sandbox.connect(id, client);
      const out = process.stdout;
      const size = () => ({ cols: out.columns || 80, rows: out.rows || 24 });
      const term = await s.pty.create({ ...size(), ...(opts.cmd ? { cmd: [opts.cmd] } : {}), env: { TERM: process.env.TERM ?? 'xterm' }, onData: (d) => out.write(d) });
      const stdin = process.stdin;
      const raw = stdin.isTTY === true;
      if (raw) stdin.setRawMode(true);
      const restore = () => {
        if (raw) stdin.setRawMode(false);
        stdin.pause();
      };
      const onResize = () => term.resize(size().cols, size().rows);
      process.on('SIGWINCH', onResize);
      out.on('resize', onResize);
      stdin.on('data', (d: Buffer) => term.input(d));
      stdin.resume();
      try {
        const exit = await term.exited;
        process.exitCode = exit.exitCode ?? (exit.signal !== null ? 128 + exit.signal : 1);
      } finally {
        restore();
        process.off('SIGWINCH', onResize);
        out.off('resize', onResize);
        term.close();
        client.close();
      }
      process.exit(process.exitCode ?? 0);
    });
  sb.command('cp')
    .argument('<from>', 'LOCAL or ID:PATH')
    .argument('<to>', 'LOCAL or ID:PATH')
    .description('copy a file into or out of a sandbox (ID:/work/file)')
    .action(async (from: string, to: string) => {
      const remote = (s: string) => /^sbx_[0-9a-f]+:\//.exec(s) ? { id: s.slice(0, s.indexOf(':')), path: s.slice(s.indexOf(':') + 1) } : null;
      const src = remote(from);
      const dst = remote(to);
      if ((src === null) === (dst === null)) throw new UsageError('cp copies between this machine and a sandbox: one side is LOCAL, the other ID:/PATH');
      const client = connect();
      if (dst) {
        statSync(from); // a missing local file is reported before anything is sent
        const s = await Sandbox.connect(dst.id, client);
        const r = await s.files.write(dst.path, createReadStream(from));
        process.stderr.write(`${r.bytes} bytes → ${dst.id}:${r.path}\n`);
      } else if (src) {
        const s = await Sandbox.connect(src.id, client);
        await pipeline(await s.files.readStream(src.path), to === '-' ? process.stdout : createWriteStream(to));
      }
      client.close();
    });
  sb.command('kill')
    .argument('<id>')
    .description('end a sandbox (its cell is wiped)')
    .option('--json', 'print the final state as JSON')
    .action(async (id: string, opts: { json?: boolean }) => {
      const client = connect();
      const s = await Sandbox.connect(id, client);
      const info = await s.kill();
      client.close();
      if (opts.json) return printJson(info);
      process.stdout.write(`${info.id} ${info.state}${info.endReason ? ` (${info.endReason})` : ''}\n`);
    });
}

function pairs(list: string[], flag: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const kv of list) {
    const i = kv.indexOf('=');
    if (i <= 0) throw new UsageError(`${flag} wants KEY=VALUE, got "${kv}"`);
    out[kv.slice(0, i)] = kv.slice(i + 1);
  }
  return out;
}
