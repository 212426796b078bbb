/** Keyring holds the key-encryption key (KEK) and unwraps the per-workspace keys under it (envelope encryption). */
import { chownSync, existsSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import type { Store } from '../store/store.js';
import { newDataKey, unwrapKey, wrapKey } from './envelope.js';

const KEK_BYTES = 32;

/** ensureKek generates the KEK file (32 random bytes, mode 0600, owned by the control plane) if it does not exist. */
export function ensureKek(path: string, uid: number, gid: number): void {
  if (existsSync(path)) return;
  writeFileSync(path, randomBytes(KEK_BYTES), { mode: 0o600, flag: 'wx' });
  chownSync(path, uid, gid);
}

/** loadKek reads a KEK file: exactly 32 raw bytes (or 64 hex digits), readable by its owner only. */
export function loadKek(path: string): Buffer {
  const mode = statSync(path).mode & 0o777;
  if (mode & 0o077) throw new Error(`the key-encryption key ${path} is readable by others (mode ${mode.toString(8)}); chmod 600 it`);
  const raw = readFileSync(path);
  const text = raw.toString('latin1').trim();
  if (/^[0-9a-fA-F]{64}$/.test(text)) return Buffer.from(text, 'hex');
  if (raw.length !== KEK_BYTES) throw new Error(`the key-encryption key ${path} must hold 32 bytes (or 64 hex digits); it has ${raw.length}`);
  return raw;
}

/** Keyring wraps and unwraps keys under the KEK; workspace keys are created on first use and cached unwrapped. */
export class Keyring {
  private readonly workspaceKeys = new Map<string, Buffer>();
  private readonly kek: Buffer;

  /** The keyring keeps its own copy of `kek`: the caller may (and should) zero its buffer afterwards. */
  constructor(
    private readonly store: Store,
    kek: Buffer,
  ) {
    if (kek.length !== 32) throw new Error('the key-encryption key must be 32 bytes');
    this.kek = Buffer.from(kek);
  }

  /** wrap protects a 32-byte key under the KEK, bound to `context`. */
  wrap(key: Buffer, context: string): Buffer {
    return wrapKey(this.kek, key, context);
  }

  /** unwrap reverses wrap; throws if the context or the bytes differ. */
  unwrap(wrapped: Buffer, context: string): Buffer {
    return unwrapKey(this.kek, wrapped, context);
  }

  /** workspaceKey returns the workspace's data key, creating it on first use. */
  async workspaceKey(workspaceId: string): Promise<Buffer> {
    const cached = this.workspaceKeys.get(workspaceId);
    if (cached) return cached;
    const context = `workspace:${workspaceId}`;
    const wrapped = await this.store.workspaceKey(workspaceId, () => {
      const fresh = newDataKey();
      const w = this.wrap(fresh, context);
      fresh.fill(0);
      return w;
    });
    const key = this.unwrap(wrapped, context);
    this.workspaceKeys.set(workspaceId, key);
    return key;
  }
}
