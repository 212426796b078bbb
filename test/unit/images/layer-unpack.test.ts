// The layer unpacker against hostile tarballs built here (root: it chowns, makes whiteouts and mounts an overlay).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, lstatSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, readlinkSync, rmSync, statSync, truncateSync, writeFileSync } from 'node:fs';
import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { unpackLayer } from '../../../src/agent/images/layer-unpack.js';
import { ImageError } from '../../../src/agent/images/image-error.js';
import { mountCellRoot, unmount } from '../../../src/agent/images/overlay-files.js';
import { IMAGE_UID_BASE, type ImageLayer } from '../../../src/shared/images/format.js';
import { tarArchive, tarEntry, type TarWriteEntry } from '../../../src/shared/images/tar-writer.js';
import { putBlob, putLayer, sha256 } from '../../support/image-blobs.js';

let root: string;
let n = 0;
before(() => {
  root = mkdtempSync('/var/tmp/cleanroom-test-h2unpack-');
});
after(() => rmSync(root, { recursive: true, force: true }));

/** A fresh store per case: the refusals are checked to leave nothing in it. */
function store(): { blobsDir: string; unpackedDir: string; root: string } {
  const r = join(root, `s${n++}`);
  mkdirSync(join(r, 'unpacked'), { recursive: true });
  return { root: r, blobsDir: join(r, 'blobs/sha256'), unpackedDir: join(r, 'unpacked') };
}

async function refused(entries: TarWriteEntry[] | Buffer, code: string, pattern?: RegExp, mutate?: (s: ReturnType<typeof store>, l: ImageLayer) => ImageLayer): Promise<void> {
  const s = store();
  let layer = putLayer(s.root, entries);
  if (mutate) layer = mutate(s, layer);
  await assert.rejects(unpackLayer({ ...s, layer, maxBytes: 1 << 20 }), (e: unknown) => {
    assert.ok(e instanceof ImageError, `not an ImageError: ${String(e)}`);
    assert.equal(e.code, code, e.message);
    if (pattern) assert.match(e.message, pattern);
    return true;
  });
  assert.deepEqual(readdirSync(s.unpackedDir), [], 'a refused layer leaves nothing behind');
}

test('a well-formed layer: owners offset by IMAGE_UID_BASE, setuid stripped, links inside the layer kept, mtimes kept', async () => {
  const s = store();
  const layer = putLayer(s.root, [
    { path: './', type: '5' },
    { path: 'bin/', type: '5', mode: 0o755 },
    { path: 'bin/tool', type: '0', mode: 0o4755, uid: 0, data: 'tool', mtimeSeconds: 1_600_000_000 },
    { path: 'bin/alias', type: '2', linkname: 'tool' },
    { path: 'bin/abs', type: '2', linkname: '/etc/passwd' },
    { path: 'bin/hard', type: '1', linkname: 'bin/tool' },
    { path: 'home/user/file', type: '0', uid: 1000, gid: 100, mode: 0o640, data: 'x'.repeat(5000) },
    { path: `deep/${'d'.repeat(120)}/${'e'.repeat(120)}/f`, type: '0', data: 'long' },
  ]);
  const r = await unpackLayer({ ...s, layer, maxBytes: 1 << 20 });
  assert.equal(r.fresh, true);
  const dir = join(s.unpackedDir, layer.diffId.slice(7));
  const tool = statSync(join(dir, 'bin/tool'));
  assert.equal(tool.uid, IMAGE_UID_BASE);
  assert.equal(tool.mode & 0o7777, 0o755, 'setuid stripped');
  assert.equal(tool.mtimeMs, 1_600_000_000_000);
  assert.equal(readlinkSync(join(dir, 'bin/alias')), 'tool');
  assert.equal(readlinkSync(join(dir, 'bin/abs')), '/etc/passwd', 'symlinks stored as written');
  assert.equal(lstatSync(join(dir, 'bin/abs')).uid, IMAGE_UID_BASE);
  assert.equal(statSync(join(dir, 'bin/hard')).ino, tool.ino, 'a hard link inside the layer');
  const f = statSync(join(dir, 'home/user/file'));
  assert.deepEqual([f.uid, f.gid, f.mode & 0o777, f.size], [IMAGE_UID_BASE + 1000, IMAGE_UID_BASE + 100, 0o640, 5000]);
  assert.equal(statSync(join(dir, 'home')).uid, IMAGE_UID_BASE, 'implied directories belong to the image root');
  assert.equal(readFileSync(join(dir, `deep/${'d'.repeat(120)}/${'e'.repeat(120)}/f`), 'utf8'), 'long');
  assert.deepEqual(readdirSync(s.unpackedDir).filter((x) => x.startsWith('.tmp')), []);
  // A second prepare of the same layer reuses it.
  assert.equal((await unpackLayer({ ...s, layer, maxBytes: 1 << 20 })).fresh, false);
});

