/** The local CA and the certificates signed by it: the control plane's server cert and the agent's client cert. */
import { webcrypto } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, writeFileSync, chownSync } from 'node:fs';
import * as x509 from '@peculiar/x509';
import type { DataPathSet } from '../shared/paths.js';
import { AGENT_CERT_CN } from '../shared/wire.js';

x509.cryptoProvider.set(webcrypto as unknown as Crypto);

const ALG = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' } as const;
const YEAR_MS = 365 * 24 * 3600 * 1000;

/**
 * ensurePki creates the CA and both leaf certificates on first start; existing files are kept — except that a server
 * certificate from our own CA that lacks one of `serverNames` (an older version did not name the data service) is
 * reissued, so cells can verify the data service. Operator certificates (no CA key here) are never touched.
 */
export async function ensurePki(paths: DataPathSet, controlUid: number, controlGid: number, serverNames: string[]): Promise<boolean> {
  if (existsSync(paths.pki.caCert)) {
    if (existsSync(paths.pki.caKey) && missingNames(readFileSync(paths.pki.serverCert, 'utf8'), serverNames).length > 0) {
      const ca = new x509.X509Certificate(readFileSync(paths.pki.caCert, 'utf8'));
      const caKey = await webcrypto.subtle.importKey('pkcs8', pemBody(readFileSync(paths.pki.caKey, 'utf8')), ALG, false, ['sign']);
      await writeServerCert(paths, ca, caKey, serverNames, controlUid, controlGid);
    }
    return false;
  }
  mkdirSync(paths.pki.dir, { recursive: true, mode: 0o755 });
  const { cert: ca, key: caKey, keyPem: caKeyPem } = await createCa();
  const agent = await issueAgentCert(ca, caKey);
  writeFileSync(paths.pki.caKey, caKeyPem, { mode: 0o600 });
  await writeServerCert(paths, ca, caKey, serverNames, controlUid, controlGid);
  writeFileSync(paths.pki.agentCert, agent.cert, { mode: 0o644 });
  writeFileSync(paths.pki.agentKey, agent.key, { mode: 0o600 });
  // The CA certificate last: its presence marks the set complete.
  writeFileSync(paths.pki.caCert, ca.toString('pem'), { mode: 0o644 });
  return true;
}

/** createCa makes a new CA (ECDSA P-256, 10 years): its certificate, its private key and that key as PEM. */
export async function createCa(): Promise<{ cert: x509.X509Certificate; key: CryptoKey; keyPem: string }> {
  const now = new Date(Date.now() - 60_000);
  const caKeys = (await webcrypto.subtle.generateKey(ALG, true, ['sign', 'verify'])) as CryptoKeyPair;
  const cert = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: serial(),
    name: 'CN=Cleanroom local CA',
    notBefore: now,
    notAfter: new Date(now.getTime() + 10 * YEAR_MS),
    signingAlgorithm: ALG,
    keys: caKeys,
    extensions: [
      new x509.BasicConstraintsExtension(true, 0, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
      await x509.SubjectKeyIdentifierExtension.create(caKeys.publicKey),
    ],
  });
  return { cert, key: caKeys.privateKey, keyPem: await pemKey(caKeys.privateKey) };
}

/** loadCa reads a CA certificate and its private key (PEM), to sign with. */
export async function loadCa(certPem: string, keyPem: string): Promise<{ cert: x509.X509Certificate; key: CryptoKey }> {
  return { cert: new x509.X509Certificate(certPem), key: await webcrypto.subtle.importKey('pkcs8', pemBody(keyPem), ALG, false, ['sign']) };
}

/** issueServerCert issues the control plane's server certificate naming `serverNames` (DNS names, wildcards or IPs). */
export async function issueServerCert(ca: x509.X509Certificate, caKey: CryptoKey, serverNames: readonly string[]): Promise<{ cert: string; key: string }> {
  const sans: x509.JsonGeneralNames = [...new Set(serverNames)].map((n) => (/^[\d.]+$|:/.test(n) ? { type: 'ip', value: n } : { type: 'dns', value: n }));
  return leaf(ca, caKey, 'cleanroom-control', x509.ExtendedKeyUsage.serverAuth, sans);
}

/** issueAgentCert issues an agent's client certificate (every agent's carries AGENT_CERT_CN; the hub refuses others). */
export async function issueAgentCert(ca: x509.X509Certificate, caKey: CryptoKey): Promise<{ cert: string; key: string }> {
  return leaf(ca, caKey, AGENT_CERT_CN, x509.ExtendedKeyUsage.clientAuth, []);
}

async function writeServerCert(paths: DataPathSet, ca: x509.X509Certificate, caKey: CryptoKey, serverNames: string[], uid: number, gid: number): Promise<void> {
  const server = await issueServerCert(ca, caKey, serverNames);
  writeFileSync(paths.pki.serverCert, server.cert, { mode: 0o644 });
  writeFileSync(paths.pki.serverKey, server.key, { mode: 0o600 });
  chownSync(paths.pki.serverKey, uid, gid);
}

async function leaf(ca: x509.X509Certificate, caKey: CryptoKey, cn: string, usage: string, sans: x509.JsonGeneralNames): Promise<{ cert: string; key: string }> {
  const now = new Date(Date.now() - 60_000);
  const keys = (await webcrypto.subtle.generateKey(ALG, true, ['sign', 'verify'])) as CryptoKeyPair;
  const cert = await x509.X509CertificateGenerator.create({
    serialNumber: serial(),
    subject: `CN=${cn}`,
    issuer: ca.subject,
    notBefore: now,
    notAfter: new Date(now.getTime() + 2 * YEAR_MS),
    signingAlgorithm: ALG,
    publicKey: keys.publicKey,
    signingKey: caKey,
    extensions: [
      new x509.BasicConstraintsExtension(false, undefined, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
      new x509.ExtendedKeyUsageExtension([usage]),
      ...(sans.length ? [new x509.SubjectAlternativeNameExtension(sans)] : []),
      await x509.AuthorityKeyIdentifierExtension.create(ca),
    ],
  });
  return { cert: cert.toString('pem'), key: await pemKey(keys.privateKey) };
}

/** missingNames lists the names (DNS or IP) a PEM certificate does not carry in its subject alternative names. */
export function missingNames(certPem: string, names: readonly string[]): string[] {
  const ext = new x509.X509Certificate(certPem).getExtension(x509.SubjectAlternativeNameExtension);
  const have = new Set((ext?.names.toJSON() ?? []).map((n) => n.value));
  return names.filter((n) => !have.has(n));
}

function pemBody(pem: string): Buffer {
  return Buffer.from(pem.replace(/-----[^-]+-----/g, '').replace(/\s+/g, ''), 'base64');
}

async function pemKey(k: CryptoKey): Promise<string> {
  const der = Buffer.from(await webcrypto.subtle.exportKey('pkcs8', k));
  const b64 = der.toString('base64').replace(/(.{64})/g, '$1\n').trim();
  return `-----BEGIN PRIVATE KEY-----\n${b64}\n-----END PRIVATE KEY-----\n`;
}

function serial(): string {
  const b = webcrypto.getRandomValues(new Uint8Array(16));
  b[0]! &= 0x7f;
  return Buffer.from(b).toString('hex');
}
