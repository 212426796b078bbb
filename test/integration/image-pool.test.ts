// The default image end to end (root; a real control plane and agent): with images.default 'base' (the OCI layout the
// install step builds), the agent's pools without an image of their own warm up on it, a job that names no image takes
// a warm cell on it, and `cleanroom pool` shows the image's pool key.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { REPO_ROOT, TestCluster } from '../support/cluster.js';
import { Sandbox } from '../../src/sdk/sandbox.js';

const layout = join(REPO_ROOT, 'build/images/base');
let cluster: TestCluster;
let digest: string;

before(async () => {
  assert.ok(existsSync(join(layout, 'index.json')), 'build/images/base is missing: sh scripts/install-deps.sh builds it');
  digest = (JSON.parse(readFileSync(join(layout, 'index.json'), 'utf8')) as { manifests: Array<{ digest: string }> }).manifests[0]!.digest;
  cluster = await TestCluster.start({ config: { images: { default: 'base', defaultSource: layout }, agent: { pool: [{ runtime: 'runc', class: 'small', warm: 1 }] } } });
});

after(async () => {
  await cluster?.stop();
});

test('pools without an image warm up on the default image; a job naming none runs there, warm', async () => {
  const key = `runc/small@${digest.slice(7, 19)}`;
  await cluster.waitWarm(120_000);
  const pool = await cluster.client.pool();
  const entries = Object.values(pool.agents).flatMap((a) => Object.keys(a));
  assert.deepEqual(entries, [key], JSON.stringify(pool));
  const r = await cluster.runJob({ command: ['sh', '-c', 'readlink /bin/sh; id -u; test -d /usr/lib/x86_64-linux-gnu && echo host-usr || echo image-root'] });
  assert.equal(r.job.status, 'succeeded', r.stderr);
  assert.equal(r.stdout, '/bin/busybox\n1000\nimage-root\n');
  assert.equal(r.job.timings.agent_cold, 0, `took a warm cell: ${JSON.stringify(r.job.timings)}`);
});

test('a sandbox naming no image runs on the default image, and one naming an unknown image is refused', async () => {
  const sb = await Sandbox.create({ metadata: { on: 'base' } }, cluster.client);
  try {
    const r = await sb.exec(['sh', '-c', 'readlink /bin/sh; id -u; test -d /usr/lib/x86_64-linux-gnu && echo host-usr || echo image-root']);
    assert.equal(r.exitCode, 0, r.stderr);
    assert.equal(r.stdout, '/bin/busybox\n1000\nimage-root\n');
  } finally {
    await sb.kill();
  }
  await assert.rejects(Sandbox.create({ image: 'no-such-image:1' }, cluster.client), (e: Error & { code?: string }) => e.code === 'image_not_found');
});
