/** `cleanroom up`: first-start set-up, then the control plane and a local agent as separate processes. */
import type { Command } from 'commander';
import { execFileSync, type ChildProcess } from 'node:child_process';
import { readFileSync, statSync } from 'node:fs';
import { loadConfig } from '../../shared/config.js';
import { dataPaths } from '../../shared/paths.js';
import { bootstrapDataDir } from '../../supervisor/bootstrap.js';
import { DATA_SERVICE_NAME } from '../../shared/wire.js';
import { logFile, runningPid, startProcesses, stopAll, type ProcessName } from '../../supervisor/processes.js';
import { CleanroomClient } from '../../sdk/client.js';
import { readClientConfig, writeClientConfig } from '../client-config.js';
import { defaultDataDir, UsageError } from '../context.js';
import { Progress } from '../progress.js';

const READY_TIMEOUT_MS = 180_000;

/** registerUp adds `up`. */
export function registerUp(program: Command): void {
  program
    .command('up')
    .description('start the control plane and a local agent (foreground; Ctrl-C stops and wipes every cell)')
    .option('--data-dir <dir>', 'state directory', defaultDataDir())
    .option('-d, --detach', 'run in the background; stop with `cleanroom down`')
    .action(async (opts: { dataDir: string; detach?: boolean }) => {
      if (process.getuid?.() !== 0) throw new UsageError('cleanroom up must run as root (the agent creates containers, cgroups and namespaces)');
      const paths = dataPaths(opts.dataDir);
      const control = runningPid(paths, 'control');
      const agent = runningPid(paths, 'agent');
      if (control && agent) {
        if (!opts.detach) throw new UsageError(`already running in the background (control pid ${control}, agent pid ${agent}); stop it with: cleanroom down --data-dir ${paths.dataDir}`);
        process.stdout.write(`Cleanroom is already running (control pid ${control}, agent pid ${agent}).\n`);
        return;
      }
      if ((control || agent) && !opts.detach) throw new UsageError('part of Cleanroom is running in the background; use `cleanroom up --detach` to start the rest, or `cleanroom down` first');
      const config = loadConfig(paths.config);
      for (const rt of config.agent.runtimes) requireBinary(rt);

      const setup = new Progress('set-up');
      setup.update('data directory, local CA, certificates, platform-admin key');
      const { adminKey, account } = await bootstrapDataDir(paths, config, ['127.0.0.1', 'localhost', config.control.host, DATA_SERVICE_NAME]);
      const url = `https://${config.control.host === '0.0.0.0' ? '127.0.0.1' : config.control.host}:${config.control.apiPort}`;
      if (adminKey) {
        const where = writeClientConfig({ url, apiKey: adminKey, caPath: paths.pki.caCert });
        setup.done(`ready; client config written to ${where}`);
        process.stdout.write(`Platform-admin API key (shown once; saved in ${where}):\n  ${adminKey}\n`);
      } else {
        setup.done(`using existing state in ${paths.dataDir}`);
      }

      const logStart = { agent: sizeOf(logFile(paths, 'agent')), control: sizeOf(logFile(paths, 'control')) };
      const children = startProcesses(paths, account, opts.detach === true);
      const apiKey = adminKey ?? existingKey(url);
      const client = new CleanroomClient({ url, apiKey: apiKey ?? undefined, ca: readFileSync(paths.pki.caCert, 'utf8') });
      const exited = watchExits(children);
      try {
        await waitReady(client, exited, apiKey !== null);
        if (apiKey !== null && config.images.default !== 'host') await waitDefaultImage(client, config.images.default);
      } catch (e) {
        await stopAll(paths);
        // A process that refuses to start says why on its last stderr line (e.g. no encrypted storage on this host).
        const why = (['agent', 'control'] as const).map((n) => lastPlainLine(logFile(paths, n), logStart[n])).filter(Boolean).join('; ');
        throw new Error(`${(e as Error).message}${why ? `: ${why}` : ''}; see ${logFile(paths, 'control')} and ${logFile(paths, 'agent')}`);
      } finally {
        client.close();
      }
      process.stdout.write(`Cleanroom is up: ${url}  (data: ${paths.dataDir})\n`);
      if (opts.detach) {
        process.stdout.write('Running in the background; stop with: cleanroom down' + (paths.dataDir === defaultDataDir() ? '' : ` --data-dir ${paths.dataDir}`) + '\n');
        return;
      }
      process.stdout.write('Press Ctrl-C to stop (every cell is wiped).\n');
      await new Promise<void>((resolve, reject) => {
        let stopping = false;
        const stop = () => {
          if (stopping) return;
          stopping = true;
          process.stderr.write('\nstopping: wiping cells…\n');
          void stopAll(paths).then((r) => (r.leftovers.length ? reject(new Error(`stopped, but the host still holds: ${r.leftovers.join('; ')}`)) : resolve()), reject);
        };
        process.on('SIGINT', stop);
        process.on('SIGTERM', stop);
        void exited.then((name) => {
          if (stopping) return;
          stopping = true;
          void stopAll(paths).then(() => reject(new Error(`the ${name} process exited unexpectedly; see ${logFile(paths, name)}`)));
        });
      });
      process.stdout.write('stopped\n');
    });
}

