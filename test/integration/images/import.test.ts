// Image imports against a real registry (docker-registry on 127.0.0.1, TLS from a test CA, bcrypt basic auth) and real
// archives: credentials and CA, every failure with its stable code and nothing left behind, shared layers stored once,
// tenancy, removal, the default image at start, and jobs on images. Tests that need an image `ready` need the agent's
// end of images (branch h-img-agent): they are skipped, saying so, until the agent can prepare images.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { createReadStream, existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { CleanroomClient, CleanroomError, type Image } from '../../../src/sdk/client.js';
import { freePort, REPO_ROOT, TestCluster } from '../../support/cluster.js';
import { TestRegistry } from '../../support/registry.js';
import { CACHE_DIR, pushImage, testImages, toArchive, uniqueImage, type TestImage, type TestImages } from '../../support/test-images.js';

const run = promisify(execFile);
/** AGENT_PREPARES_IMAGES: the agent's end of images is built in (it answers image.prepare). */
const AGENT_PREPARES_IMAGES = existsSync(join(REPO_ROOT, 'dist/src/agent/images/image-service.js'));
const needsAgent = AGENT_PREPARES_IMAGES ? {} : { skip: 'needs the agent end of images (image.prepare answered): merge h-img-agent' };

let cluster: TestCluster;
let registry: TestRegistry;
let images: TestImages;
let work: string;
let tenant: CleanroomClient;
let shared: TestImage;

before(async () => {
  images = await testImages();
  registry = await TestRegistry.start();
  work = mkdtempSync('/var/tmp/cleanroom-test-h1-images-');
  const corrupt = await uniqueImage(join(work, 'corrupt'));
  const truncated = await uniqueImage(join(work, 'truncated'));
  shared = await uniqueImage(join(work, 'shared'), 512);
  await Promise.all([
    pushImage(images.busybox, `${registry.host}/busybox:1`, registry.auth),
    pushImage(images.app, `${registry.host}/app:1`, registry.auth),
    pushImage(images.arm64, `${registry.host}/arm:1`, registry.auth),
    pushImage(images.python, `${registry.host}/python:3`, registry.auth),
    pushImage(corrupt, `${registry.host}/corrupt:1`, registry.auth),
    pushImage(truncated, `${registry.host}/truncated:1`, registry.auth),
    pushImage(shared, `${registry.host}/shared:1`, registry.auth),
  ]);
  registry.corruptBlob(corrupt.layers[1]!.digest);
  registry.truncateBlob(truncated.layers[1]!.digest);
  // The default image is imported at start from an OCI layout (here: busybox's) as public image base:latest.
  cluster = await TestCluster.start({ config: { agent: { pool: [{ runtime: 'runc', class: 'small', warm: 1 }] }, images: { default: 'base', defaultSource: images.busybox.layout, maxConcurrentImports: 2 } } });
  const ws = await cluster.client.createWorkspace({ name: 'img-tenant' });
  tenant = new CleanroomClient({ url: cluster.url, ca: cluster.ca, apiKey: (await cluster.client.createApiKey({ workspace: ws.name, name: 't' })).key });
});

after(async () => {
  tenant?.close();
  await cluster?.stop();
  await registry?.stop();
  if (work) rmSync(work, { recursive: true, force: true });
});

const creds = () => ({ username: registry.username, password: registry.password });
const blobsDir = () => join(cluster.dataDir, 'images', 'blobs', 'sha256');
const tmpDir = () => join(cluster.dataDir, 'images', 'tmp');
const storedBlobs = () => new Set(readdirSync(blobsDir()));
const storeBytes = () => readdirSync(blobsDir()).reduce((n, f) => n + statSync(join(blobsDir(), f)).size, 0);
/** settled waits until an import has left `pulling` (until ready when the agent prepares images). */
const settled = (client: CleanroomClient, id: string) => client.waitForImage(id, { until: AGENT_PREPARES_IMAGES ? ['ready'] : ['unpacking', 'ready'], timeoutMs: 180_000, intervalMs: 100 });

