/** `cleanroom doctor`: can this host run cells? The checks themselves are the supervisor's (supervisor/host-checks.ts). */
import type { Command } from 'commander';
import { hostChecks } from '../../supervisor/host-checks.js';
import { printJson, UsageError } from '../context.js';
import { printTable } from './jobs.js';

/** registerDoctor adds `doctor`. */
export function registerDoctor(program: Command): void {
  program
    .command('doctor')
    .description('check that this host can run confined cells with encrypted storage (run as root)')
    .option('--json', 'JSON output')
    .action(async (opts: { json?: boolean }) => {
      if (process.getuid?.() !== 0) throw new UsageError('cleanroom doctor must run as root');
      const checks = await hostChecks();
      const ok = checks.every((c) => c.ok);
      if (opts.json) printJson({ ok, checks });
      else {
        printTable(['CHECK', 'OK', 'DETAIL'], checks.map((c) => [c.name, c.ok ? 'yes' : 'NO', c.detail]));
        process.stdout.write(ok ? '\nThis host can run Cleanroom cells.\n' : '\nThis host cannot run Cleanroom cells; fix the checks marked NO.\n');
      }
      if (!ok) process.exitCode = 1;
    });
}
