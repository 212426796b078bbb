/**
 * Running one process alone on a host (a systemd unit, a container): the config it is given, the checks that say what
 * is missing before anything starts, and the first platform-admin key of a control plane nobody bootstrapped with `up`.
 */
import { accessSync, chmodSync, constants, existsSync, mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { loadConfig, type Config } from '../shared/config.js';
import type { DataPathSet } from '../shared/paths.js';
import { openStore } from '../control/store/open-store.js';
import { TenancyService } from '../control/tenancy/tenancy-service.js';
import { AccessDenials } from '../control/audit/access-denials.js';
import { AuditLog } from '../control/audit/audit-log.js';
import type { Role } from './pki-home.js';

/** ENTRY_POINTS are the built process entry points (`node <file> --data-dir D`) that `serve` runs in-process. */
export const ENTRY_POINTS: Record<Role, string> = {
  control: join(dirname(fileURLToPath(import.meta.url)), '../control/main.js'),
  agent: join(dirname(fileURLToPath(import.meta.url)), '../agent/main.js'),
};

/** ENV_REFERENCE matches `${NAME}` in a config template. */
const ENV_REFERENCE = /\$\{([A-Za-z_][A-Za-z0-9_]*)\}/g;

/**
 * renderConfig writes `<data dir>/config.json` from a template (a ConfigMap, /etc/cleanroom/*.json) with every `${NAME}`
 * replaced by that environment variable — per-host values such as the pod IP or systemd's $CREDENTIALS_DIRECTORY — and
 * checks it against the schema first, so that a bad template never replaces a good config.
 */
export function renderConfig(template: string, paths: DataPathSet, env: NodeJS.ProcessEnv): Config {
  const text = readFileSync(template, 'utf8');
  const unset = new Set<string>();
  const rendered = text.replace(ENV_REFERENCE, (_, name: string) => {
    const v = env[name];
    if (v === undefined) {
      unset.add(name);
      return '';
    }
    // Values land inside JSON strings: escape them as JSON would.
    return JSON.stringify(v).slice(1, -1);
  });
  if (unset.size) throw new Error(`config ${template} refers to unset environment variables: ${[...unset].join(', ')}`);
  try {
    JSON.parse(rendered);
  } catch (e) {
    throw new Error(`config ${template} is not JSON once its \${…} references are filled in: ${(e as Error).message}`);
  }
  mkdirSync(paths.dataDir, { recursive: true });
  const staged = `${paths.config}.staged`;
  // 0600: a template may bring in secrets (the PostgreSQL URL with its password).
  writeFileSync(staged, rendered, { mode: 0o600 });
  chmodSync(staged, 0o600);
  let config: Config;
  try {
    config = loadConfig(staged); // throws with every problem listed
  } catch (e) {
    rmSync(staged, { force: true });
    throw e;
  }
  renameSync(staged, paths.config);
  return config;
}

/** checkControlHost says, in one message, everything a control plane alone on this host lacks. */
export function checkControlHost(paths: DataPathSet, config: Config): void {
  if (process.getuid?.() === 0) {
    throw new Error('the control plane runs unprivileged: start `serve control` as its own account (systemd User=, Kubernetes runAsUser), not as root');
  }
  const problems: string[] = [];
  for (const f of [paths.pki.caCert, paths.pki.serverCert, paths.pki.serverKey]) if (!readable(f)) problems.push(`${f} is missing or unreadable`);
  const kek = config.data.kekFile ?? paths.control.kek;
  if (!readable(kek)) problems.push(`the key-encryption key ${kek} is missing or unreadable (set data.kekFile, or install it with cleanroom pki export)`);
  try {
    mkdirSync(paths.control.dir, { recursive: true, mode: 0o700 });
    accessSync(paths.control.dir, constants.W_OK);
  } catch {
    problems.push(`${paths.control.dir} cannot be written by uid ${process.getuid?.()}`);
  }
  if (problems.length) throw new Error(`this host is not ready for a control plane: ${problems.join('; ')}. Install the PKI with: cleanroom pki export --dir <PKI home> --role control --data-dir ${paths.dataDir} --owner <account>`);
}

/** checkAgentHost says, in one message, everything an agent alone on this host lacks. */
export function checkAgentHost(paths: DataPathSet): void {
  if (process.getuid?.() !== 0) throw new Error('the agent must run as root (it creates containers, cgroups, namespaces, encrypted volumes)');
  const missing = [paths.pki.caCert, paths.pki.agentCert, paths.pki.agentKey].filter((f) => !existsSync(f));
  if (missing.length) throw new Error(`this host is not ready for an agent: ${missing.join(', ')} missing. Install them with: cleanroom pki export --dir <PKI home> --role agent --data-dir ${paths.dataDir}`);
}

/**
 * bootstrapAdmin mints the first platform-admin key if the store has none (TenancyService.bootstrap) and writes it to
 * `keyFile` (0600; the operator reads it once and removes it) — never to the log, which may be shipped elsewhere.
 * Returns the file it wrote, or null if a platform admin already existed.
 */
export async function bootstrapAdmin(paths: DataPathSet, config: Config, keyFile: string): Promise<string | null> {
  // Replicas starting together on an empty database race to create the `default` workspace: the loser tries once more.
  let key: string | null;
  try {
    key = await mintFirstAdmin(paths, config);
  } catch {
    await new Promise((r) => setTimeout(r, BOOTSTRAP_RETRY_MS));
    key = await mintFirstAdmin(paths, config);
  }
  if (key === null) return null;
  // A name of its own: replicas may share <data dir>/control (deploy/kubernetes) and write at once.
  const tmp = `${keyFile}.${randomBytes(6).toString('hex')}.tmp`;
  writeFileSync(tmp, `${key}\n`, { mode: 0o600 });
  renameSync(tmp, keyFile);
  return keyFile;
}

/** BOOTSTRAP_RETRY_MS is the pause before a replica that lost the first-start race looks again. */
const BOOTSTRAP_RETRY_MS = 1000;

async function mintFirstAdmin(paths: DataPathSet, config: Config): Promise<string | null> {
  // The store the control plane will use (replicas on PostgreSQL: the first to start mints the key).
  const store = await openStore(config.store, paths.control.db);
  try {
    const audit = new AuditLog(store);
    const limits = { maxCpu: config.limits.maxCpu, maxMemoryMiB: config.limits.maxMemoryMiB, maxTimeoutSeconds: config.limits.maxTimeoutSeconds, maxDiskMiB: config.limits.maxDiskMiB };
    return await new TenancyService(store, limits, audit, new AccessDenials(audit)).bootstrap();
  } finally {
    await store.close();
  }
}

function readable(path: string): boolean {
  try {
    accessSync(path, constants.R_OK);
    return true;
  } catch {
    return false;
  }
}
