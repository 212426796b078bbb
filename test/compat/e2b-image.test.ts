// The e2b SDK on Cleanroom's default image (`base`, busybox: no bash): template `base` is that image, and the SDK's
// `/bin/bash -l -c …` and PTY shell run through /bin/sh there. Needs build/images/base (scripts/install-deps.sh builds it).
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { fileURLToPath } from 'node:url';
import { REPO_ROOT, TestCluster } from '../support/cluster.js';

const run = promisify(execFile);
const SCENARIOS = join(fileURLToPath(new URL('.', import.meta.url)), 'e2b-scenarios.js');
const layout = join(REPO_ROOT, 'build/images/base');
let cluster: TestCluster;
let env: NodeJS.ProcessEnv;

before(async () => {
  assert.ok(existsSync(join(layout, 'index.json')), 'build/images/base is missing: sh scripts/install-deps.sh builds it');
  cluster = await TestCluster.start({ config: { images: { default: 'base', defaultSource: layout }, agent: { pool: [{ runtime: 'runc', class: 'small', warm: 2 }] } } });
  const client = JSON.parse(readFileSync(join(cluster.dataDir, 'client.json'), 'utf8')) as { caPath: string };
  env = { PATH: process.env.PATH, E2B_API_URL: cluster.url, E2B_SANDBOX_URL: cluster.url, E2B_API_KEY: cluster.apiKey, NODE_EXTRA_CA_CERTS: client.caPath };
});
after(async () => {
  await cluster?.stop();
});

for (const name of ['lifecycle', 'commands', 'pty', 'files']) {
  test(`on the default image (busybox, no bash): ${name}`, async () => {
    try {
      await run(process.execPath, [SCENARIOS, name], { env, timeout: 300_000, maxBuffer: 16 * 1024 * 1024 });
    } catch (e) {
      const err = e as { stderr?: string; message: string };
      assert.fail(`scenario ${name} failed: ${err.stderr || err.message}`);
    }
  });
}
