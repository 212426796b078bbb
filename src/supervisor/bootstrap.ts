/** First-start set-up of a data directory: the control plane's account, directories, PKI, the first platform-admin key. */
import { execFileSync } from 'node:child_process';
import { chmodSync, chownSync, existsSync, mkdirSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import type { Config } from '../shared/config.js';
import { imageDirs, type DataPathSet } from '../shared/paths.js';
import { openStore } from '../control/store/open-store.js';
import { TenancyService } from '../control/tenancy/tenancy-service.js';
import { AccessDenials } from '../control/audit/access-denials.js';
import { AuditLog } from '../control/audit/audit-log.js';
import { ensureKek } from '../control/data/keyring.js';
import { ensurePki } from './pki.js';

/** Account is a uid/gid pair. */
export interface Account {
  uid: number;
  gid: number;
}

/** ensureAccount returns the unprivileged system account the control plane runs as, creating it if needed. */
export function ensureAccount(name: string): Account {
  const lookup = (): Account | null => {
    try {
      return { uid: Number(execFileSync('id', ['-u', name], { stdio: ['ignore', 'pipe', 'ignore'] }).toString()), gid: Number(execFileSync('id', ['-g', name], { stdio: ['ignore', 'pipe', 'ignore'] }).toString()) };
    } catch {
      return null;
    }
  };
  const found = lookup();
  if (found) return found;
  execFileSync('useradd', ['--system', '--no-create-home', '--home-dir', '/nonexistent', '--shell', '/usr/sbin/nologin', name], { stdio: 'ignore' });
  const created = lookup();
  if (!created) throw new Error(`could not create the system account "${name}"`);
  return created;
}

/** bootstrapDataDir prepares everything the processes need; returns a platform-admin key if it was just created (see TenancyService.bootstrap). */
export async function bootstrapDataDir(paths: DataPathSet, config: Config, serverNames: string[]): Promise<{ adminKey: string | null; account: Account }> {
  const account = ensureAccount(config.control.user);
  mkdirSync(paths.dataDir, { recursive: true });
  chmodSync(paths.dataDir, 0o711);
  mkdirSync(paths.run.dir, { recursive: true, mode: 0o700 });
  mkdirSync(paths.control.dir, { recursive: true, mode: 0o700 });
  await ensurePki(paths, account.uid, account.gid, serverNames);
  const store = await openStore(config.store, paths.control.db);
  let adminKey: string | null;
  try {
    const audit = new AuditLog(store);
    const tenancy = new TenancyService(store, { maxCpu: config.limits.maxCpu, maxMemoryMiB: config.limits.maxMemoryMiB, maxTimeoutSeconds: config.limits.maxTimeoutSeconds, maxDiskMiB: config.limits.maxDiskMiB }, audit, new AccessDenials(audit));
    adminKey = await tenancy.bootstrap();
  } finally {
    await store.close();
  }
  // The envelope key-encryption key: the operator's file if configured, else one generated here on first start.
  if (!config.data.kekFile) ensureKek(paths.control.kek, account.uid, account.gid);
  // The control plane is unprivileged: it owns its own directory and the image store's root (it writes blobs there;
  // agents, as root, write unpacked layers beside them), and nothing else.
  chownSync(paths.control.dir, account.uid, account.gid);
  const images = imageDirs(paths, config.images).root;
  mkdirSync(images, { recursive: true, mode: 0o755 });
  chownSync(images, account.uid, account.gid);
  for (const d of ['blobs', 'blobs/sha256', 'tmp']) if (existsSync(join(images, d))) chownSync(join(images, d), account.uid, account.gid);
  for (const f of readdirSync(paths.control.dir)) chownSync(join(paths.control.dir, f), account.uid, account.gid);
  if (!existsSync(paths.pki.serverKey)) throw new Error('PKI is incomplete: server key missing');
  return { adminKey, account };
}
