// The control plane's image checks without a registry: references, archive recognition, a staged layout's limits and
// media types, blob admission (digest and size verified, shared blobs kept once, nothing admitted on a mismatch).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { cpSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync, appendFileSync } from 'node:fs';
import { join } from 'node:path';
import { ApiError } from '../../../src/shared/errors.js';
import { BlobStore } from '../../../src/control/images/blob-store.js';
import { ImageImportError } from '../../../src/control/images/image-error.js';
import { parseImageLookup, parseImageName, parseRegistrySource, skopeoRef } from '../../../src/control/images/image-ref.js';
import { classifySkopeoError } from '../../../src/control/images/skopeo.js';
import { sniffArchive } from '../../../src/control/images/archive-upload.js';
import { readStagedImage } from '../../../src/control/images/staged-image.js';
import { testImages } from '../../support/test-images.js';

const LIMITS = { maxLayers: 128, maxConfigBytes: 1024 * 1024, maxBlobBytes: 1 << 30 };
const code = async (p: Promise<unknown>) => ((await p.then(() => null, (e: unknown) => e)) as ImageImportError | null)?.code ?? 'ok';

test('names, tags, digests and registry references are parsed strictly', () => {
  assert.deepEqual(parseImageName('busybox'), { name: 'busybox', tag: 'latest' });
  assert.deepEqual(parseImageName('team/py:3.11-slim'), { name: 'team/py', tag: '3.11-slim' });
  for (const bad of ['Busybox', '../x', 'a//b', 'x:', 'x:-t', 'a b', '', 'x'.repeat(200)]) assert.throws(() => parseImageName(bad), ApiError, bad);
  assert.deepEqual(parseImageLookup(`sha256:${'a'.repeat(64)}`), { digest: `sha256:${'a'.repeat(64)}` });
  assert.throws(() => parseImageLookup('sha256:abc'), ApiError);
  const r = parseRegistrySource('docker://127.0.0.1:5000/team/app:v1');
  assert.deepEqual(r, { kind: 'registry', registry: '127.0.0.1:5000', repository: 'team/app', tag: 'v1', digest: null });
  assert.equal(skopeoRef(parseRegistrySource(`docker://reg.example/app@sha256:${'b'.repeat(64)}`)), `docker://reg.example/app@sha256:${'b'.repeat(64)}`);
  assert.equal(parseRegistrySource('docker://reg.example/app').tag, 'latest');
  for (const bad of ['reg.example/app:1', 'docker://app', 'docker://reg.example/App:1', 'oci:/tmp/x', 'docker://reg/app:1 --src-creds=x', 'docker://reg/app@sha256:zz']) assert.throws(() => parseRegistrySource(bad), ApiError, bad);
});

test("skopeo's failures map to stable codes", () => {
  const cases: Array<[string, string]> = [
    ['time="x" level=fatal msg="Error reading manifest 1 in docker://127.0.0.1:1/b: pinging container registry 127.0.0.1:1: Get \\"https://127.0.0.1:1/v2/\\": dial tcp 127.0.0.1:1: connect: connection refused"', 'image_registry_unreachable'],
    ['initializing source docker://r/b:1: reading manifest 1 in r/b: unauthorized: authentication required', 'image_auth_failed'],
    ['pinging container registry r: Get "https://r/v2/": x509: certificate signed by unknown authority', 'image_tls_failed'],
    ['reading manifest 1 in r/b: manifest unknown: manifest unknown', 'image_not_found'],
    ['writing blob: happened during read: Digest did not match, expected sha256:aa, got sha256:bb', 'image_digest_mismatch'],
    ['something nobody foresaw', 'image_invalid'],
  ];
  for (const [stderr, want] of cases) assert.equal(classifySkopeoError(stderr).code, want, stderr);
});