function watchExits(children: Partial<Record<ProcessName, ChildProcess>>): Promise<ProcessName> {
  return new Promise((resolve) => {
    for (const [name, child] of Object.entries(children) as Array<[ProcessName, ChildProcess]>) child.once('exit', () => resolve(name));
  });
}

async function waitReady(client: CleanroomClient, exited: Promise<ProcessName>, withPool: boolean): Promise<void> {
  let dead: ProcessName | null = null;
  void exited.then((n) => (dead = n));
  const deadline = Date.now() + READY_TIMEOUT_MS;
  const p = new Progress('starting');
  for (;;) {
    if (dead) throw new Error(`the ${dead} process exited during start-up`);
    if (Date.now() > deadline) throw new Error('timed out waiting for the control plane and agent');
    try {
      const h = await client.health();
      if (h.agents > 0) break;
      p.update('waiting for the agent to connect');
    } catch {
      p.update('waiting for the control plane');
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  p.done('control plane and agent connected');
  if (!withPool) return;
  const warm = new Progress('warm pool');
  for (;;) {
    if (dead) throw new Error(`the ${dead} process exited during start-up`);
    let ready = 0;
    let total = 0;
    let failure: string | null = null;
    try {
      const pool = await client.pool();
      for (const entries of Object.values(pool.agents)) {
        for (const e of Object.values(entries)) {
          ready += Math.min(e.warm, e.target);
          total += e.target;
          failure ??= e.lastError;
        }
      }
    } catch {
      return; // the saved key is not valid here: skip the progress display
    }
    if (failure && ready === 0) throw new Error(`cells cannot be prepared: ${failure}`);
    warm.update(`${ready}/${total} cells ready`, total ? ready / total : 1);
    if (ready >= total) break;
    if (Date.now() > deadline) throw new Error('timed out warming the pool');
    await new Promise((r) => setTimeout(r, 150));
  }
  warm.done('ready');
}

/** DEFAULT_IMAGE_WAIT_MS bounds the wait for the default image (imported from its layout at start, then unpacked). */
const DEFAULT_IMAGE_WAIT_MS = 120_000;

/** waitDefaultImage waits until the default image is ready, so that the first job can run on it; says why if it cannot be. */
async function waitDefaultImage(client: CleanroomClient, name: string): Promise<void> {
  const p = new Progress(`default image ${name}`);
  const deadline = Date.now() + DEFAULT_IMAGE_WAIT_MS;
  for (;;) {
    let image;
    try {
      image = await client.getImage(name);
    } catch (e) {
      if ((e as { code?: string }).code === 'image_not_found') {
        p.done(`absent: jobs must name an image (the control plane log says why; build it with scripts/install-deps.sh)`);
        return;
      }
      throw e;
    }
    if (image.state === 'ready') return p.done(`ready (${image.digest ?? ''})`);
    if (image.state === 'failed') return p.done(`failed: ${image.error?.code ?? '?'}: ${image.error?.message ?? ''}`);
    if (Date.now() > deadline) return p.done(`still ${image.state}; jobs that name no image wait for it`);
    p.update(image.state);
    await new Promise((r) => setTimeout(r, 150));
  }
}

function requireBinary(name: string): void {
  try {
    execFileSync(name, ['--version'], { stdio: 'ignore' });
  } catch {
    throw new UsageError(`${name} is not installed; install it (apt-get install ${name}) or remove it from agent.runtimes in config.json`);
  }
}

function existingKey(url: string): string | null {
  try {
    const c = readClientConfig();
    return c.url === url ? c.apiKey : null;
  } catch {
    return null;
  }
}

/** lastPlainLine returns the last non-JSON line written to a log after `from` (a fatal message, not a log record). */
function lastPlainLine(path: string, from: number): string {
  try {
    const lines = readFileSync(path).subarray(from).toString('utf8').split('\n').filter((l) => l.trim() && !l.startsWith('{'));
    return lines.at(-1)?.trim() ?? '';
  } catch {
    return '';
  }
}

function sizeOf(path: string): number {
  try {
    return statSync(path).size;
  } catch {
    return 0;
  }
}
