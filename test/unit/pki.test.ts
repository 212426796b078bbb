// The local PKI: a server certificate of ours that lacks a name cells now use is reissued from the same CA at start.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { dataPaths } from '../../src/shared/paths.js';
import { ensurePki, missingNames } from '../../src/supervisor/pki.js';

test('an older server certificate without the data service name is reissued; the CA and agent certificate stay', async () => {
  const dir = mkdtempSync('/tmp/cleanroom-pki-');
  try {
    const p = dataPaths(dir);
    assert.equal(await ensurePki(p, 0, 0, ['127.0.0.1', 'localhost']), true);
    const [ca, agent, server] = [p.pki.caCert, p.pki.agentCert, p.pki.serverCert].map((f) => readFileSync(f, 'utf8'));
    assert.deepEqual(missingNames(server!, ['127.0.0.1', 'localhost', 'data.cleanroom.internal']), ['data.cleanroom.internal']);
    assert.equal(await ensurePki(p, 0, 0, ['127.0.0.1', 'localhost', 'data.cleanroom.internal']), false);
    const reissued = readFileSync(p.pki.serverCert, 'utf8');
    assert.notEqual(reissued, server);
    assert.deepEqual(missingNames(reissued, ['127.0.0.1', 'localhost', 'data.cleanroom.internal']), []);
    assert.equal(readFileSync(p.pki.caCert, 'utf8'), ca);
    assert.equal(readFileSync(p.pki.agentCert, 'utf8'), agent);
    // It chains to the same CA and its key matches.
    execFileSync('openssl', ['verify', '-CAfile', p.pki.caCert, p.pki.serverCert], { stdio: 'pipe' });
    const pub = (f: string, kind: 'x509' | 'pkey') => execFileSync('openssl', kind === 'x509' ? ['x509', '-in', f, '-noout', '-pubkey'] : ['pkey', '-in', f, '-pubout']).toString();
    assert.equal(pub(p.pki.serverCert, 'x509'), pub(p.pki.serverKey, 'pkey'));
    // Nothing to do the next time.
    await ensurePki(p, 0, 0, ['127.0.0.1', 'localhost', 'data.cleanroom.internal']);
    assert.equal(readFileSync(p.pki.serverCert, 'utf8'), reissued);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