async function expectFailure(client: CleanroomClient, id: string, code: string): Promise<Image> {
  const before = storedBlobs();
  const img = await client.waitForImage(id, { timeoutMs: 120_000, intervalMs: 100 });
  assert.equal(img.state, 'failed', JSON.stringify(img));
  assert.equal(img.error?.code, code, JSON.stringify(img.error));
  assert.ok((img.error?.message.length ?? 0) > 10, 'the message says what went wrong');
  assert.doesNotMatch(JSON.stringify(img), new RegExp(registry.password), 'no credentials in the record');
  // A failed import leaves nothing: no staging directory, no new blob.
  assert.deepEqual(readdirSync(tmpDir()), []);
  assert.deepEqual([...storedBlobs()].filter((b) => !before.has(b)), []);
  await client.deleteImage(img.id);
  return img;
}

test('the default image is imported at start as a public image from its OCI layout', async () => {
  const base = await settled(cluster.client, 'base');
  assert.equal(base.public, true);
  assert.equal(base.digest, images.busybox.digest);
  assert.match(base.source, /^oci:/);
  const seen = await tenant.getImage('base:latest');
  assert.equal(seen.digest, images.busybox.digest, 'every workspace sees a public image');
});

test('import from the registry with credentials and a custom CA: progress, then every blob verified into the store', async () => {
  const started = await cluster.client.importImage({ source: `docker://${registry.host}/app:1`, name: 'app:1', credentials: creds(), caPem: registry.caPem });
  assert.equal(started.state, 'pulling');
  assert.equal(started.id, 'app:1');
  const img = await settled(cluster.client, 'app:1');
  assert.equal(img.digest, images.app.digest, 'an OCI image keeps its manifest digest');
  assert.equal(img.bytes, images.app.bytes);
  assert.equal(img.bytesDone, img.bytes);
  assert.equal(img.layers, 2);
  assert.deepEqual(img.config, { env: ['PATH=/bin', 'GREETING=hi'], workingDir: '/app', entrypoint: ['/bin/cat'], cmd: ['/app/hello.txt'], user: '' });
  for (const l of images.app.layers) {
    const file = join(blobsDir(), l.digest.slice(7));
    assert.equal(createHash('sha256').update(readFileSync(file)).digest('hex'), l.digest.slice(7), 'stored under its own digest');
  }
  assert.deepEqual(readdirSync(tmpDir()), [], 'staging removed');
  assert.equal((await cluster.client.getImage(img.digest!)).id, 'app:1', 'found by digest too');
  const listed = await cluster.client.listImages();
  assert.ok(listed.some((i) => i.id === 'app:1') && listed.some((i) => i.id === 'base:latest'));
  const again = (await cluster.client.importImage({ source: `docker://${registry.host}/app:1`, name: 'app:1', credentials: creds(), caPem: registry.caPem }).catch((e: unknown) => e)) as CleanroomError;
  assert.equal(again.code, 'already_exists');
});

test('layers shared by two images are stored once', async () => {
  await settled(cluster.client, 'base');
  const before = storeBytes();
  const started = await cluster.client.importImage({ source: `docker://${registry.host}/shared:1`, credentials: creds(), caPem: registry.caPem });
  assert.equal(started.id, 'shared:1', 'named after the repository and tag');
  const img = await settled(cluster.client, started.id);
  assert.equal(img.digest, shared.digest);
  // Its first layer is busybox's, stored already for base (and app): only its own layer, config and manifest are new.
  const added = storeBytes() - before;
  const sharedLayer = images.busybox.layers[0]!.size;
  assert.equal(added, shared.bytes - sharedLayer);
  process.stdout.write(`# shared base: image of ${shared.bytes} B (${sharedLayer} B of it busybox's layer, already stored) grew the store by ${added} B; bytes counted per image: ${img.bytes}\n`);
  await cluster.client.deleteImage('shared:1');
  assert.equal(storeBytes(), before, "removing it frees exactly what it added");
});

