// The agent's refusals reach the user (root; a real control plane and agent): images whose layers the control plane
// accepts (their blobs match their digests) but the agent refuses while unpacking fail with the agent's code, and
// the agent's store keeps nothing of them.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { TestCluster } from '../support/cluster.js';
import { writeLayout } from '../support/image-blobs.js';
import type { TarWriteEntry } from '../../src/shared/images/tar-writer.js';

let cluster: TestCluster;
let work: string;

before(async () => {
  work = mkdtempSync('/var/tmp/cleanroom-test-h2refusals-');
  cluster = await TestCluster.start({ config: { images: { maxUnpackedMiB: 4 }, agent: { pool: [{ runtime: 'runc', class: 'small', warm: 0 }] } } });
});

after(async () => {
  await cluster?.stop();
  if (work) rmSync(work, { recursive: true, force: true });
});

const CASES: Array<{ name: string; layer: TarWriteEntry[]; code: string }> = [
  { name: 'traversal', layer: [{ path: 'ok', type: '0' }, { path: '../../escape', type: '0', data: 'x' }], code: 'image_layer_invalid' },
  { name: 'through-symlink', layer: [{ path: 'etc', type: '2', linkname: '/etc' }, { path: 'etc/cron.d/x', type: '0', data: 'x' }], code: 'image_layer_invalid' },
  { name: 'device', layer: [{ path: 'dev/mem', type: '3', devmajor: 1, devminor: 1 }], code: 'image_layer_invalid' },
  { name: 'hardlink-out', layer: [{ path: 'shadow', type: '1', linkname: '../../../../etc/shadow' }], code: 'image_layer_invalid' },
  // 64 MiB of zeros gzip to ~64 KiB: past images.maxUnpackedMiB (4) the agent stops unpacking.
  { name: 'bomb', layer: [{ path: 'zeros', type: '0', data: Buffer.alloc(64 << 20) }], code: 'image_too_large' },
];

for (const c of CASES) {
  test(`${c.name}: refused by the agent with ${c.code}, nothing kept`, async () => {
    const layout = join(work, c.name);
    writeLayout(layout, [[{ path: 'bin/', type: '5' }], c.layer]);
    const cli = await cluster.cli(['images', 'import', layout, '--name', `${c.name}:1`, '--no-wait']);
    assert.equal(cli.code, 0, cli.stderr);
    const img = await cluster.client.waitForImage(`${c.name}:1`, { timeoutMs: 120_000, intervalMs: 100 });
    assert.equal(img.state, 'failed', JSON.stringify(img));
    assert.equal(img.error?.code, c.code, JSON.stringify(img.error));
    const unpacked = join(cluster.dataDir, 'images', 'unpacked');
    // No other image is prepared in this cluster (images.default is host): the store is empty again.
    assert.deepEqual(readdirSync(unpacked), [], 'no layer, half-made layer or top layer is kept');
    assert.match(img.error?.message ?? '', c.code === 'image_too_large' ? /more than/ : /layer|entry|link|device/);
  });
}
