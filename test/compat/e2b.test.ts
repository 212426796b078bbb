// The unmodified e2b SDK (2.51.0, from node_modules) against a real Cleanroom: each scenario of e2b-scenarios.ts runs in
// its own process, configured only through E2B_API_URL, E2B_SANDBOX_URL, E2B_API_KEY and NODE_EXTRA_CA_CERTS.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
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

void CleanroomClient;