test('wrong, missing credentials: image_auth_failed; no CA: image_tls_failed; a closed port: image_registry_unreachable', async () => {
  const wrong = await cluster.client.importImage({ source: `docker://${registry.host}/busybox:1`, name: 'wrong:1', credentials: { username: registry.username, password: 'not-the-password' }, caPem: registry.caPem });
  await expectFailure(cluster.client, wrong.id, 'image_auth_failed');
  const none = await cluster.client.importImage({ source: `docker://${registry.host}/busybox:1`, name: 'none:1', caPem: registry.caPem });
  await expectFailure(cluster.client, none.id, 'image_auth_failed');
  const untrusted = await cluster.client.importImage({ source: `docker://${registry.host}/busybox:1`, name: 'untrusted:1', credentials: creds() });
  await expectFailure(cluster.client, untrusted.id, 'image_tls_failed');
  const closed = await freePort();
  const unreachable = await cluster.client.importImage({ source: `docker://127.0.0.1:${closed}/busybox:1`, name: 'gone:1', credentials: creds(), caPem: registry.caPem });
  await expectFailure(cluster.client, unreachable.id, 'image_registry_unreachable');
  const missing = await cluster.client.importImage({ source: `docker://${registry.host}/nothing-here:1`, name: 'missing:1', credentials: creds(), caPem: registry.caPem });
  await expectFailure(cluster.client, missing.id, 'image_not_found');
});

test('a corrupt blob and a truncated blob in the registry: image_digest_mismatch, nothing stored', async () => {
  for (const repo of ['corrupt', 'truncated']) {
    const img = await cluster.client.importImage({ source: `docker://${registry.host}/${repo}:1`, name: `${repo}:1`, credentials: creds(), caPem: registry.caPem });
    await expectFailure(cluster.client, img.id, 'image_digest_mismatch');
  }
});

test('an image for another architecture: image_platform_mismatch', async () => {
  const img = await cluster.client.importImage({ source: `docker://${registry.host}/arm:1`, name: 'arm:1', credentials: creds(), caPem: registry.caPem });
  await expectFailure(cluster.client, img.id, 'image_platform_mismatch');
});

test('docker save and OCI archives upload as a request body; an OCI layout directory through the CLI; not an archive: image_invalid', async () => {
  const docker = join(work, 'app.docker.tar');
  const oci = join(work, 'app.oci.tar');
  await toArchive(images.app, 'docker-archive', docker);
  await toArchive(images.app, 'oci-archive', oci);
  const fromDocker = await cluster.client.importImageArchive('from-docker:1', createReadStream(docker), { size: statSync(docker).size });
  const fromOci = await cluster.client.importImageArchive('from-oci:1', createReadStream(oci), { size: statSync(oci).size });
  const d = await settled(cluster.client, fromDocker.id);
  const o = await settled(cluster.client, fromOci.id);
  assert.equal(d.source, 'archive:docker-archive');
  assert.equal(o.source, 'archive:oci-archive');
  assert.equal(o.digest, images.app.digest, 'an OCI archive keeps the digest');
  assert.equal(d.layers, 2);
  assert.deepEqual(d.config?.entrypoint, ['/bin/cat']);
  const cli = await cluster.cli(['images', 'import', images.busybox.layout, '--name', 'from-layout:1', ...(AGENT_PREPARES_IMAGES ? [] : ['--no-wait'])]);
  assert.equal(cli.code, 0, cli.stderr);
  const l = await settled(cluster.client, 'from-layout:1');
  assert.equal(l.digest, images.busybox.digest);
  const junk = await cluster.client.importImageArchive('junk:1', Buffer.alloc(4096, 7));
  await expectFailure(cluster.client, junk.id, 'image_invalid');
});

