/** `cleanroom down`: stop a detached Cleanroom; the agent wipes every cell before it exits. */
import type { Command } from 'commander';
import { dataPaths } from '../../shared/paths.js';
import { runningPid, stopProcess } from '../../supervisor/processes.js';
import { defaultDataDir } from '../context.js';
import { Progress } from '../progress.js';

/** registerDown adds `down`. */
export function registerDown(program: Command): void {
  program
    .command('down')
    .description('stop the control plane and agent started with `up --detach` (every cell is wiped)')
    .option('--data-dir <dir>', 'state directory', defaultDataDir())
    .action(async (opts: { dataDir: string }) => {
      const paths = dataPaths(opts.dataDir);
      if (runningPid(paths, 'agent') === null && runningPid(paths, 'control') === null) {
        process.stdout.write('not running\n');
        return;
      }
      const p = new Progress('stopping');
      p.update('agent: wiping cells');
      const killedAgent = await stopProcess(paths, 'agent', 30_000);
      p.update('control plane');
      const killedControl = await stopProcess(paths, 'control', 10_000);
      p.done(killedAgent || killedControl ? 'stopped (forced after timeout)' : 'stopped');
    });
}
