/** `cleanroom serve control|agent`: one process alone on this host, in the foreground (for systemd units and containers). */
import type { Command } from 'commander';
import { join } from 'node:path';
import { loadConfig } from '../../shared/config.js';
import { dataPaths } from '../../shared/paths.js';
import { bootstrapAdmin, checkAgentHost, checkControlHost, ENTRY_POINTS, renderConfig } from '../../supervisor/standalone.js';
import { defaultDataDir } from '../context.js';

interface ServeOptions {
  dataDir: string;
  config?: string;
  adminKeyFile?: string;
}

/** registerServe adds `serve control` and `serve agent`. */
export function registerServe(program: Command): void {
  const serve = program.command('serve').description('run the control plane or an agent alone, in the foreground (systemd, containers); `up` runs both on one host');
  const common = (c: Command) =>
    c
      .option('--data-dir <dir>', 'state directory of this process', defaultDataDir())
      .option('--config <file>', 'config template: written to <data dir>/config.json with ${NAME} replaced by environment variables');
  common(serve.command('control'))
    .description('the control plane: API, data service and agent channel (unprivileged; PKI and KEK from `cleanroom pki export --role control`)')
    .option('--admin-key-file <file>', 'where a first platform-admin key is written (0600) when the store has none (default: <data dir>/control/admin-key)')
    .action(async (opts: ServeOptions) => {
      const paths = dataPaths(opts.dataDir);
      const config = opts.config ? renderConfig(opts.config, paths, process.env) : loadConfig(paths.config);
      checkControlHost(paths, config);
      const keyFile = await bootstrapAdmin(paths, config, opts.adminKeyFile ?? join(paths.control.dir, 'admin-key'));
      if (keyFile) process.stderr.write(`cleanroom: a first platform-admin API key was created; it is in ${keyFile} (read it once, then remove the file)\n`);
      await runEntryPoint('control', paths.dataDir);
    });
  common(serve.command('agent'))
    .description('an agent: runs cells on this host and dials the control plane (root; PKI from `cleanroom pki export --role agent`)')
    .action(async (opts: ServeOptions) => {
      const paths = dataPaths(opts.dataDir);
      if (opts.config) renderConfig(opts.config, paths, process.env);
      else loadConfig(paths.config);
      checkAgentHost(paths);
      await runEntryPoint('agent', paths.dataDir);
    });
}

/** runEntryPoint runs a process's own main in this process (no extra process between the service manager and it). */
async function runEntryPoint(role: 'control' | 'agent', dataDir: string): Promise<void> {
  process.argv = [process.argv[0]!, ENTRY_POINTS[role], '--data-dir', dataDir];
  await import(ENTRY_POINTS[role]);
}
