/**
 * A cell's root on an image: the store's unpacked layers idmapped into the cell's uid range at `<cellDir>/layers`
 * (read-only, nosuid, nodev), and a read-only overlay of the image's layers under Cleanroom's top layer at
 * `<cellDir>/rootfs`, which becomes the runtime's root.path. One unpacked copy serves every cell; nothing is chowned.
 */
import { mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { IMAGE_UID_BASE } from '../../shared/images/format.js';
import { mountCellRoot, unmount } from './overlay-files.js';
import type { PreparedImage } from './image-store.js';
import type { Runtime } from '../../shared/wire.js';

/** CellRoot names the two mounts of a cell on an image. */
export interface CellRoot {
  layers: string;
  rootfs: string;
}

/**
 * mountImageRoot mounts `image` as the root of the cell in `cellDir` whose uid range starts at `hostUidBase`. For runsc
 * the overlay itself is read-only without nosuid/nodev: its gofer remounts the root read-only from inside a user
 * namespace and fails on flags it does not repeat. That costs nothing there: no layer holds a setuid/setgid bit or a
 * device node (the unpacker strips and refuses them), gVisor's own kernel decides what a file may do, and the
 * idmapped layers beneath stay nosuid,nodev.
 */
export function mountImageRoot(cellDir: string, unpackedDir: string, image: PreparedImage, hostUidBase: number, runtime: Runtime): CellRoot {
  const root = { layers: join(cellDir, 'layers'), rootfs: join(cellDir, 'rootfs') };
  mkdirSync(root.layers, { mode: 0o700 });
  mkdirSync(root.rootfs, { mode: 0o711 });
  mountCellRoot(unpackedDir, root.layers, root.rootfs, image.lowerNames, IMAGE_UID_BASE, hostUidBase, runtime !== 'runsc');
  return root;
}

/** unmountImageRoot detaches a cell's overlay, then its idmapped layers. Precondition: its container is gone. */
export function unmountImageRoot(root: CellRoot): void {
  unmount(root.rootfs);
  unmount(root.layers);
}

/** mountsUnder lists the mount points at or below `dir` in this process's mount namespace, deepest first. */
export function mountsUnder(dir: string): string[] {
  const prefix = dir.endsWith('/') ? dir : `${dir}/`;
  const out: string[] = [];
  for (const line of readFileSync('/proc/self/mountinfo', 'utf8').split('\n')) {
    const raw = line.split(' ')[4];
    if (!raw) continue;
    const mp = raw.replace(/\\([0-7]{3})/g, (_m, o: string) => String.fromCharCode(parseInt(o, 8)));
    if (mp === dir || mp.startsWith(prefix)) out.push(mp);
  }
  return [...new Set(out)].sort((a, b) => b.length - a.length);
}

/** detachMountsUnder unmounts everything mounted below `dir` (a crashed agent's cell roots); returns what it detached. */
export function detachMountsUnder(dir: string): string[] {
  const done: string[] = [];
  // A mount stacked on another needs one unmount per layer: repeat until nothing is left (bounded).
  for (let round = 0; round < 8; round++) {
    const left = mountsUnder(dir).filter((m) => m !== dir);
    if (left.length === 0) break;
    for (const m of left) if (unmount(m)) done.push(m);
  }
  return done;
}
