/** Shared helpers for CLI commands: the SDK client from config, output, and error reporting. */
import { CleanroomClient, CleanroomError } from '../sdk/client.js';
import { readClientConfig } from './client-config.js';
import { DEFAULT_DATA_DIR } from '../shared/paths.js';

/** dataDirOption is the --data-dir default: $CLEANROOM_DATA_DIR or /var/lib/cleanroom. */
export function defaultDataDir(): string {
  return process.env.CLEANROOM_DATA_DIR ?? DEFAULT_DATA_DIR;
}

/** connect builds an SDK client from the client config and environment. */
export function connect(): CleanroomClient {
  const c = readClientConfig();
  return new CleanroomClient({ url: c.url, apiKey: c.apiKey, ca: c.ca });
}

/** printJson writes a value as indented JSON. */
export function printJson(v: unknown): void {
  process.stdout.write(JSON.stringify(v, null, 2) + '\n');
}

/** UsageError is a mistake on the command line: reported without a stack, exit code 2. */
export class UsageError extends Error {}

/** reportError prints an error the way users should see it and returns the exit code. */
export function reportError(e: unknown): number {
  if (e instanceof CleanroomError) {
    process.stderr.write(`cleanroom: ${e.message} [${e.code}]\n`);
    return 1;
  }
  if (e instanceof UsageError) {
    process.stderr.write(`cleanroom: ${e.message}\n`);
    return 2;
  }
  const err = e as NodeJS.ErrnoException;
  if (err.code === 'ECONNREFUSED') {
    process.stderr.write('cleanroom: the control plane is not reachable; is it running? (cleanroom up)\n');
    return 1;
  }
  process.stderr.write(`cleanroom: ${err.message ?? String(e)}\n`);
  return 1;
}
