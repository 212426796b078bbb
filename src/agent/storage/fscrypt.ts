// Typed wrapper over build/fscrypt.node: the in-process fscrypt, loop, mount and discard calls.
// Short calls are synchronous (a few syscalls, microseconds); key removal, unmount and discard run on the libuv thread
// pool because their cost grows with the volume's contents, loop attach and mount because they wait on the block layer
// (milliseconds each, during which the agent's thread would serve nothing else).
// Failures carry `code` set to the errno name (EBUSY, ENOKEY, ...).
import { loadNativeAddon } from '../native-addon.js';

interface RawPolicy {
  version: number;
  contentsMode: number;
  filenamesMode: number;
  flags: number;
  identifier: Buffer;
}

interface RawKeyStatus {
  status: number;
  statusFlags: number;
  userCount: number;
}

interface Addon {
  addKey(path: string, key: Buffer): Buffer;
  setPolicyV2(dir: string, identifier: Buffer, contentsMode: number, filenamesMode: number, flags: number): void;
  getPolicy(path: string): RawPolicy | null;
  keyStatus(path: string, identifier: Buffer): RawKeyStatus;
  removeKey(path: string, identifier: Buffer, allUsers: boolean): Promise<number>;
  loopAttach(backingFile: string, blockSize: number, directIo: boolean): Promise<string>;
  loopDetach(device: string, deferIfBusy: boolean): boolean;
  discardDevice(device: string): Promise<number>;
  mount(source: string, target: string, fstype: string, flags: number, data: string): void;
  mountAsync(source: string, target: string, fstype: string, flags: number, data: string): Promise<number>;
  umount(target: string, flags: number): Promise<number>;
  loopFreeIndex(): number;
  readExtents(path: string): Array<{ offset: number; data: Buffer }>;
  constants: Record<string, number>;
}

// loadAddon loads the native addon once and returns it; throws if it is missing or fails to load.
export function loadAddon(): Addon {
  return loadNativeAddon<Addon>('fscrypt');
}

// Returns a named constant from the addon (values come from the kernel headers it was built with).
function constant(name: string): number {
  const value = loadAddon().constants[name];
  if (value === undefined) throw new Error(`fscrypt addon lacks constant ${name}`);
  return value;
}

// EncryptionPolicy is a directory's fscrypt policy as read back by FS_IOC_GET_ENCRYPTION_POLICY_EX.
export interface EncryptionPolicy {
  readonly version: number;
  readonly contentsMode: number;
  readonly filenamesMode: number;
  readonly flags: number;
  readonly keyIdentifier: string;
}

// KeyState is the kernel's view of a master key in a filesystem's keyring.
export type KeyState = 'absent' | 'present' | 'incompletely-removed';

// KeyStatus is the result of FS_IOC_GET_ENCRYPTION_KEY_STATUS.
export interface KeyStatus {
  readonly state: KeyState;
  readonly statusFlags: number;
  readonly userCount: number;
}

// KeyRemoval is the result of FS_IOC_REMOVE_ENCRYPTION_KEY(_ALL_USERS).
export interface KeyRemoval {
  readonly filesBusy: boolean;
  readonly otherUsers: boolean;
}

// POLICY_V2_AES256 is the only policy the agent sets: v2, AES-256-XTS contents, AES-256-CTS names, names padded to 32 bytes.
export const POLICY_V2_AES256 = {
  version: 2,
  contentsMode: 1,
  filenamesMode: 4,
  flags: 3,
} as const;

// Converts a 32-hex-digit key identifier to the 16-byte form the kernel takes.
function identifierBytes(keyIdentifier: string): Buffer {
  if (!/^[0-9a-f]{32}$/.test(keyIdentifier)) throw new TypeError('key identifier must be 32 lowercase hex digits');
  return Buffer.from(keyIdentifier, 'hex');
}

// addEncryptionKey adds a raw v2 master key to the keyring of the filesystem holding `path`; returns its identifier (hex).
// The addon zeroes its own copy; the caller must still zero `key`.
export function addEncryptionKey(path: string, key: Buffer): string {
  return loadAddon().addKey(path, key).toString('hex');
}

