/** The host calls that make overlayfs metadata and cells' image roots (build/mounts.node, native/mounts). */
import { constants } from 'node:fs';
import { loadNativeAddon } from '../native-addon.js';

interface Addon {
  cellRoot(layersSrc: string, layersDst: string, rootDst: string, lowerNames: readonly string[], fromUid: number, toUid: number, lockFlags: boolean): void;
  unmount(path: string): boolean;
  whiteout(path: string): void;
  setOpaque(path: string): void;
  isOpaque(path: string): boolean;
}

const addon = (): Addon => loadNativeAddon<Addon>('mounts');

/** overlayFiles makes overlayfs' on-disk markers and opens files for unpacking without following links. */
export const overlayFiles = {
  /** createFlags open a new file for writing, refusing an existing name or a symlink in its place. */
  createFlags: constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW,
  /** whiteout makes an overlay whiteout (character device 0:0) at `path`. */
  whiteout(path: string): void {
    addon().whiteout(path);
  },
  /** setOpaque marks a directory opaque (trusted.overlay.opaque=y): lower layers' entries under it are hidden. */
  async setOpaque(path: string): Promise<void> {
    addon().setOpaque(path);
  },
  /** isOpaque tells whether a directory (not followed if a symlink) is marked opaque. */
  isOpaque(path: string): boolean {
    return addon().isOpaque(path);
  },
};

/**
 * mountCellRoot attaches `layersSrc` (the store's unpacked layers) at `layersDst`, idmapped so that on-disk uid
 * `fromUid + n` appears as `toUid + n`, read-only, nosuid and nodev, and a read-only overlay of `lowerNames` (top
 * first, directories of layersSrc) at `rootDst`, also nosuid and nodev unless `nosuidRoot` is false (runsc: see
 * native/mounts). On failure nothing stays mounted.
 */
export function mountCellRoot(layersSrc: string, layersDst: string, rootDst: string, lowerNames: readonly string[], fromUid: number, toUid: number, nosuidRoot = true): void {
  addon().cellRoot(layersSrc, layersDst, rootDst, lowerNames, fromUid, toUid, nosuidRoot);
}

/** unmount detaches the mount at `path` (lazily, never following a symlink); false if nothing was mounted there. */
export function unmount(path: string): boolean {
  return addon().unmount(path);
}
