/** Checks that this host can give cells an image root: idmapped mounts of the store's filesystem and an overlay on them. */
import { chownSync, mkdirSync, mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { IMAGE_UID_BASE } from '../../shared/images/format.js';
import { mountCellRoot, unmount } from './overlay-files.js';

/** ImageRootSupport says whether image roots work here, and what was seen. */
export interface ImageRootSupport {
  ok: boolean;
  detail: string;
}

/**
 * checkImageRootSupport mounts a two-layer image root in a scratch directory of `parent` (the image store's filesystem
 * matters: idmapped mounts need filesystem support), checks the owner shows shifted, and removes it all.
 */
export function checkImageRootSupport(parent = '/var/tmp', prefix = 'cleanroom-doctor-images-'): ImageRootSupport {
  const dir = mkdtempSync(join(parent, prefix));
  const root = { layers: join(dir, 'cell/layers'), rootfs: join(dir, 'cell/rootfs') };
  try {
    for (const d of ['u/top', 'u/base', 'cell/layers', 'cell/rootfs']) mkdirSync(join(dir, d), { recursive: true });
    writeFileSync(join(dir, 'u/base/probe'), 'x');
    for (const p of ['u/top', 'u/base', 'u/base/probe']) chownSync(join(dir, p), IMAGE_UID_BASE, IMAGE_UID_BASE);
    const to = 1 << 24;
    const t0 = performance.now();
    mountCellRoot(join(dir, 'u'), root.layers, root.rootfs, ['top', 'base'], IMAGE_UID_BASE, to);
    const ms = performance.now() - t0;
    const uid = statSync(join(root.rootfs, 'probe')).uid;
    if (uid !== to) return { ok: false, detail: `the overlay shows uid ${uid}, not ${to}: idmapped mounts are not applied` };
    return { ok: true, detail: `idmapped layers + read-only overlay mounted in ${ms.toFixed(2)} ms` };
  } catch (e) {
    return { ok: false, detail: `${(e as Error).message} (image roots need Linux ≥ 5.19: idmapped mounts of the store's filesystem under overlayfs)` };
  } finally {
    try {
      unmount(root.rootfs);
      unmount(root.layers);
      rmSync(dir, { recursive: true, force: true });
    } catch {
      // a mount that would not go: leave the scratch directory rather than remove through it
    }
  }
}
