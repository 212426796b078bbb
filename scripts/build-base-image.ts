/**
 * build-base-image: writes Cleanroom's default image, a small OCI layout (one layer), from packages on this machine:
 * Debian's static busybox with its applet links, a minimal /etc, and the system CA bundle. No registry, no network.
 * Reproducible: entries sorted, every mtime SOURCE_DATE_EPOCH (default 0), gzip without a timestamp; the same
 * busybox and CA bundle give the same digest. Usage: node dist/scripts/build-base-image.js [OUT_DIR]
 * (default build/images/base); prints the manifest digest.
 */
import { existsSync, mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { join, resolve } from 'node:path';
import { gzipSync } from 'node:zlib';
import { tarArchive, type TarWriteEntry } from '../src/shared/images/tar-writer.js';

const BUSYBOX = '/bin/busybox';
const CA_BUNDLE = '/etc/ssl/certs/ca-certificates.crt';
const mtimeSeconds = Number(process.env.SOURCE_DATE_EPOCH ?? 0);

/** isStatic tells whether an ELF executable has no program interpreter (PT_INTERP): it runs in a root without libraries. */
function isStatic(elf: Buffer): boolean {
  if (elf.readUInt32BE(0) !== 0x7f454c46 || elf[4] !== 2) return false; // ELF64 only
  const phoff = Number(elf.readBigUInt64LE(0x20));
  const phentsize = elf.readUInt16LE(0x36);
  const phnum = elf.readUInt16LE(0x38);
  for (let i = 0; i < phnum; i++) if (elf.readUInt32LE(phoff + i * phentsize) === 3) return false;
  return true;
}

function sha256(b: Buffer | string): string {
  return `sha256:${createHash('sha256').update(b).digest('hex')}`;
}

function main(): void {
  const out = resolve(process.argv[2] ?? 'build/images/base');
  if (!existsSync(BUSYBOX)) throw new Error(`${BUSYBOX} is missing: apt-get install busybox-static`);
  const busybox = readFileSync(BUSYBOX);
  if (!isStatic(busybox)) throw new Error(`${BUSYBOX} is dynamically linked (Debian's busybox package); the image needs busybox-static`);

  const dirs: Array<[string, number]> = [['bin', 0o755], ['etc', 0o755], ['etc/ssl', 0o755], ['etc/ssl/certs', 0o755], ['home', 0o755], ['root', 0o700], ['sbin', 0o755], ['tmp', 0o1777], ['usr', 0o755], ['usr/bin', 0o755], ['usr/sbin', 0o755], ['var', 0o755]];
  const entries: TarWriteEntry[] = dirs.map(([path, mode]) => ({ path: `${path}/`, type: '5', mode, mtimeSeconds }));
  entries.push({ path: 'bin/busybox', type: '0', mode: 0o755, data: busybox, mtimeSeconds });
  // Applets at their usual places (`busybox --list-full`: bin/sh, usr/bin/awk, sbin/…), as links to the one binary.
  const applets = execFileSync(BUSYBOX, ['--list-full'], { encoding: 'utf8' }).split('\n').filter((p) => p && p !== 'bin/busybox' && /^(bin|sbin|usr\/bin|usr\/sbin)\/[A-Za-z0-9_.[-]+$/.test(p));
  for (const p of [...new Set(applets)].sort()) entries.push({ path: p, type: '2', linkname: '/bin/busybox', mode: 0o777, mtimeSeconds });
  entries.push({ path: 'etc/passwd', type: '0', mode: 0o644, mtimeSeconds, data: 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' });
  entries.push({ path: 'etc/group', type: '0', mode: 0o644, mtimeSeconds, data: 'root:x:0:\nnogroup:x:65534:\n' });
  entries.push({ path: 'etc/nsswitch.conf', type: '0', mode: 0o644, mtimeSeconds, data: 'passwd: files\ngroup: files\nhosts: files dns\n' });
  if (existsSync(CA_BUNDLE)) entries.push({ path: 'etc/ssl/certs/ca-certificates.crt', type: '0', mode: 0o644, mtimeSeconds, data: readFileSync(CA_BUNDLE) });
  entries.sort((a, b) => (a.path < b.path ? -1 : 1));

  const tar = tarArchive(entries);
  const layer = gzipSync(tar, { level: 9 });
  const config = JSON.stringify({
    created: new Date(mtimeSeconds * 1000).toISOString(),
    architecture: 'amd64',
    os: 'linux',
    config: { Env: ['PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'], Cmd: ['sh'], WorkingDir: '/work' },
    rootfs: { type: 'layers', diff_ids: [sha256(tar)] },
    history: [{ created: new Date(mtimeSeconds * 1000).toISOString(), created_by: 'cleanroom build-base-image (busybox-static, ca-certificates)' }],
  });
  const manifest = JSON.stringify({
    schemaVersion: 2,
    mediaType: 'application/vnd.oci.image.manifest.v1+json',
    config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: sha256(config), size: Buffer.byteLength(config) },
    layers: [{ mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', digest: sha256(layer), size: layer.length }],
  });
  const index = JSON.stringify({
    schemaVersion: 2,
    mediaType: 'application/vnd.oci.image.index.v1+json',
    manifests: [{ mediaType: 'application/vnd.oci.image.manifest.v1+json', digest: sha256(manifest), size: Buffer.byteLength(manifest), annotations: { 'org.opencontainers.image.ref.name': 'latest' }, platform: { architecture: 'amd64', os: 'linux' } }],
  });

  // Written beside the target and renamed over it: a failed build leaves the previous layout.
  const tmp = `${out}.tmp-${process.pid}`;
  rmSync(tmp, { recursive: true, force: true });
  mkdirSync(join(tmp, 'blobs/sha256'), { recursive: true });
  for (const blob of [layer, config, manifest]) writeFileSync(join(tmp, 'blobs/sha256', sha256(blob).slice(7)), blob);
  writeFileSync(join(tmp, 'oci-layout'), JSON.stringify({ imageLayoutVersion: '1.0.0' }));
  writeFileSync(join(tmp, 'index.json'), index);
  rmSync(out, { recursive: true, force: true });
  mkdirSync(resolve(out, '..'), { recursive: true });
  renameSync(tmp, out);
  process.stdout.write(`${sha256(manifest)}\n`);
}

main();