test("tenancy: another workspace's image is 404 to get, list, use and delete; public images are for everyone, removable by platform admins only", async () => {
  await settled(cluster.client, 'app:1');
  const notFound = async (p: Promise<unknown>) => assert.equal(((await p.catch((e: unknown) => e)) as CleanroomError).code, 'image_not_found');
  await notFound(tenant.getImage('app:1'));
  await notFound(tenant.getImage(images.app.digest));
  await notFound(tenant.deleteImage('app:1'));
  await notFound(tenant.createJob({ image: 'app:1', command: ['true'] }));
  assert.ok(!(await tenant.listImages()).some((i) => i.id === 'app:1'));
  const publish = await tenant.importImage({ source: `docker://${registry.host}/busybox:1`, public: true, credentials: creds(), caPem: registry.caPem }).catch((e: CleanroomError) => e);
  assert.equal((publish as CleanroomError).code, 'forbidden');
  assert.equal(((await tenant.deleteImage('base').catch((e: unknown) => e)) as CleanroomError).code, 'forbidden');
  // The tenant's own image of the same name is its own.
  const own = await tenant.importImage({ source: `docker://${registry.host}/busybox:1`, name: 'app:1', credentials: creds(), caPem: registry.caPem });
  const mine = await settled(tenant, own.id);
  assert.equal(mine.digest, images.busybox.digest);
  assert.equal((await cluster.client.getImage('app:1')).digest, images.app.digest);
  await tenant.deleteImage('app:1');
  assert.equal((await cluster.client.getImage('app:1')).digest, images.app.digest, "the other workspace's image is untouched");
});

test('a job names an image; one still unpacking is 409 image_not_ready, an unknown one 404', async () => {
  const missing = (await cluster.client.createJob({ image: 'no-such:1', command: ['true'] }).catch((e: unknown) => e)) as CleanroomError;
  assert.equal(missing.code, 'image_not_found');
  if (AGENT_PREPARES_IMAGES) return;
  const unpacking = (await cluster.client.createJob({ image: 'app:1', command: ['true'] }).catch((e: unknown) => e)) as CleanroomError;
  assert.equal(unpacking.code, 'image_not_ready');
  assert.equal(unpacking.status, 409);
});

test('jobs on an image: Entrypoint + Cmd without a command, image Env under the job env, WorkingDir as the default cwd', needsAgent, async () => {
  await settled(cluster.client, 'app:1');
  const r = await cluster.runJob({ image: 'app:1' });
  assert.equal(r.job.status, 'succeeded', r.stderr);
  assert.equal(r.stdout, 'hello from the app layer\n');
  assert.equal(r.job.image, 'app:1');
  assert.equal(r.job.imageDigest, images.app.digest);
  const e = await cluster.runJob({ image: 'app:1', command: ['/bin/sh', '-c', 'echo "$GREETING $OTHER"; pwd'], env: { OTHER: 'there' } });
  assert.equal(e.stdout, 'hi there\n/app\n', e.stderr);
});

test('an image in use is 409 image_in_use until its jobs end; rm deletes the blobs no other image uses', needsAgent, async () => {
  const started = await cluster.client.importImage({ source: `docker://${registry.host}/busybox:1`, name: 'busy:1', credentials: creds(), caPem: registry.caPem });
  await settled(cluster.client, started.id);
  const job = await cluster.client.createJob({ image: 'busy:1', command: ['sleep', '30'] });
  const inUse = (await cluster.client.deleteImage('busy:1').catch((e: unknown) => e)) as CleanroomError;
  assert.equal(inUse.code, 'image_in_use');
  await cluster.client.cancelJob(job.id);
  for (let i = 0; i < 100 && !['cancelled', 'succeeded', 'failed', 'error'].includes((await cluster.client.getJob(job.id)).status); i++) await new Promise((r) => setTimeout(r, 100));
  await cluster.client.deleteImage('busy:1');
  // busybox's blobs stay: base and bb use them.
  assert.ok(storedBlobs().has(images.busybox.layers[0]!.digest.slice(7)));
});