// setPolicy puts the empty directory `dir` under POLICY_V2_AES256 keyed by `keyIdentifier`.
export function setPolicy(dir: string, keyIdentifier: string): void {
  const p = POLICY_V2_AES256;
  if (p.version !== constant('FSCRYPT_POLICY_V2') || p.contentsMode !== constant('FSCRYPT_MODE_AES_256_XTS') ||
      p.filenamesMode !== constant('FSCRYPT_MODE_AES_256_CTS') || p.flags !== constant('FSCRYPT_POLICY_FLAGS_PAD_32')) {
    throw new Error('fscrypt addon constants disagree with POLICY_V2_AES256');
  }
  loadAddon().setPolicyV2(dir, identifierBytes(keyIdentifier), p.contentsMode, p.filenamesMode, p.flags);
}

// getPolicy reads the encryption policy of `path`, or null if it is not encrypted.
export function getPolicy(path: string): EncryptionPolicy | null {
  const raw = loadAddon().getPolicy(path);
  if (raw === null) return null;
  return {
    version: raw.version,
    contentsMode: raw.contentsMode,
    filenamesMode: raw.filenamesMode,
    flags: raw.flags,
    keyIdentifier: raw.identifier.toString('hex'),
  };
}

// getKeyStatus asks the filesystem holding `path` whether the key `keyIdentifier` is in its keyring.
export function getKeyStatus(path: string, keyIdentifier: string): KeyStatus {
  const raw = loadAddon().keyStatus(path, identifierBytes(keyIdentifier));
  const states: Record<number, KeyState> = {
    [constant('FSCRYPT_KEY_STATUS_ABSENT')]: 'absent',
    [constant('FSCRYPT_KEY_STATUS_PRESENT')]: 'present',
    [constant('FSCRYPT_KEY_STATUS_INCOMPLETELY_REMOVED')]: 'incompletely-removed',
  };
  const state = states[raw.status];
  if (state === undefined) throw new Error(`unknown fscrypt key status ${raw.status}`);
  return { state, statusFlags: raw.statusFlags, userCount: raw.userCount };
}

// removeEncryptionKey removes every user's claim to `keyIdentifier` (FS_IOC_REMOVE_ENCRYPTION_KEY_ALL_USERS) and
// evicts the files it unlocked; throws ENOKEY if the key is not there.
export async function removeEncryptionKey(path: string, keyIdentifier: string): Promise<KeyRemoval> {
  const flags = await loadAddon().removeKey(path, identifierBytes(keyIdentifier), true);
  return {
    filesBusy: (flags & constant('FSCRYPT_KEY_REMOVAL_STATUS_FLAG_FILES_BUSY')) !== 0,
    otherUsers: (flags & constant('FSCRYPT_KEY_REMOVAL_STATUS_FLAG_OTHER_USERS')) !== 0,
  };
}

// attachLoop binds `backingFile` to a free loop device (LOOP_CTL_GET_FREE + LOOP_CONFIGURE); returns /dev/loopN.
export function attachLoop(backingFile: string, blockSize: number, directIo: boolean): Promise<string> {
  return loadAddon().loopAttach(backingFile, blockSize, directIo);
}

// detachLoop clears a loop device (LOOP_CLR_FD); while it is mounted anywhere it refuses with EBUSY, or, with
// deferIfBusy, arms autoclear (detach at last release) and returns false.
export function detachLoop(device: string, deferIfBusy = false): boolean {
  return loadAddon().loopDetach(device, deferIfBusy);
}

// discardDevice discards every block of `device` (BLKDISCARD; punches holes in a loop device's backing file);
// refuses with EBUSY while it is mounted anywhere. Returns the bytes discarded.
export function discardDevice(device: string): Promise<number> {
  return loadAddon().discardDevice(device);
}


// mountExt4 mounts `device` on `target` as ext4 with nosuid, nodev and noatime.
export async function mountExt4(device: string, target: string): Promise<void> {
  const flags = constant('MS_NOSUID') | constant('MS_NODEV') | constant('MS_NOATIME');
  await loadAddon().mountAsync(device, target, 'ext4', flags, '');
}

// unmount unmounts `target` (no lazy detach: EBUSY when files are still in use).
export async function unmount(target: string): Promise<void> {
  await loadAddon().umount(target, 0);
}

// freeLoopIndex returns the loop device number LOOP_CTL_GET_FREE would hand out now.
export function freeLoopIndex(): number {
  return loadAddon().loopFreeIndex();
}
