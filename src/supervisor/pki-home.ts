/**
 * The operator's PKI home for a fleet: the CA (whose key never leaves it), the control plane's server certificate, the
 * agents' client certificate and the KEK, made once and installed on every host (or into Kubernetes Secrets) from here.
 */
import { chmodSync, chownSync, copyFileSync, existsSync, mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { dataPaths } from '../shared/paths.js';
import { DATA_SERVICE_NAME } from '../shared/wire.js';
import { createCa, issueAgentCert, issueServerCert, loadCa } from './pki.js';
import type { Account } from './bootstrap.js';

/** PKI_HOME_FILES are the files of a PKI home directory (the same names as under `<data dir>/pki`, plus the KEK). */
export const PKI_HOME_FILES = {
  caCert: 'ca.pem',
  caKey: 'ca-key.pem',
  serverCert: 'server.pem',
  serverKey: 'server-key.pem',
  agentCert: 'agent.pem',
  agentKey: 'agent-key.pem',
  kek: 'kek',
} as const;

/** BASE_SERVER_NAMES are always in the server certificate: loopback, and the name cells verify the data service by. */
export const BASE_SERVER_NAMES = ['localhost', '127.0.0.1', DATA_SERVICE_NAME] as const;

/** KUBERNETES_SECRETS names the Secrets deploy/kubernetes mounts, the role whose namespace holds each, and the PKI
 *  home file each key holds. */
export const KUBERNETES_SECRETS = {
  'cleanroom-control-pki': { role: 'control', keys: { 'ca.pem': 'caCert', 'server.pem': 'serverCert', 'server-key.pem': 'serverKey' } },
  'cleanroom-kek': { role: 'control', keys: { kek: 'kek' } },
  'cleanroom-agent-pki': { role: 'agent', keys: { 'ca.pem': 'caCert', 'agent.pem': 'agentCert', 'agent-key.pem': 'agentKey' } },
} as const satisfies Record<string, { role: Role; keys: Record<string, keyof typeof PKI_HOME_FILES> }>;

/** Role is what a host runs: the control plane or an agent. */
export type Role = 'control' | 'agent';

const KEK_BYTES = 32;

function file(dir: string, name: keyof typeof PKI_HOME_FILES): string {
  return join(dir, PKI_HOME_FILES[name]);
}

/** writeAtomic writes a file whole (a crash leaves the old one or none, never half of it). */
function writeAtomic(path: string, data: string | Buffer, mode: number): void {
  writeFileSync(`${path}.tmp`, data, { mode });
  chmodSync(`${path}.tmp`, mode);
  renameSync(`${path}.tmp`, path);
}

/** initPkiHome creates the CA, both leaf certificates and the KEK in `dir`; refuses a directory that already has a CA. */
export async function initPkiHome(dir: string, serverNames: readonly string[]): Promise<string[]> {
  if (existsSync(file(dir, 'caCert'))) throw new Error(`${dir} already holds a CA (${PKI_HOME_FILES.caCert}); issue new certificates from it with \`cleanroom pki issue-server\` or \`issue-agent\``);
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  chmodSync(dir, 0o700);
  const names = [...new Set([...BASE_SERVER_NAMES, ...serverNames])];
  const ca = await createCa();
  const server = await issueServerCert(ca.cert, ca.key, names);
  const agent = await issueAgentCert(ca.cert, ca.key);
  writeAtomic(file(dir, 'caKey'), ca.keyPem, 0o600);
  writeAtomic(file(dir, 'serverCert'), server.cert, 0o644);
  writeAtomic(file(dir, 'serverKey'), server.key, 0o600);
  writeAtomic(file(dir, 'agentCert'), agent.cert, 0o644);
  writeAtomic(file(dir, 'agentKey'), agent.key, 0o600);
  if (!existsSync(file(dir, 'kek'))) writeAtomic(file(dir, 'kek'), randomBytes(KEK_BYTES), 0o600);
  // The CA certificate last: its presence marks the set complete.
  writeAtomic(file(dir, 'caCert'), ca.cert.toString('pem'), 0o644);
  return names;
}

async function caOf(dir: string) {
  if (!existsSync(file(dir, 'caKey'))) throw new Error(`${dir} holds no CA key (${PKI_HOME_FILES.caKey}); run \`cleanroom pki init --dir ${dir}\` first`);
  return loadCa(readFileSync(file(dir, 'caCert'), 'utf8'), readFileSync(file(dir, 'caKey'), 'utf8'));
}

/** reissueServer replaces the server certificate with one naming `serverNames` (plus BASE_SERVER_NAMES); returns the names. */
export async function reissueServer(dir: string, serverNames: readonly string[]): Promise<string[]> {
  const ca = await caOf(dir);
  const names = [...new Set([...BASE_SERVER_NAMES, ...serverNames])];
  const server = await issueServerCert(ca.cert, ca.key, names);
  writeAtomic(file(dir, 'serverKey'), server.key, 0o600);
  writeAtomic(file(dir, 'serverCert'), server.cert, 0o644);
  return names;
}

/** issueAgent writes a fresh agent key pair (and the CA certificate) into `outDir`, for one host of its own. */
export async function issueAgent(dir: string, outDir: string): Promise<void> {
  const ca = await caOf(dir);
  const agent = await issueAgentCert(ca.cert, ca.key);
  mkdirSync(outDir, { recursive: true, mode: 0o700 });
  writeAtomic(join(outDir, PKI_HOME_FILES.agentKey), agent.key, 0o600);
  writeAtomic(join(outDir, PKI_HOME_FILES.agentCert), agent.cert, 0o644);
  writeAtomic(join(outDir, PKI_HOME_FILES.caCert), readFileSync(file(dir, 'caCert')), 0o644);
}

/**
 * installRole copies what one role needs from a PKI home into a data directory — never the CA key. The control plane's
 * data directory is handed to `owner` (it runs unprivileged and writes its database, objects and images there); an
 * agent's stays root's. `withKek: false` leaves the KEK out (systemd's LoadCredential= or a Secret supplies it).
 */
export function installRole(dir: string, role: Role, dataDir: string, owner: Account | null, withKek = true): string[] {
  const paths = dataPaths(dataDir);
  const wanted: Array<keyof typeof PKI_HOME_FILES> = role === 'control' ? ['caCert', 'serverCert', 'serverKey'] : ['caCert', 'agentCert', 'agentKey'];
  const missing = wanted.filter((n) => !existsSync(file(dir, n)));
  if (missing.length) throw new Error(`${dir} lacks ${missing.map((n) => PKI_HOME_FILES[n]).join(', ')}; run \`cleanroom pki init --dir ${dir}\` first`);
  mkdirSync(paths.pki.dir, { recursive: true, mode: 0o755 });
  const installed: string[] = [];
  const put = (from: string, to: string, mode: number) => {
    copyFileSync(from, `${to}.tmp`);
    chmodSync(`${to}.tmp`, mode);
    if (owner && role === 'control') chownSync(`${to}.tmp`, owner.uid, owner.gid);
    renameSync(`${to}.tmp`, to);
    installed.push(to);
  };
  const target: Record<string, string> = { caCert: paths.pki.caCert, serverCert: paths.pki.serverCert, serverKey: paths.pki.serverKey, agentCert: paths.pki.agentCert, agentKey: paths.pki.agentKey };
  for (const n of wanted) put(file(dir, n), target[n]!, n.endsWith('Key') ? 0o600 : 0o644);
  if (role === 'control') {
    mkdirSync(paths.control.dir, { recursive: true, mode: 0o700 });
    if (withKek) {
      if (!existsSync(file(dir, 'kek'))) throw new Error(`${dir} holds no KEK (${PKI_HOME_FILES.kek})`);
      put(file(dir, 'kek'), paths.control.kek, 0o600);
    }
    if (owner) for (const d of [dataDir, paths.pki.dir, paths.control.dir]) chownSync(d, owner.uid, owner.gid);
  }
  return installed;
}

/** kubernetesSecrets returns the Secrets deploy/kubernetes mounts, filled from a PKI home, as one `kubectl apply -f -`
 *  List: the control plane's in `namespaces.control`, the agents' in `namespaces.agent` (never the CA key). */
export function kubernetesSecrets(dir: string, namespaces: Record<Role, string>): object {
  const items = Object.entries(KUBERNETES_SECRETS).map(([name, { role, keys }]) => ({
    apiVersion: 'v1',
    kind: 'Secret',
    metadata: { name, namespace: namespaces[role], labels: { 'app.kubernetes.io/part-of': 'cleanroom' } },
    type: 'Opaque',
    data: Object.fromEntries(Object.entries(keys).map(([key, from]) => [key, readFileSync(file(dir, from)).toString('base64')])),
  }));
  return { apiVersion: 'v1', kind: 'List', items };
}