test('an uncompressed layer is read as is', async () => {
  const s = store();
  const layer = putLayer(s.root, [{ path: 'a', type: '0', data: 'plain' }], { gzip: false });
  await unpackLayer({ ...s, layer, maxBytes: 1 << 20 });
  assert.equal(readFileSync(join(s.unpackedDir, layer.diffId.slice(7), 'a'), 'utf8'), 'plain');
});

test('path traversal and absolute names are refused', async () => {
  await refused([{ path: 'ok', type: '0' }, { path: '../escape', type: '0', data: 'x' }], 'image_layer_invalid', /'\.\.'/);
  await refused([{ path: 'a/../../escape', type: '0', data: 'x' }], 'image_layer_invalid', /'\.\.'/);
  await refused([{ path: '/etc/passwd', type: '0', data: 'x' }], 'image_layer_invalid', /absolute/);
  assert.equal(existsSync(join(root, 'escape')), false);
});

test('a symlink followed by a write through it is refused (never followed)', async () => {
  const victim = join(root, 'victim');
  mkdirSync(victim, { recursive: true });
  await refused([{ path: 'link', type: '2', linkname: victim }, { path: 'link/owned', type: '0', data: 'x' }], 'image_layer_invalid', /symlink/);
  await refused([{ path: 'up', type: '2', linkname: '../../../..' }, { path: 'up/tmp/owned', type: '0', data: 'x' }], 'image_layer_invalid', /symlink/);
  await refused([{ path: 'd', type: '2', linkname: '.' }, { path: 'd/d/x', type: '5' }], 'image_layer_invalid', /symlink/);
  assert.deepEqual(readdirSync(victim), []);
});

test('a file replacing a symlink replaces the link itself', async () => {
  const s = store();
  const target = join(root, 'not-touched');
  writeFileSync(target, 'original');
  const layer = putLayer(s.root, [{ path: 'x', type: '2', linkname: target }, { path: 'x', type: '0', data: 'new' }]);
  await unpackLayer({ ...s, layer, maxBytes: 1 << 20 });
  assert.equal(readFileSync(target, 'utf8'), 'original');
  assert.equal(readFileSync(join(s.unpackedDir, layer.diffId.slice(7), 'x'), 'utf8'), 'new');
});

test('hard links to paths outside the layer, or through a symlink, are refused', async () => {
  await refused([{ path: 'h', type: '1', linkname: '../../../etc/passwd' }], 'image_layer_invalid', /'\.\.'/);
  await refused([{ path: 'h', type: '1', linkname: '/etc/passwd' }], 'image_layer_invalid', /absolute/);
  await refused([{ path: 'h', type: '1', linkname: 'etc/passwd' }], 'image_layer_invalid', /not in this layer|not a directory/);
  await refused([{ path: 'l', type: '2', linkname: '/etc' }, { path: 'h', type: '1', linkname: 'l/passwd' }], 'image_layer_invalid', /not a directory/);
});

test('device nodes, FIFOs and ids past 65535 are refused', async () => {
  await refused([{ path: 'dev/null', type: '3', devmajor: 1, devminor: 3 }], 'image_layer_invalid', /device/);
  await refused([{ path: 'dev/sda', type: '4', devmajor: 8, devminor: 0 }], 'image_layer_invalid', /device/);
  await refused([{ path: 'fifo', type: '6' }], 'image_layer_invalid', /FIFO/);
  await refused([{ path: 'f', type: '0', uid: 65536 }], 'image_layer_invalid', /65536/);
  await refused([{ path: 'f', type: '0', gid: 70000 }], 'image_layer_invalid', /65536/);
});

test('a gzip bomb stops at the limit with image_too_large', async () => {
  const bomb = Buffer.concat([tarEntry({ path: 'zeros', type: '0', data: Buffer.alloc(64 << 20) }), Buffer.alloc(1024)]);
  const s = store();
  const layer = putLayer(s.root, bomb);
  assert.ok(layer.size < 1 << 20, `the bomb is small compressed (${layer.size} bytes)`);
  await assert.rejects(unpackLayer({ ...s, layer, maxBytes: 8 << 20 }), (e: ImageError) => e.code === 'image_too_large');
  assert.deepEqual(readdirSync(s.unpackedDir), []);
});

