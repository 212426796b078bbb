/**
 * Cleanroom's top layer of an image (`unpacked/top-<manifest-hex>`), laid over the image's own layers in every cell
 * that runs it: the image's passwd and group plus the workload user, /etc/hosts and /etc/resolv.conf pointing into the
 * cell's private tmpfs, the platform CA (alone and appended to the image's trust bundle), and every mount point the
 * cell's spec needs, so that the runtime never has to create anything in a read-only root.
 */
import { chmod, chown, lchown, mkdir, rename, rm, symlink, writeFile } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { digestHex, IMAGE_UID_BASE, type ImageManifest } from '../../shared/images/format.js';
import { CELL_CA_FILE, CELL_FILES_DIR, CELL_INIT_PATH, CELL_MOUNT_POINTS } from '../runtime/spec.js';
import { lookupImagePath, readImageFile } from './image-files.js';
import { resolveImageUser, withWorkloadUser, type ImageUser } from './image-user.js';
import { overlayFiles } from './overlay-files.js';

/** TRUST_BUNDLE is the Debian/Alpine path of the system CA bundle; the platform CA is appended to an image's own. */
const TRUST_BUNDLE = 'etc/ssl/certs/ca-certificates.crt';

/** topLayerName is the directory name of an image's top layer under `unpacked/`. */
export function topLayerName(manifest: ImageManifest): string {
  return `top-${digestHex(manifest.digest)}`;
}

/** TopLayerInput is the image, where its layers are, and the platform CA. */
export interface TopLayerInput {
  unpackedDir: string;
  manifest: ImageManifest;
  platformCa: string;
}

/** buildTopLayer writes the image's top layer (atomically: a temporary directory renamed) and returns its workload user. */
export async function buildTopLayer(i: TopLayerInput): Promise<ImageUser> {
  const layerDirs = [...i.manifest.layers].reverse().map((l) => join(i.unpackedDir, digestHex(l.diffId)));
  const imageFile = async (rel: string): Promise<string | null> => {
    const found = await lookupImagePath(layerDirs, rel, overlayFiles.isOpaque);
    if (found.kind !== 'file') return null;
    return (await readImageFile(found.layerDir, rel))?.toString('utf8') ?? null;
  };
  const passwd = (await imageFile('etc/passwd')) ?? '';
  const group = (await imageFile('etc/group')) ?? '';
  const user = resolveImageUser(i.manifest.config.user, passwd, group);
  const accounts = withWorkloadUser(passwd, group);

  const final = join(i.unpackedDir, topLayerName(i.manifest));
  const tmp = join(i.unpackedDir, `.tmp-top-${randomBytes(6).toString('hex')}`);
  await mkdir(tmp, { mode: 0o700 });
  try {
    const dirs = new Set<string>();
    const dir = async (rel: string) => {
      const parts = rel.split('/');
      for (let k = 1; k <= parts.length; k++) {
        const p = parts.slice(0, k).join('/');
        if (dirs.has(p)) continue;
        dirs.add(p);
        await mkdir(join(tmp, p), { mode: 0o755 });
        await chown(join(tmp, p), IMAGE_UID_BASE, IMAGE_UID_BASE);
        await chmod(join(tmp, p), 0o755);
      }
    };
    const file = async (rel: string, content: string, mode = 0o644) => {
      await dir(rel.slice(0, rel.lastIndexOf('/')));
      await writeFile(join(tmp, rel), content, { mode });
      await chown(join(tmp, rel), IMAGE_UID_BASE, IMAGE_UID_BASE);
      await chmod(join(tmp, rel), mode);
    };
    const link = async (rel: string, target: string) => {
      await dir(rel.slice(0, rel.lastIndexOf('/')));
      await symlink(target, join(tmp, rel));
      await lchown(join(tmp, rel), IMAGE_UID_BASE, IMAGE_UID_BASE);
    };
    for (const m of CELL_MOUNT_POINTS) await dir(m.slice(1));
    await file(CELL_INIT_PATH.slice(1), '', 0o755); // the bind mount's target: cell init comes from the agent's copy
    await file('etc/passwd', accounts.passwd);
    await file('etc/group', accounts.group);
    // Per-cell facts (the gateway's address for platform names, the resolver) are written by cell init at assignment.
    await link('etc/hosts', `${CELL_FILES_DIR}/hosts`);
    await link('etc/resolv.conf', `${CELL_FILES_DIR}/resolv.conf`);
    await file(CELL_CA_FILE.slice(1), i.platformCa);
    const bundle = await imageFile(TRUST_BUNDLE);
    if (bundle !== null) await file(TRUST_BUNDLE, `${bundle}${bundle.endsWith('\n') || bundle === '' ? '' : '\n'}${i.platformCa}`);
    // The image's working directory, when it names one the image lacks (runtimes create it; this root is read-only).
    const wd = i.manifest.config.workingDir.split('/').filter((p) => p !== '' && p !== '.');
    if (wd.length > 0 && !wd.includes('..') && (await lookupImagePath(layerDirs, wd.join('/'), overlayFiles.isOpaque)).kind === 'absent') await dir(wd.join('/'));
    await chown(tmp, IMAGE_UID_BASE, IMAGE_UID_BASE);
    await chmod(tmp, 0o755);
    await rm(final, { recursive: true, force: true });
    await rename(tmp, final);
  } catch (e) {
    await rm(tmp, { recursive: true, force: true });
    throw e;
  }
  return user;
}
