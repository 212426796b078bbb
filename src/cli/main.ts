/** The `cleanroom` command line. Every command but up/down/serve/pki (host set-up) goes through the public SDK. */
import { Command, CommanderError } from 'commander';
import { registerUp } from './commands/up.js';
import { registerDown } from './commands/down.js';
import { registerRun } from './commands/run.js';
import { registerJobs } from './commands/jobs.js';
import { registerPool } from './commands/pool.js';
import { registerAgents } from './commands/agents.js';
import { registerNetwork } from './commands/network.js';
import { registerWorkspaces } from './commands/workspaces.js';
import { registerKeys } from './commands/keys.js';
import { registerDoctor } from './commands/doctor.js';
import { registerData } from './commands/data.js';
import { registerAudit } from './commands/audit.js';
import { registerImages } from './commands/images.js';
import { registerSandbox } from './commands/sandbox.js';
import { registerServe } from './commands/serve.js';
import { registerPki } from './commands/pki.js';
import { reportError } from './context.js';

// A reader that goes away (`cleanroom jobs ls | head`) is not an error: stop quietly, as Unix tools do.
process.stdout.on('error', (e: NodeJS.ErrnoException) => {
  if (e.code === 'EPIPE') process.exit(0);
  throw e;
});

const program = new Command('cleanroom')
  .description('Cleanroom: run untrusted workloads in pre-warmed, confined, single-use cells')
  .showHelpAfterError()
  .exitOverride();
registerUp(program);
registerDown(program);
registerRun(program);
registerJobs(program);
registerPool(program);
registerAgents(program);
registerNetwork(program);
registerWorkspaces(program);
registerKeys(program);
registerDoctor(program);
registerData(program);
registerAudit(program);
registerImages(program);
registerSandbox(program);
registerServe(program);
registerPki(program);

try {
  await program.parseAsync(process.argv);
} catch (e) {
  if (e instanceof CommanderError) process.exitCode = e.exitCode;
  else process.exitCode = reportError(e);
}
