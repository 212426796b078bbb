// The agent's image store (root: it chowns): users resolved from the image, the top layer, shared layers stored once
// and kept while another prepared image uses them, records that survive a restart.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readdirSync, readFileSync, readlinkSync, rmSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { ImageStore } from '../../../src/agent/images/image-store.js';
import { resolveImageUser, withWorkloadUser } from '../../../src/agent/images/image-user.js';
import { IMAGE_UID_BASE, type ImageLayer, type ImageManifest } from '../../../src/shared/images/format.js';
import { putLayer } from '../../support/image-blobs.js';

let root: string;
before(() => {
  root = mkdtempSync('/var/tmp/cleanroom-test-h2store-');
});
after(() => rmSync(root, { recursive: true, force: true }));

const PASSWD = 'root:x:0:0:root:/root:/bin/sh\napp:x:1500:1600:app:/app:/bin/sh\nzero:x:0:5::/:/bin/sh\n';
const GROUP = 'root:x:0:\napps:x:1600:\nextra:x:1700:\n';

test('the image config User: a user of the image runs as itself; root, nothing or an unknown name as the workload user', () => {
  assert.deepEqual(resolveImageUser('', PASSWD, GROUP), { uid: 1000, gid: 1000, name: 'workload' });
  assert.deepEqual(resolveImageUser('root', PASSWD, GROUP), { uid: 1000, gid: 1000, name: 'workload' });
  assert.deepEqual(resolveImageUser('0', PASSWD, GROUP), { uid: 1000, gid: 1000, name: 'workload' });
  assert.deepEqual(resolveImageUser('zero', PASSWD, GROUP), { uid: 1000, gid: 1000, name: 'workload' });
  assert.deepEqual(resolveImageUser('nobody-here', PASSWD, GROUP), { uid: 1000, gid: 1000, name: 'workload' });
  assert.deepEqual(resolveImageUser('app', PASSWD, GROUP), { uid: 1500, gid: 1600, name: 'app' });
  assert.deepEqual(resolveImageUser('1500', PASSWD, GROUP), { uid: 1500, gid: 1600, name: 'app' });
  assert.deepEqual(resolveImageUser('app:extra', PASSWD, GROUP), { uid: 1500, gid: 1700, name: 'app' });
  assert.deepEqual(resolveImageUser('app:0', PASSWD, GROUP), { uid: 1500, gid: 1600, name: 'app' });
  assert.deepEqual(resolveImageUser('4242', PASSWD, GROUP), { uid: 4242, gid: 4242, name: '4242' });
  assert.deepEqual(resolveImageUser('70000', PASSWD, GROUP), { uid: 1000, gid: 1000, name: 'workload' });
  assert.match(withWorkloadUser(PASSWD, GROUP).passwd, /\nworkload:x:1000:1000:workload:\/work:\/bin\/sh\n$/);
  assert.equal(withWorkloadUser('u:x:1000:1000::/:/bin/sh\n', 'g:x:1000:\n').passwd, 'u:x:1000:1000::/:/bin/sh\n');
  assert.match(withWorkloadUser('', '').passwd, /^root:x:0:0:.*\nworkload:x:1000:/);
});

function manifest(digestByte: string, layers: ImageLayer[], user = ''): ImageManifest {
  return { digest: `sha256:${digestByte.repeat(64)}`, layers, config: { env: [], workingDir: '/srv/app', entrypoint: null, cmd: null, user }, architecture: 'amd64', os: 'linux' };
}

