// A fleet's PKI home (`cleanroom pki`) and a standalone process's config template (`cleanroom serve --config`).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { dataPaths } from '../../src/shared/paths.js';
import { AGENT_CERT_CN, DATA_SERVICE_NAME } from '../../src/shared/wire.js';
import { initPkiHome, installRole, issueAgent, reissueServer } from '../../src/supervisor/pki-home.js';
import { renderConfig } from '../../src/supervisor/standalone.js';

const mode = (f: string) => statSync(f).mode & 0o777;
const verify = (ca: string, cert: string) => execFileSync('openssl', ['verify', '-CAfile', ca, cert], { stdio: 'pipe' }).toString();
const pub = (f: string, kind: 'x509' | 'pkey') => execFileSync('openssl', kind === 'x509' ? ['x509', '-in', f, '-noout', '-pubkey'] : ['pkey', '-in', f, '-pubout']).toString();

test('pki init makes a CA, a server certificate with the given names, an agent certificate and a KEK; never twice', async () => {
  const dir = mkdtempSync('/tmp/cleanroom-pki-home-');
  try {
    const home = join(dir, 'home');
    const names = await initPkiHome(home, ['cp.example.internal', '10.0.0.5', '*.cleanroom.pod.cluster.local']);
    assert.deepEqual(names, ['localhost', '127.0.0.1', DATA_SERVICE_NAME, 'cp.example.internal', '10.0.0.5', '*.cleanroom.pod.cluster.local']);
    assert.equal(mode(home), 0o700);
    for (const f of ['ca-key.pem', 'server-key.pem', 'agent-key.pem', 'kek']) assert.equal(mode(join(home, f)), 0o600, f);
    assert.equal(readFileSync(join(home, 'kek')).length, 32);
    const server = new X509Certificate(readFileSync(join(home, 'server.pem')));
    assert.ok(server.checkHost('cp.example.internal'));
    assert.ok(server.checkHost('10-244-1-7.cleanroom.pod.cluster.local'));
    assert.ok(server.checkIP('10.0.0.5'));
    assert.equal(server.checkHost('other.example.internal'), undefined);
    const agent = new X509Certificate(readFileSync(join(home, 'agent.pem')));
    assert.match(agent.subject, new RegExp(`CN=${AGENT_CERT_CN}`));
    for (const c of ['server.pem', 'agent.pem']) verify(join(home, 'ca.pem'), join(home, c));
    assert.equal(pub(join(home, 'server.pem'), 'x509'), pub(join(home, 'server-key.pem'), 'pkey'));
    await assert.rejects(initPkiHome(home, []), /already holds a CA/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('issue-server reissues from the same CA; issue-agent gives a host a key pair of its own', async () => {
  const dir = mkdtempSync('/tmp/cleanroom-pki-home-');
  try {
    const home = join(dir, 'home');
    await initPkiHome(home, ['cp.example.internal']);
    const ca = readFileSync(join(home, 'ca.pem'), 'utf8');
    await reissueServer(home, ['cp.example.internal', 'cp2.example.internal']);
    assert.equal(readFileSync(join(home, 'ca.pem'), 'utf8'), ca);
    assert.ok(new X509Certificate(readFileSync(join(home, 'server.pem'))).checkHost('cp2.example.internal'));
    verify(join(home, 'ca.pem'), join(home, 'server.pem'));
    await issueAgent(home, join(dir, 'host7'));
    assert.notEqual(readFileSync(join(dir, 'host7', 'agent-key.pem'), 'utf8'), readFileSync(join(home, 'agent-key.pem'), 'utf8'));
    assert.equal(mode(join(dir, 'host7', 'agent-key.pem')), 0o600);
    verify(join(dir, 'host7', 'ca.pem'), join(dir, 'host7', 'agent.pem'));
    await assert.rejects(reissueServer(join(dir, 'host7'), []), /holds no CA key/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('export installs a role\'s files into a data directory, never the CA key', async () => {
  const dir = mkdtempSync('/tmp/cleanroom-pki-home-');
  try {
    const home = join(dir, 'home');
    await initPkiHome(home, []);
    const c = dataPaths(join(dir, 'control'));
    installRole(home, 'control', c.dataDir, null);
    for (const f of [c.pki.caCert, c.pki.serverCert, c.pki.serverKey, c.control.kek]) assert.ok(existsSync(f), f);
    assert.equal(mode(c.pki.serverKey), 0o600);
    assert.equal(mode(c.control.kek), 0o600);
    assert.deepEqual(readFileSync(c.control.kek), readFileSync(join(home, 'kek')));
    assert.ok(!existsSync(c.pki.caKey) && !existsSync(c.pki.agentKey));
    const a = dataPaths(join(dir, 'agent'));
    installRole(home, 'agent', a.dataDir, null);
    for (const f of [a.pki.caCert, a.pki.agentCert, a.pki.agentKey]) assert.ok(existsSync(f), f);
    assert.ok(!existsSync(a.pki.caKey) && !existsSync(a.pki.serverKey) && !existsSync(a.control.kek));
    const noKek = dataPaths(join(dir, 'control2'));
    installRole(home, 'control', noKek.dataDir, null, false);
    assert.ok(existsSync(noKek.pki.serverKey) && !existsSync(noKek.control.kek));
    assert.throws(() => installRole(join(dir, 'empty'), 'agent', a.dataDir, null), /lacks ca\.pem, agent\.pem, agent-key\.pem/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('a config template is filled from the environment, escaped as JSON, checked, then written 0600', () => {
  const dir = mkdtempSync('/tmp/cleanroom-render-');
  try {
    const paths = dataPaths(join(dir, 'data'));
    const t = join(dir, 't.json');
    writeFileSync(t, '{"control": {"host": "${HOST}", "apiPort": ${PORT}}, "images": {"dir": "${DIR}"}}');
    const config = renderConfig(t, paths, { HOST: 'cp.example.internal', PORT: '8443', DIR: '/srv/a "quoted" \\ dir' });
    assert.equal(config.control.host, 'cp.example.internal');
    assert.equal(config.control.apiPort, 8443);
    assert.equal(config.images.dir, '/srv/a "quoted" \\ dir');
    assert.equal(mode(paths.config), 0o600);
    const good = readFileSync(paths.config, 'utf8');
    // A bad template never replaces a good config: unset variables, invalid JSON, a value the schema refuses.
    assert.throws(() => renderConfig(t, paths, { HOST: 'h' }), /unset environment variables: PORT, DIR/);
    assert.throws(() => renderConfig(t, paths, { HOST: 'h', PORT: '"x', DIR: '/d' }), /not JSON/);
    assert.throws(() => renderConfig(t, paths, { HOST: 'h', PORT: '99999', DIR: '/d' }), /control\.apiPort/);
    assert.equal(readFileSync(paths.config, 'utf8'), good);
    assert.ok(!existsSync(`${paths.config}.staged`), 'nothing half-written is left');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
