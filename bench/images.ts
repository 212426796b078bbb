// bench/images.ts measures image imports: a ~100 MB image (python3 from the host's packages, ~110 MB unpacked) from a
// local registry (docker-registry on 127.0.0.1, TLS and basic auth) through the public API until its blobs are verified
// in the store, beside `skopeo copy` of the same image to a directory, rounds alternating; and the disk two images
// sharing a base take.
// Usage: node dist/bench/images.js [rounds=5]   (as root; writes bench/results/images.json); `npm run bench` calls
// measureImports with fewer rounds.
import { execFile } from 'node:child_process';
import { mkdtempSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { pathToFileURL } from 'node:url';
import { REPO_ROOT, TestCluster } from '../test/support/cluster.js';
import { TestRegistry } from '../test/support/registry.js';
import { CACHE_DIR, pushImage, testImages } from '../test/support/test-images.js';
import { describeMachine } from './machine.js';
import { summarize } from './stats.js';

const run = promisify(execFile);

/** ImportsResult is the import stage: the API beside skopeo on the same image and registry, and shared-base disk use. */
export type ImportsResult = Awaited<ReturnType<typeof measureImports>>;

/** measureImports runs `rounds` alternating imports (API, then skopeo) of the ~100 MB test image from a local registry. */
export async function measureImports(rounds: number) {
  const images = await testImages();
  const registry = await TestRegistry.start();
  const work = mkdtempSync('/var/tmp/cleanroom-bench-images-');
  let cluster: TestCluster | null = null;
  try {
    await pushImage(images.python, `${registry.host}/python:3`, registry.auth);
    await pushImage(images.busybox, `${registry.host}/busybox:1`, registry.auth);
    await pushImage(images.app, `${registry.host}/app:1`, registry.auth);
    cluster = await TestCluster.start({ config: { agent: { pool: [{ runtime: 'runc', class: 'small', warm: 1 }] }, images: { default: 'host' } } });
    const c = cluster.client;
    const access = { credentials: { username: registry.username, password: registry.password }, caPem: registry.caPem };
    const apiMs: number[] = [];
    const skopeoMs: number[] = [];
    let blobBytes = 0;
    for (let i = 0; i < rounds; i++) {
      const dest = join(work, `dir-${i}`);
      const t1 = performance.now();
      await run('skopeo', ['--policy', join(CACHE_DIR, 'policy.json'), 'copy', '--quiet', '--src-creds', `${registry.username}:${registry.password}`, '--src-cert-dir', registry.certDir, `docker://${registry.host}/python:3`, `dir:${dest}`]);
      skopeoMs.push(performance.now() - t1);
      rmSync(dest, { recursive: true, force: true });
      const t0 = performance.now();
      await c.importImage({ source: `docker://${registry.host}/python:3`, name: `python:r${i}`, ...access });
      const img = await c.waitForImage(`python:r${i}`, { until: ['unpacking', 'ready'], intervalMs: 10, timeoutMs: 600_000 });
      apiMs.push(performance.now() - t0);
      if (img.state === 'failed') throw new Error(`import failed: ${JSON.stringify(img.error)}`);
      blobBytes = img.bytes;
      // Each round is a fresh import: the previous one's blobs are gone once its record is.
      await c.waitForImage(`python:r${i}`, { timeoutMs: 600_000 }).catch(() => null);
      await c.deleteImage(`python:r${i}`);
    }
    const blobsDir = join(cluster.dataDir, 'images', 'blobs', 'sha256');
    const storeBytes = () => readdirSync(blobsDir).reduce((n, f) => n + statSync(join(blobsDir, f)).size, 0);
    const empty = storeBytes();
    for (const [repo, name] of [['busybox:1', 'bb:1'], ['app:1', 'app:1']] as const) {
      await c.importImage({ source: `docker://${registry.host}/${repo}`, name, ...access });
      await c.waitForImage(name, { until: ['unpacking', 'ready'], intervalMs: 20 });
    }
    const mb = blobBytes / 1e6;
    const api = summarize(apiMs);
    const sk = summarize(skopeoMs);
    const out = {
      machine: describeMachine(),
      at: new Date().toISOString(),
      rounds,
      image: { blobBytes, unpackedApproxMiB: 110, layers: 2 },
      importThroughApiMs: api,
      skopeoCopyToDirMs: sk,
      mbPerSecond: { api: Math.round((mb / (api.p50 / 1000)) * 10) / 10, skopeo: Math.round((mb / (sk.p50 / 1000)) * 10) / 10 },
      ratioApiToSkopeo: Math.round((sk.p50 / api.p50) * 100) / 100,
      sharedBase: {
        busyboxBytes: images.busybox.bytes,
        appBytes: images.app.bytes,
        sharedLayerBytes: images.busybox.layers[0]!.size,
        sumOfImages: images.busybox.bytes + images.app.bytes,
        storedBytes: storeBytes() - empty,
      },
      note: 'API time: POST /v1/images until GET says the blobs are verified in the store (state unpacking or ready; agents unpack after). skopeo: the same pull to a dir: destination. Same registry, same run, rounds alternating.',
    };
    return out;
  } finally {
    await cluster?.stop();
    await registry.stop();
    rmSync(work, { recursive: true, force: true });
  }
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  const out = await measureImports(Number(process.argv[2] ?? 5));
  console.log(JSON.stringify(out, null, 2));
  writeFileSync(join(REPO_ROOT, 'bench/results/images.json'), JSON.stringify(out, null, 2) + '\n');
}
