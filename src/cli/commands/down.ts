/** `cleanroom down`: stop a detached Cleanroom; the agent wipes every cell, and whatever a dead agent left is reconciled. */
import type { Command } from 'commander';
import { dataPaths } from '../../shared/paths.js';
import { runningPid, stopAll } from '../../supervisor/processes.js';
import { defaultDataDir } from '../context.js';
import { Progress } from '../progress.js';

/** registerDown adds `down`. */
export function registerDown(program: Command): void {
  program
    .command('down')
    .description('stop the control plane and agent started with `up --detach`; every cell is wiped, also those of an agent that died')
    .option('--data-dir <dir>', 'state directory', defaultDataDir())
    .action(async (opts: { dataDir: string }) => {
      const paths = dataPaths(opts.dataDir);
      const wasRunning = runningPid(paths, 'agent') !== null || runningPid(paths, 'control') !== null;
      const p = new Progress('stopping');
      p.update(wasRunning ? 'agent: wiping cells' : 'not running; reconciling what an earlier run left');
      // The agent first (it wipes its cells), then the agent's own reconcile for what a dead or killed agent left,
      // then the control plane. A stop is reported only once no process of ours lives.
      const r = await stopAll(paths);
      const found = Object.entries(r.reconciled).filter(([, n]) => n > 0).map(([k, n]) => `${n} ${k}`);
      const detail = [r.forced.length ? `forced after timeout: ${r.forced.join(', ')}` : '', found.length ? `reconciled ${found.join(', ')}` : ''].filter(Boolean).join('; ');
      if (r.leftovers.length) {
        p.done('stopped, but the host still holds objects it could not remove');
        process.stderr.write(r.leftovers.map((l) => `  ${l}\n`).join(''));
        process.exitCode = 1;
        return;
      }
      p.done(`${wasRunning ? 'stopped' : 'not running'}${detail ? ` (${detail})` : ''}`);
    });
}