test('rm: blobs only the removed image used are deleted, shared ones stay', async () => {
  await settled(cluster.client, 'app:1');
  const appOnly = images.app.layers[1]!.digest.slice(7);
  for (const name of ['from-docker:1', 'from-oci:1']) await cluster.client.deleteImage(name).catch(() => {});
  assert.ok(storedBlobs().has(appOnly));
  const removed = await cluster.client.deleteImage('app:1');
  assert.equal(removed[0]?.digest, images.app.digest);
  assert.ok(!storedBlobs().has(appOnly), "app's own layer is gone");
  assert.ok(storedBlobs().has(images.busybox.layers[0]!.digest.slice(7)), 'the shared layer stays');
  assert.equal(((await cluster.client.getImage('app:1').catch((e: unknown) => e)) as CleanroomError).code, 'image_not_found');
});

test('a ~100 MB image: import throughput beside skopeo copy of the same image to a directory; the CLI imports, lists, shows and removes', async () => {
  const dest = join(work, 'skopeo-dir');
  const t1 = performance.now();
  await run('skopeo', ['--policy', join(CACHE_DIR, 'policy.json'), 'copy', '--quiet', '--src-creds', `${registry.username}:${registry.password}`, '--src-cert-dir', registry.certDir, `docker://${registry.host}/python:3`, `dir:${dest}`]);
  const skopeoMs = performance.now() - t1;
  rmSync(dest, { recursive: true, force: true });
  const t0 = performance.now();
  await cluster.client.importImage({ source: `docker://${registry.host}/python:3`, name: 'python:3', credentials: creds(), caPem: registry.caPem });
  const img = await cluster.client.waitForImage('python:3', { until: ['unpacking', 'ready'], timeoutMs: 300_000, intervalMs: 20 });
  const importMs = performance.now() - t0;
  assert.equal(img.state === 'failed' ? img.error?.code : 'ok', 'ok');
  assert.ok(img.bytes > 30e6);
  const mb = img.bytes / 1e6;
  process.stdout.write(`# import of python:3 (${mb.toFixed(1)} MB of blobs, ~110 MB unpacked): ${(mb / (importMs / 1000)).toFixed(1)} MB/s through the API until its blobs are stored (${importMs.toFixed(0)} ms) vs ${(mb / (skopeoMs / 1000)).toFixed(1)} MB/s for skopeo copy to dir: (${skopeoMs.toFixed(0)} ms)\n`);
  await cluster.client.deleteImage('python:3');
  // The CLI: credentials from the environment (not argv), the CA from a file; plain progress lines when not on a TTY.
  const cli = await cluster.cli(['images', 'import', `docker://${registry.host}/python:3`, '--name', 'py:3', '--ca', join(registry.certDir, 'ca.crt'), ...(AGENT_PREPARES_IMAGES ? [] : ['--no-wait'])], { CLEANROOM_REGISTRY_CREDS: `${registry.username}:${registry.password}` });
  assert.equal(cli.code, 0, cli.stderr);
  if (AGENT_PREPARES_IMAGES) assert.match(cli.stderr, /importing py:3.*\n[\s\S]*ready/);
  await settled(cluster.client, 'py:3');
  const ls = await cluster.cli(['images', 'ls']);
  assert.match(ls.stdout, /py:3 +(unpacking|ready)/);
  const get = await cluster.cli(['images', 'get', 'py:3', '--json']);
  assert.equal((JSON.parse(get.stdout) as Image).digest, img.digest);
  const rm = await cluster.cli(['images', 'rm', 'py:3']);
  assert.equal(rm.code, 0, rm.stderr);
  assert.match(rm.stdout, /removed py:3/);
});