test('digest mismatches, a truncated blob, a missing blob and garbage are refused', async () => {
  const entries: TarWriteEntry[] = [{ path: 'a', type: '0', data: 'a'.repeat(10_000) }];
  // The diffId the config claims is not the tar's.
  await refused(entries, 'image_digest_mismatch', /uncompresses to/, (_s, l) => ({ ...l, diffId: sha256(Buffer.from('other')) }));
  // The blob stored under a digest that is not its own.
  await refused(entries, 'image_digest_mismatch', /has digest/, (s, l) => {
    const other = gzipSync(tarArchive([{ path: 'b', type: '0', data: 'b'.repeat(10_000) }]));
    const fake = sha256(Buffer.from('fake'));
    putBlob(s.root, other, fake);
    return { ...l, digest: fake, size: other.length };
  });
  // Truncated: shorter than the manifest says, and (with a manifest that agrees on the size) a cut gzip stream.
  await refused(entries, 'image_digest_mismatch', /bytes, its manifest says/, (s, l) => {
    truncateSync(join(s.blobsDir, l.digest.slice(7)), l.size - 10);
    return l;
  });
  await refused(entries, 'image_layer_invalid', /gzip|truncated/, (s, l) => {
    truncateSync(join(s.blobsDir, l.digest.slice(7)), l.size - 10);
    return { ...l, size: l.size - 10 };
  });
  await refused(entries, 'image_blob_missing', undefined, (s, l) => {
    rmSync(join(s.blobsDir, l.digest.slice(7)));
    return l;
  });
  await refused(Buffer.alloc(0), 'image_layer_invalid', /gzip/, (s, l) => {
    const junk = Buffer.from('\x1f\x8bnot really gzip at all');
    return { ...l, digest: putBlob(s.root, junk), size: junk.length };
  });
  const notTar = Buffer.alloc(1024, 0x41);
  await refused(notTar, 'image_layer_invalid', /checksum/);
  await refused([], 'image_layer_invalid', /zstd/, (_s, l) => ({ ...l, mediaType: 'application/vnd.oci.image.layer.v1.tar+zstd' }));
});

test('whiteouts and opaque directories across two layers, as an overlay shows them', async () => {
  const s = store();
  const lower = putLayer(s.root, [
    { path: 'a/x', type: '0', data: 'x' },
    { path: 'a/y', type: '0', data: 'y' },
    { path: 'b/z', type: '0', data: 'z' },
    { path: 'b/sub/deep', type: '0', data: 'deep' },
  ]);
  const upper = putLayer(s.root, [
    { path: 'a/.wh.x', type: '0' },
    { path: 'b/.wh..wh..opq', type: '0' },
    { path: 'b/new', type: '0', data: 'new' },
  ]);
  await unpackLayer({ ...s, layer: lower, maxBytes: 1 << 20 });
  await unpackLayer({ ...s, layer: upper, maxBytes: 1 << 20 });
  const up = join(s.unpackedDir, upper.diffId.slice(7));
  const wh = lstatSync(join(up, 'a/x'));
  assert.ok(wh.isCharacterDevice() && wh.rdev === 0, 'a whiteout is a char device 0:0');
  assert.equal(execFileSync('/usr/bin/python3', ['-c', 'import os,sys; sys.stdout.write(os.getxattr(sys.argv[1], "trusted.overlay.opaque").decode())', join(up, 'b')]).toString(), 'y');
  const mnt = join(s.root, 'cell');
  mkdirSync(join(mnt, 'layers'), { recursive: true });
  mkdirSync(join(mnt, 'rootfs'));
  mountCellRoot(s.unpackedDir, join(mnt, 'layers'), join(mnt, 'rootfs'), [upper.diffId.slice(7), lower.diffId.slice(7)], IMAGE_UID_BASE, 1 << 24);
  try {
    const r = join(mnt, 'rootfs');
    assert.deepEqual(readdirSync(join(r, 'a')).sort(), ['y']);
    assert.deepEqual(readdirSync(join(r, 'b')).sort(), ['new']);
    assert.equal(statSync(join(r, 'a/y')).uid, 1 << 24, 'idmapped: IMAGE_UID_BASE on disk is the cell range base');
  } finally {
    unmount(join(mnt, 'rootfs'));
    unmount(join(mnt, 'layers'));
  }
});