test('two images sharing a base: the base is unpacked once and kept until neither uses it; the top layer follows whiteouts', async () => {
  const imagesRoot = join(root, 'images');
  const base = putLayer(imagesRoot, [
    { path: 'etc/passwd', type: '0', data: PASSWD },
    { path: 'etc/group', type: '0', data: GROUP },
    { path: 'etc/ssl/certs/ca-certificates.crt', type: '0', data: 'SYSTEM-CAS\n' },
    { path: 'bin/sh', type: '0', mode: 0o755, data: 'sh' },
  ]);
  // Image B removes the base's passwd (whiteout): its top layer has only root and the workload user.
  const other = putLayer(imagesRoot, [{ path: 'etc/.wh.passwd', type: '0' }, { path: 'srv/', type: '5' }]);
  const store = new ImageStore({ root: imagesRoot, platformCa: 'PLATFORM-CA\n' });
  await store.open();
  const a = await store.prepare(manifest('a', [base], 'app'), 1 << 20);
  const b = await store.prepare(manifest('b', [base, other], 'app'), 1 << 20);
  assert.deepEqual(a.user, { uid: 1500, gid: 1600, name: 'app' });
  assert.deepEqual(b.user, { uid: 1000, gid: 1000, name: 'workload' }, 'B has no passwd naming app');
  const unpacked = store.unpackedDir;
  const layerDirs = readdirSync(unpacked).filter((n) => /^[0-9a-f]{64}$/.test(n));
  assert.equal(layerDirs.length, 2, 'the shared base is stored once');
  const topA = join(unpacked, a.lowerNames[0]!);
  assert.match(readFileSync(join(topA, 'etc/passwd'), 'utf8'), /^root:x:0:0:root:\/root:\/bin\/sh\napp:x:1500:1600/);
  assert.match(readFileSync(join(topA, 'etc/passwd'), 'utf8'), /workload:x:1000:1000:/);
  assert.doesNotMatch(readFileSync(join(unpacked, b.lowerNames[0]!, 'etc/passwd'), 'utf8'), /app:/);
  assert.equal(readFileSync(join(topA, 'etc/ssl/certs/ca-certificates.crt'), 'utf8'), 'SYSTEM-CAS\nPLATFORM-CA\n');
  assert.equal(readFileSync(join(topA, 'etc/cleanroom/ca.pem'), 'utf8'), 'PLATFORM-CA\n');
  assert.equal(readlinkSync(join(topA, 'etc/hosts')), '/run/cleanroom/hosts');
  assert.equal(readlinkSync(join(topA, 'etc/resolv.conf')), '/run/cleanroom/resolv.conf');
  for (const m of ['proc', 'dev', 'sys', 'work', 'tmp', 'run/cleanroom', '.cr']) assert.ok(statSync(join(topA, m)).isDirectory(), m);
  assert.ok(statSync(join(topA, '.cr/init')).isFile());
  assert.ok(statSync(join(topA, 'srv/app')).isDirectory(), 'a missing WorkingDir is made in the top layer');
  assert.equal(existsSync(join(unpacked, b.lowerNames[0]!, 'srv/app')), true);
  assert.equal(statSync(join(topA, 'etc/passwd')).uid, IMAGE_UID_BASE);

  // A restart remembers both.
  const again = new ImageStore({ root: imagesRoot, platformCa: 'PLATFORM-CA\n' });
  await again.open();
  assert.deepEqual(again.digests().sort(), [a.manifest.digest, b.manifest.digest]);
  await again.remove(a.manifest.digest);
  assert.ok(existsSync(join(unpacked, base.diffId.slice(7))), 'B still uses the base');
  assert.equal(existsSync(topA), false);
  await again.remove(b.manifest.digest);
  assert.deepEqual(readdirSync(unpacked), [], 'nothing left once no image uses a layer');
  assert.deepEqual(again.digests(), []);
});

test('an image for another architecture, or over its byte limit, is refused', async () => {
  const imagesRoot = join(root, 'images2');
  const layer = putLayer(imagesRoot, [{ path: 'big', type: '0', data: Buffer.alloc(200_000) }]);
  const store = new ImageStore({ root: imagesRoot, platformCa: '' });
  await store.open();
  await assert.rejects(store.prepare({ ...manifest('c', [layer]), architecture: 'arm' }, 1 << 20), { code: 'image_layer_invalid' });
  await assert.rejects(store.prepare(manifest('d', [layer, layer]), 300_000), { code: 'image_too_large' });
  assert.deepEqual(store.digests(), []);
  assert.deepEqual(readdirSync(store.unpackedDir), [], 'a refused image leaves no layer behind');
});
