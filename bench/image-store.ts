// bench/image-store.ts measures the agent's image store: unpacking a layer (MiB/s, beside GNU tar extracting the same blob
// in the same run) and a cell's image root (idmapped layers + read-only overlay: mount and unmount, median and p95).
// Usage: node dist/bench/image-store.js [iterations=200] [source dir=/usr/lib/python3.11]   (as root; writes bench/results/image-store.json)
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { join } from 'node:path';
import { gunzipSync } from 'node:zlib';
import { describeMachine } from './machine.js';
import { round, summarize } from './stats.js';
import { REPO_ROOT } from '../test/support/cluster.js';
import { ImageStore } from '../src/agent/images/image-store.js';
import { mountImageRoot, unmountImageRoot } from '../src/agent/images/cell-root.js';

const iterations = Number(process.argv[2] ?? 200);
const source = process.argv[3] ?? '/usr/lib/python3.11';
const root = mkdtempSync('/var/tmp/cleanroom-bench-images-');
const sha = (b: Buffer) => `sha256:${createHash('sha256').update(b).digest('hex')}`;
try {
  // A layer of real files (GNU tar, numeric owners, gzip), stored in a blob store as the control plane would.
  const images = join(root, 'images');
  mkdirSync(join(images, 'blobs/sha256'), { recursive: true });
  const tgz = join(root, 'layer.tgz');
  execFileSync('tar', ['-czf', tgz, '--numeric-owner', '--owner=0', '--group=0', '-C', source, '.']);
  const blob = readFileSync(tgz);
  const tar = gunzipSync(blob);
  writeFileSync(join(images, 'blobs/sha256', sha(blob).slice(7)), blob);
  const layer = { digest: sha(blob), diffId: sha(tar), mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', size: blob.length };
  const manifest = { digest: `sha256:${'be'.repeat(32)}`, layers: [layer], config: { env: [], workingDir: '', entrypoint: null, cmd: null, user: '' }, architecture: 'amd64', os: 'linux' };

  const store = new ImageStore({ root: images, platformCa: 'CA\n' });
  await store.open();
  const t0 = performance.now();
  const image = await store.prepare(manifest, 2 ** 34);
  const unpackMs = performance.now() - t0;
  // Baseline: GNU tar extracting the same blob (no digest checks, no ownership offsets, no refusals).
  const out = join(root, 'tar-out');
  mkdirSync(out);
  const t1 = performance.now();
  execFileSync('tar', ['-xzf', tgz, '-C', out, '--numeric-owner']);
  const tarMs = performance.now() - t1;
  const mib = tar.length / 2 ** 20;

  const mountMs: number[] = [];
  const unmountMs: number[] = [];
  for (let i = 0; i < iterations + 5; i++) {
    const cellDir = join(root, `cell-${i}`);
    mkdirSync(cellDir);
    const a = performance.now();
    const r = mountImageRoot(cellDir, store.unpackedDir, image, (1 << 24) + (i % 64) * 65536, 'runc');
    const b = performance.now();
    unmountImageRoot(r);
    const c = performance.now();
    if (i >= 5) mountMs.push(b - a), unmountMs.push(c - b);
  }
  const result = {
    date: new Date().toISOString(),
    machine: describeMachine(),
    layer: { source, tar_mib: round(mib), gzip_mib: round(blob.length / 2 ** 20) },
    unpack_ms: round(unpackMs),
    unpack_mib_s: round(mib / (unpackMs / 1000)),
    gnu_tar_extract_ms: round(tarMs),
    gnu_tar_mib_s: round(mib / (tarMs / 1000)),
    ratio_to_gnu_tar: round(unpackMs / tarMs),
    cell_root_mount_ms: summarize(mountMs),
    cell_root_unmount_ms: summarize(unmountMs),
  };
  console.log(JSON.stringify(result, null, 2));
  writeFileSync(join(REPO_ROOT, 'bench/results/image-store.json'), JSON.stringify(result, null, 2) + '\n');
} finally {
  rmSync(root, { recursive: true, force: true });
}
