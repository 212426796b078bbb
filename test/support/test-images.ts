/**
 * Test images built offline from what is on the machine, as OCI layouts, cached under /var/tmp/cleanroom-test-images
 * (built once, then reused by every run): a static busybox; a second image sharing busybox's layer plus one of its own
 * (Entrypoint/Cmd/Env/WorkingDir set); a larger python3 image (~100 MB unpacked, from the host's Debian packages); a
 * busybox whose config says arm64. Archives and registry pushes go through skopeo.
 */
import { execFile, execFileSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { createReadStream, createWriteStream, existsSync, mkdirSync, readFileSync, renameSync, rmSync, statSync, writeFileSync, copyFileSync, symlinkSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { promisify } from 'node:util';
import { createGzip } from 'node:zlib';

const run = promisify(execFile);

/** CACHE_DIR holds built layouts; a version in each name lets a change of recipe rebuild them. */
export const CACHE_DIR = '/var/tmp/cleanroom-test-images';
const VERSION = 'h1v1';

/** Blob is a file with its digest and size. */
interface Blob {
  path: string;
  digest: string;
  size: number;
}

/** Layer is a gzip-compressed layer blob and the digest of its uncompressed tar. */
interface Layer extends Blob {
  diffId: string;
}

/** TestImage is a built OCI layout (tag `image`) and what a test needs to know of it. */
export interface TestImage {
  layout: string;
  digest: string;
  layers: Array<{ digest: string; size: number }>;
  /** Bytes of every blob of the image: manifest, config, layers. */
  bytes: number;
}

/** TestImages are the cached images. */
export interface TestImages {
  busybox: TestImage;
  /** Shares busybox's layer, plus one layer with /app/hello.txt; Entrypoint cat, Cmd /app/hello.txt, WorkingDir /app, Env GREETING=hi. */
  app: TestImage;
  python: TestImage;
  /** busybox's layer under a config that says linux/arm64. */
  arm64: TestImage;
}

let cached: Promise<TestImages> | null = null;

/** testImages builds (once per machine) and returns the cached test images. */
export function testImages(): Promise<TestImages> {
  cached ??= build();
  return cached;
}

async function build(): Promise<TestImages> {
  mkdirSync(CACHE_DIR, { recursive: true });
  const layers = join(CACHE_DIR, `layers-${VERSION}`);
  const busyboxLayer = await cachedLayer(join(layers, 'busybox'), busyboxRoot);
  const appLayer = await cachedLayer(join(layers, 'app'), (root) => {
    mkdirSync(join(root, 'app'), { recursive: true });
    writeFileSync(join(root, 'app', 'hello.txt'), 'hello from the app layer\n');
  });
  const pythonLayer = await cachedLayer(join(layers, 'python'), pythonRoot);
  const base = { Env: ['PATH=/usr/local/bin:/usr/bin:/bin'], Cmd: ['/bin/sh'] };
  return {
    busybox: await cachedLayout('busybox', [busyboxLayer], base),
    app: await cachedLayout('app', [busyboxLayer, appLayer], { Env: ['PATH=/bin', 'GREETING=hi'], Entrypoint: ['/bin/cat'], Cmd: ['/app/hello.txt'], WorkingDir: '/app' }),
    python: await cachedLayout('python', [busyboxLayer, pythonLayer], { Env: ['PATH=/usr/bin:/bin'], Cmd: ['/usr/bin/python3', '-c', 'print("py")'] }),
    arm64: await cachedLayout('arm64', [busyboxLayer], base, 'arm64'),
  };
}

/** uniqueImage builds (uncached) an image with busybox's layer and a layer of random bytes of its own, in `dir`. */
export async function uniqueImage(dir: string, randomKiB = 256): Promise<TestImage> {
  const imgs = await testImages();
  const busyboxLayer = layerOf(imgs.busybox, 0);
  const own = await makeLayer(join(dir, 'own-layer'), (root) => writeFileSync(join(root, 'noise.bin'), randomBytes(randomKiB * 1024)));
  return writeLayout(join(dir, 'layout'), [busyboxLayer, own], { Env: ['PATH=/bin'], Cmd: ['/bin/sh'] }, 'amd64');
}

/** toArchive writes an image as `docker save` (docker-archive) or an OCI archive would, with skopeo. */
export async function toArchive(image: TestImage, format: 'docker-archive' | 'oci-archive', file: string, ref = 'test/image:latest'): Promise<void> {
  rmSync(file, { force: true });
  await run('skopeo', ['--policy', policyFile(), 'copy', '--quiet', `oci:${image.layout}:image`, format === 'docker-archive' ? `docker-archive:${file}:${ref}` : `oci-archive:${file}:${ref.split(':')[1] ?? 'latest'}`], { timeout: 300_000 });
}

/** pushImage copies an image into a registry with skopeo (TLS checked against `certDir`, basic auth). */
export async function pushImage(image: TestImage, target: string, auth: { username: string; password: string; certDir: string }): Promise<void> {
  await run('skopeo', ['--policy', policyFile(), 'copy', '--quiet', '--dest-creds', `${auth.username}:${auth.password}`, '--dest-cert-dir', auth.certDir, `oci:${image.layout}:image`, `docker://${target}`], { timeout: 300_000 });
}

function policyFile(): string {
  const p = join(CACHE_DIR, 'policy.json');
  if (!existsSync(p)) writeFileSync(p, JSON.stringify({ default: [{ type: 'insecureAcceptAnything' }] }));
  return p;
}

function layerOf(image: TestImage, i: number): Layer {
  const manifest = JSON.parse(readFileSync(blobPath(image.layout, image.digest), 'utf8')) as { layers: Array<{ digest: string; size: number }>; config: { digest: string } };
  const config = JSON.parse(readFileSync(blobPath(image.layout, manifest.config.digest), 'utf8')) as { rootfs: { diff_ids: string[] } };
  const l = manifest.layers[i]!;
  return { path: blobPath(image.layout, l.digest), digest: l.digest, size: l.size, diffId: config.rootfs.diff_ids[i]! };
}

function blobPath(layout: string, digest: string): string {
  return join(layout, 'blobs', 'sha256', digest.slice('sha256:'.length));
}

function busyboxRoot(root: string): void {
  for (const d of ['bin', 'etc', 'tmp', 'root', 'work']) mkdirSync(join(root, d), { recursive: true });
  copyFileSync('/bin/busybox', join(root, 'bin', 'busybox'));
  // `busybox --list` prints one applet a line; the static binary needs nothing else.
  const applets = execFileSync('/bin/busybox', ['--list']).toString().split('\n').filter((a) => /^[a-z0-9_.[-]+$/.test(a));
  for (const a of applets) if (a !== 'busybox') symlinkSync('busybox', join(root, 'bin', a));
}

/** pythonRoot copies the host's python3.11, its standard library, dist-packages and the shared libraries they load. */
async function pythonRoot(root: string): Promise<void> {
  const paths = ['/usr/bin/python3.11', '/usr/lib/python3.11', '/usr/lib/python3/dist-packages'];
  const libs = new Set<string>();
  const { stdout } = await run('sh', ['-c', 'ldd /usr/bin/python3.11 /usr/lib/python3.11/lib-dynload/*.so 2>/dev/null | grep -o "/[^ ]*\\.so[^ ]*" | sort -u']);
  for (const l of stdout.split('\n').filter(Boolean)) libs.add(l);
  await run('sh', ['-c', `mkdir -p "${root}" && tar -cf - ${[...paths, ...libs].map((p) => `"${p}"`).join(' ')} 2>/dev/null | tar -C "${root}" -xf -`], { maxBuffer: 16 * 1024 * 1024 });
  symlinkSync('python3.11', join(root, 'usr', 'bin', 'python3'));
}

/** cachedLayer builds a layer from a root-filling function once; later calls read it back. */
async function cachedLayer(dir: string, fill: (root: string) => void | Promise<void>): Promise<Layer> {
  const meta = join(dir, 'layer.json');
  if (existsSync(meta)) return JSON.parse(readFileSync(meta, 'utf8')) as Layer;
  const tmp = `${dir}.tmp-${process.pid}`;
  rmSync(tmp, { recursive: true, force: true });
  const layer = await makeLayer(tmp, fill);
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(dirname(dir), { recursive: true });
  renameSync(tmp, dir);
  const moved = { ...layer, path: join(dir, 'layer.tar.gz') };
  writeFileSync(meta, JSON.stringify(moved));
  return moved;
}

/** makeLayer fills a root, tars it (owner root, fixed times, sorted) and gzips it; returns the blob and its diffId. */
async function makeLayer(dir: string, fill: (root: string) => void | Promise<void>): Promise<Layer> {
  const root = join(dir, 'root');
  mkdirSync(root, { recursive: true });
  await fill(root);
  const tar = join(dir, 'layer.tar');
  await run('tar', ['--sort=name', '--mtime=@0', '--owner=0', '--group=0', '--numeric-owner', '--format=posix', '--pax-option=delete=atime,delete=ctime,exthdr.name=%d/PaxHeaders/%f', '-C', root, '-cf', tar, '.'], { maxBuffer: 16 * 1024 * 1024 });
  const diffId = await digestOf(tar);
  const gz = join(dir, 'layer.tar.gz');
  await pipeline(createReadStream(tar), createGzip({ level: 6 }), createWriteStream(gz));
  rmSync(tar);
  rmSync(root, { recursive: true, force: true });
  return { path: gz, digest: await digestOf(gz), size: statSync(gz).size, diffId };
}

async function cachedLayout(name: string, layers: Layer[], config: Record<string, unknown>, architecture = 'amd64'): Promise<TestImage> {
  const dir = join(CACHE_DIR, `${name}-${VERSION}`);
  const meta = join(dir, 'image.json');
  if (existsSync(meta)) return JSON.parse(readFileSync(meta, 'utf8')) as TestImage;
  const tmp = `${dir}.tmp-${process.pid}`;
  rmSync(tmp, { recursive: true, force: true });
  const image = await writeLayout(tmp, layers, config, architecture);
  rmSync(dir, { recursive: true, force: true });
  renameSync(tmp, dir);
  const moved = { ...image, layout: dir };
  writeFileSync(meta, JSON.stringify(moved));
  return moved;
}

/** writeLayout writes an OCI layout (tag `image`) of the layers under a config. */
async function writeLayout(dir: string, layers: Layer[], config: Record<string, unknown>, architecture: string): Promise<TestImage> {
  const blobs = join(dir, 'blobs', 'sha256');
  mkdirSync(blobs, { recursive: true });
  const put = (data: Buffer): Blob => {
    const digest = `sha256:${createHash('sha256').update(data).digest('hex')}`;
    writeFileSync(join(blobs, digest.slice(7)), data);
    return { path: join(blobs, digest.slice(7)), digest, size: data.length };
  };
  for (const l of layers) copyFileSync(l.path, join(blobs, l.digest.slice(7)));
  const cfg = put(Buffer.from(JSON.stringify({ architecture, os: 'linux', config, rootfs: { type: 'layers', diff_ids: layers.map((l) => l.diffId) }, history: layers.map(() => ({ created_by: 'cleanroom test-images' })) })));
  const manifest = put(
    Buffer.from(
      JSON.stringify({
        schemaVersion: 2,
        mediaType: 'application/vnd.oci.image.manifest.v1+json',
        config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: cfg.digest, size: cfg.size },
        layers: layers.map((l) => ({ mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', digest: l.digest, size: l.size })),
      }),
    ),
  );
  writeFileSync(join(dir, 'oci-layout'), JSON.stringify({ imageLayoutVersion: '1.0.0' }));
  writeFileSync(join(dir, 'index.json'), JSON.stringify({ schemaVersion: 2, manifests: [{ mediaType: 'application/vnd.oci.image.manifest.v1+json', digest: manifest.digest, size: manifest.size, annotations: { 'org.opencontainers.image.ref.name': 'image' } }] }));
  return { layout: dir, digest: manifest.digest, layers: layers.map((l) => ({ digest: l.digest, size: l.size })), bytes: manifest.size + cfg.size + layers.reduce((n, l) => n + l.size, 0) };
}

async function digestOf(path: string): Promise<string> {
  const h = createHash('sha256');
  for await (const c of createReadStream(path)) h.update(c as Buffer);
  return `sha256:${h.digest('hex')}`;
}