test('archives are recognised by their entries: docker save, OCI layout, or refused', async () => {
  const dir = mkdtempSync('/tmp/cleanroom-h1-sniff-');
  try {
    const { busybox } = await testImages();
    execFileSync('tar', ['-C', busybox.layout, '-cf', join(dir, 'oci.tar'), '.']);
    assert.equal(await sniffArchive(join(dir, 'oci.tar')), 'oci-archive');
    writeFileSync(join(dir, 'manifest.json'), '[]');
    execFileSync('tar', ['-C', dir, '-cf', join(dir, 'docker.tar'), 'manifest.json']);
    assert.equal(await sniffArchive(join(dir, 'docker.tar')), 'docker-archive');
    writeFileSync(join(dir, 'junk.tar'), Buffer.alloc(10_000, 1));
    assert.equal(await code(sniffArchive(join(dir, 'junk.tar'))), 'image_invalid');
    execFileSync('tar', ['-C', dir, '-cf', join(dir, 'other.tar'), 'junk.tar']);
    assert.equal(await code(sniffArchive(join(dir, 'other.tar'))), 'image_invalid');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("a staged layout is checked: limits, layer media types, the config's diff_ids, truncated blobs", async () => {
  const { app, busybox } = await testImages();
  const ok = await readStagedImage(app.layout, LIMITS);
  assert.equal(ok.manifest.digest, app.digest);
  assert.equal(ok.bytes, app.bytes);
  assert.equal(ok.blobs.length, 4, 'manifest, config, two layers');
  assert.deepEqual(ok.manifest.config, { env: ['PATH=/bin', 'GREETING=hi'], workingDir: '/app', entrypoint: ['/bin/cat'], cmd: ['/app/hello.txt'], user: '' });
  assert.equal(await code(readStagedImage(app.layout, { ...LIMITS, maxLayers: 1 })), 'image_invalid');
  assert.equal(await code(readStagedImage(app.layout, { ...LIMITS, maxConfigBytes: 64 })), 'image_invalid');
  assert.equal(await code(readStagedImage(app.layout, { ...LIMITS, maxBlobBytes: 1000 })), 'image_too_large');
  const dir = mkdtempSync('/tmp/cleanroom-h1-staged-');
  try {
    // A manifest whose layer is zstd (not supported) — rewritten in a copy of the layout, its digest recomputed.
    const copy = join(dir, 'zstd');
    cpSync(busybox.layout, copy, { recursive: true });
    const manifestPath = join(copy, 'blobs', 'sha256', busybox.digest.slice(7));
    const m = JSON.parse(readFileSync(manifestPath, 'utf8')) as { layers: Array<{ mediaType: string }> };
    m.layers[0]!.mediaType = 'application/vnd.oci.image.layer.v1.tar+zstd';
    const text = JSON.stringify(m);
    const { createHash } = await import('node:crypto');
    const hex = createHash('sha256').update(text).digest('hex');
    writeFileSync(join(copy, 'blobs', 'sha256', hex), text);
    writeFileSync(join(copy, 'index.json'), JSON.stringify({ schemaVersion: 2, manifests: [{ mediaType: 'application/vnd.oci.image.manifest.v1+json', digest: `sha256:${hex}`, size: text.length }] }));
    assert.equal(await code(readStagedImage(copy, LIMITS)), 'image_invalid');
    // A layer blob longer than its descriptor says: refused before any hashing.
    const long = join(dir, 'long');
    cpSync(busybox.layout, long, { recursive: true });
    appendFileSync(join(long, 'blobs', 'sha256', busybox.layers[0]!.digest.slice(7)), 'x');
    assert.equal(await code(readStagedImage(long, LIMITS)), 'image_digest_mismatch');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('blobs are admitted only after every one is verified; a shared blob is stored once', async () => {
  const { app, busybox } = await testImages();
  const root = mkdtempSync('/tmp/cleanroom-h1-blobs-');
  try {
    const store = new BlobStore(join(root, 'images'));
    await store.init();
    const stage = (img: typeof app) => {
      const d = join(store.tmpDir, `s${Math.random()}`);
      cpSync(img.layout, d, { recursive: true });
      return d;
    };
    const bb = await readStagedImage(busybox.layout, LIMITS);
    await store.admit(stage(busybox), bb.blobs);
    assert.equal(readdirSync(store.blobsDir).length, 3);
    // app shares busybox's layer: one new layer, config and manifest.
    const a = await readStagedImage(app.layout, LIMITS);
    await store.admit(stage(app), a.blobs);
    assert.equal(readdirSync(store.blobsDir).length, 6);
    // A corrupt blob (same size, other bytes) admits nothing of its image.
    const fresh = new BlobStore(join(root, 'fresh'));
    await fresh.init();
    const bad = stage(app);
    const layer = join(bad, 'blobs', 'sha256', app.layers[1]!.digest.slice(7));
    const bytes = readFileSync(layer);
    bytes[bytes.length >> 1] = bytes[bytes.length >> 1]! ^ 0xff;
    writeFileSync(layer, bytes);
    assert.equal(await code(fresh.admit(bad, a.blobs)), 'image_digest_mismatch');
    assert.deepEqual(readdirSync(fresh.blobsDir), []);
    // Removal keeps what is still referenced.
    const freed = await store.removeUnreferenced(a.blobs.map((b) => b.digest), async () => new Set(bb.blobs.map((b) => b.digest)));
    assert.equal(freed, app.bytes - busybox.layers[0]!.size);
    assert.equal(readdirSync(store.blobsDir).length, 3);
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
});
