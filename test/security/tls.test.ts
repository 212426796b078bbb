// TLS on every listener, probed like an auditor would: TLS 1.0/1.1 refused, 1.2/1.3 accepted — the API, the agent channel,
// the data service, and the data service as cells reach it through their gateway (the gateway forwards TLS untouched);
// the agent channel completes a handshake only with a client certificate from our CA, and accepts only the agent's certificate.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import WebSocket from 'ws';
import { TestCluster } from '../support/cluster.js';

const sh = promisify(execFile);
let cluster: TestCluster;
let apiPort = 0;
let agentPort = 0;
let dataPort = 0;
let gateway = '';
let scratch = '';

before(async () => {
  cluster = await TestCluster.start({ config: { agent: { pool: [{ runtime: 'runc', class: 'small', warm: 1 }] } } });
  apiPort = Number(new URL(cluster.url).port);
  ({ agentPort, dataPort } = (JSON.parse(readFileSync(join(cluster.dataDir, 'config.json'), 'utf8')) as { control: { agentPort: number; dataPort: number } }).control);
  // A job brings its workspace's gateway (and the gateway's services) up; its resolver file names the gateway.
  const r = await cluster.runJob({ command: ['sh', '-c', 'cat /etc/resolv.conf'] });
  gateway = /nameserver (\S+)/.exec(r.stdout)?.[1] ?? '';
  assert.match(gateway, /^\d+\.\d+\.\d+\.\d+$/, `no gateway in the cell's resolv.conf: ${r.stdout}`);
  scratch = mkdtempSync('/tmp/cleanroom-tls-');
  // A client certificate from a CA that is not ours.
  await sh('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-days', '1', '-subj', '/CN=cleanroom-agent',
    '-keyout', join(scratch, 'foreign-key.pem'), '-out', join(scratch, 'foreign.pem')]);
});

after(async () => {
  if (scratch) rmSync(scratch, { recursive: true, force: true });
  await cluster?.stop();
});

/** handshake runs `openssl s_client` (stdin closed, so it ends after the handshake) and reports whether a session was established. */
function handshake(port: number, args: string[], host = '127.0.0.1', servername = 'localhost'): Promise<{ ok: boolean; out: string }> {
  const ca = join(cluster.dataDir, 'pki', 'ca.pem');
  return new Promise((resolve) => {
    const p = spawn('openssl', ['s_client', '-connect', `${host}:${port}`, '-CAfile', ca, '-servername', servername, '-verify_hostname', servername, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    p.stdout.on('data', (d: Buffer) => (out += d.toString()));
    p.stderr.on('data', (d: Buffer) => (out += d.toString()));
    const timer = setTimeout(() => p.kill('SIGKILL'), 10_000);
    p.on('close', () => {
      clearTimeout(timer);
      // A session was negotiated iff s_client reports a protocol and a real cipher (failures print "(NONE)").
      resolve({ ok: /New, TLSv1(\.\d)?, Cipher is (?!\(NONE\))/.test(out) && /Verify return code: 0 \(ok\)/.test(out), out });
    });
  });
}

const OLD = ['-cipher', 'DEFAULT:@SECLEVEL=0'];

const LISTENERS = [
  ['API', () => apiPort, () => '127.0.0.1'],
  ['agent channel', () => agentPort, () => '127.0.0.1'],
  ['data service', () => dataPort, () => '127.0.0.1'],
  ['data gateway (as cells reach it)', () => 443, () => gateway],
] as const;

for (const [name, port, host] of LISTENERS) {
  test(`${name}: TLS 1.0 and 1.1 are refused`, async () => {
    const client = name === 'agent channel' ? ['-cert', join(cluster.dataDir, 'pki', 'agent.pem'), '-key', join(cluster.dataDir, 'pki', 'agent-key.pem')] : [];
    for (const v of ['-tls1', '-tls1_1']) {
      const r = await handshake(port(), [v, ...OLD, ...client], host());
      assert.equal(r.ok, false, `${name} accepted ${v}:\n${r.out}`);
      // The client did offer the old version: the refusal is the server's alert, not a client-side policy.
      assert.match(r.out, /alert protocol version/, `${name}: ${v} failed for another reason:\n${r.out}`);
    }
  });
}

test('API, data service and data gateway: TLS 1.2 and 1.3 are accepted with the local CA', async () => {
  for (const v of ['-tls1_2', '-tls1_3']) {
    assert.equal((await handshake(apiPort, [v])).ok, true, `API refused ${v}`);
    assert.equal((await handshake(dataPort, [v])).ok, true, `data service refused ${v}`);
    // Through the gateway the certificate is the data service's own, valid for the name cells use.
    const r = await handshake(443, [v], gateway, 'data.cleanroom.internal');
    assert.equal(r.ok, true, `data gateway refused ${v}:\n${r.out}`);
  }
});

test('agent channel: no client certificate, or one from a foreign CA, gets no session; the agent certificate does', async () => {
  const pki = join(cluster.dataDir, 'pki');
  const none = await wsConnect({});
  assert.equal(none, 'refused', 'a client without a certificate got through');
  const foreign = await wsConnect({ cert: readFileSync(join(scratch, 'foreign.pem'), 'utf8'), key: readFileSync(join(scratch, 'foreign-key.pem'), 'utf8') });
  assert.equal(foreign, 'refused', 'a certificate from another CA got through');
  const agent = await wsConnect({ cert: readFileSync(join(pki, 'agent.pem'), 'utf8'), key: readFileSync(join(pki, 'agent-key.pem'), 'utf8') });
  assert.equal(agent, 'open');
});

test("agent channel: our CA's server certificate, used as a client certificate, is not an agent", async () => {
  const pki = join(cluster.dataDir, 'pki');
  const r = await wsConnect({ cert: readFileSync(join(pki, 'server.pem'), 'utf8'), key: readFileSync(join(pki, 'server-key.pem'), 'utf8') });
  assert.notEqual(r, 'open');
});

test('no plaintext HTTP on any port', async () => {
  for (const port of [apiPort, agentPort, dataPort]) {
    const r = await fetch(`http://127.0.0.1:${port}/v1/health`).then((res) => res.status, () => 'refused');
    assert.ok(r === 'refused' || r === 400, `plain HTTP on ${port} answered ${r}`);
  }
});

/** wsConnect dials the agent channel with the given client credentials; 'open' only if it stays open as an agent would. */
function wsConnect(creds: { cert?: string; key?: string }): Promise<'open' | 'refused' | 'closed'> {
  return new Promise((resolve) => {
    const ws = new WebSocket(`wss://127.0.0.1:${agentPort}/v1/agent`, { ca: cluster.ca, ...creds });
    let settled = false;
    const done = (v: 'open' | 'refused' | 'closed') => {
      if (settled) return;
      settled = true;
      ws.terminate();
      resolve(v);
    };
    ws.on('error', () => done('refused'));
    ws.on('close', () => done('closed'));
    // An accepted peer is not closed by the server within this window; a refused certificate is.
    ws.on('open', () => setTimeout(() => done('open'), 500));
  });
}
