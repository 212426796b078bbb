// The unmodified e2b SDK (2.51.0, from node_modules) against a real Cleanroom: each scenario of e2b-scenarios.ts runs in
// its own process, configured only through E2B_API_URL, E2B_SANDBOX_URL, E2B_API_KEY and NODE_EXTRA_CA_CERTS.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { request as httpsRequest } from 'node:https';
import type { IncomingMessage } from 'node:http';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { fileURLToPath } from 'node:url';
import { CleanroomClient } from '../../src/sdk/client.js';
import { CLI, TestCluster } from '../support/cluster.js';

const run = promisify(execFile);
const SCENARIOS = join(fileURLToPath(new URL('.', import.meta.url)), 'e2b-scenarios.js');
let cluster: TestCluster;
let env: NodeJS.ProcessEnv;

before(async () => {
  cluster = await TestCluster.start({ config: { agent: { pool: [{ runtime: 'runc', class: 'small', warm: 2 }] } } });
  const client = JSON.parse(readFileSync(join(cluster.dataDir, 'client.json'), 'utf8')) as { caPath: string };
  const ws = await cluster.client.createWorkspace({ name: `e2b-other-${Date.now()}` });
  const other = await cluster.client.createApiKey({ workspace: ws.name, name: 'k' });
  env = { PATH: process.env.PATH, E2B_API_URL: cluster.url, E2B_SANDBOX_URL: cluster.url, E2B_API_KEY: cluster.apiKey, NODE_EXTRA_CA_CERTS: client.caPath, E2B_OTHER_KEY: other.key };
});
after(async () => {
  await cluster?.stop();
});

async function scenario(name: string): Promise<string> {
  try {
    const r = await run(process.execPath, [SCENARIOS, name], { env, timeout: 300_000, maxBuffer: 16 * 1024 * 1024 });
    return r.stdout;
  } catch (e) {
    const err = e as { stdout?: string; stderr?: string; message: string };
    assert.fail(`scenario ${name} failed: ${err.stderr || err.message}`);
  }
}

test('Sandbox.create (template, metadata, envs, timeout), connect, getInfo, setTimeout, list (metadata, paging), kill', async () => {
  await scenario('lifecycle');
});
test('commands: run with callbacks, CommandExitError, background + wait, sendStdin/closeStdin, list, kill, connect; a disconnect never kills', async () => {
  await scenario('commands');
});
test('pty: create, sendInput, resize, kill', async () => {
  await scenario('pty');
});
test('files: text, bytes, 50 MB streams (octet-stream and multipart), list, exists, getInfo, makeDir, rename, remove, signed URLs; watchDir (polled)', async () => {
  await scenario('files');
});
test('errors: wrong key, unknown sandbox, another workspace, a token of another sandbox, an ended sandbox, pause', async () => {
  await scenario('errors');
});
test('unsupported features fail with the clear errors the README lists (pause, metrics, snapshots, templates, file metadata)', async () => {
  await scenario('unsupported');
});
test('a control-plane restart (SIGKILL) leaves e2b clients working: the same access token, the sandbox and its background process live on', async () => {
  const child = spawn(process.execPath, [SCENARIOS, 'restart'], { env, stdio: ['pipe', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  child.stdout.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr.on('data', (d: Buffer) => (err += d.toString()));
  const exited = new Promise<number>((resolve) => child.once('exit', (code) => resolve(code ?? -1)));
  const deadline = Date.now() + 120_000;
  while (!out.includes('READY')) {
    assert.ok(Date.now() < deadline && child.exitCode === null, `the scenario did not get ready: ${err}`);
    await new Promise((r) => setTimeout(r, 50));
  }
  process.kill(Number(readFileSync(join(cluster.dataDir, 'run', 'control.pid'), 'utf8')), 'SIGKILL');
  await run(process.execPath, [CLI, 'up', '--detach', '--data-dir', cluster.dataDir], { env: cluster.env, timeout: 120_000 });
  child.stdin.end('go\n');
  assert.equal(await exited, 0, err);
});
test('a Start stream whose client stops reading slows the process (bounded buffers); the disconnect leaves it running', async () => {
  // The raw protocol, as the SDK speaks it, from this process (the SDK itself buffers what it reads).
  const call = (path: string, headers: Record<string, string>, body: Buffer): Promise<IncomingMessage> =>
    new Promise((resolve, reject) => {
      const r = httpsRequest(new URL(path, cluster.url), { method: 'POST', headers, ca: cluster.ca }, resolve);
      r.on('error', reject);
      r.end(body);
    });
  const created = await call('/v2/sandboxes', { 'x-api-key': cluster.apiKey, 'content-type': 'application/json' }, Buffer.from('{"templateID":"base"}'));
  const sbx = JSON.parse(await text(created)) as { sandboxID: string; envdAccessToken: string };
  const json = Buffer.from(JSON.stringify({ process: { cmd: '/bin/sh', args: ['-c', 'head -c 2000000000 /dev/zero'] }, stdin: false }));
  const head = Buffer.alloc(5);
  head.writeUInt32BE(json.length, 1);
  const res = await call('/process.Process/Start', { 'content-type': 'application/connect+json', 'connect-protocol-version': '1', 'e2b-sandbox-id': sbx.sandboxID, 'x-access-token': sbx.envdAccessToken }, Buffer.concat([head, json]));
  assert.equal(res.statusCode, 200);
  res.pause();
  const controlPid = Number(readFileSync(join(cluster.dataDir, 'run', 'control.pid'), 'utf8'));
  const rssKiB = () => Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${controlPid}/status`, 'utf8'))?.[1] ?? 0);
  const before = rssKiB();
  const proc = async () => (await cluster.client.call('GET', `/v1/sandboxes/${sbx.sandboxID}/processes`) as { processes: Array<{ argv: string[]; nextSeq: number; running: boolean }> }).processes.find((p) => p.argv.includes('head -c 2000000000 /dev/zero'))!;
  await new Promise((r) => setTimeout(r, 3000));
  const a = await proc();
  await new Promise((r) => setTimeout(r, 2000));
  const b = await proc();
  assert.ok(b.running, 'the writer is blocked, not finished');
  assert.ok(b.nextSeq - a.nextSeq < 4 * 1024 * 1024, `the writer went on: ${a.nextSeq} → ${b.nextSeq} bytes`);
  assert.ok(b.nextSeq < 200 * 1024 * 1024, `the writer wrote ${b.nextSeq} bytes with nobody reading`);
  assert.ok(rssKiB() - before < 64 * 1024, `the control plane grew by ${rssKiB() - before} KiB`);
  res.destroy();
  await new Promise((r) => setTimeout(r, 1000));
  assert.equal((await proc()).running, true, 'a disconnect never kills the process');
  await cluster.client.call('DELETE', `/v1/sandboxes/${sbx.sandboxID}`);
});

async function text(res: IncomingMessage): Promise<string> {
  let out = '';
  for await (const c of res) out += (c as Buffer).toString();
  return out;
}

void CleanroomClient;
