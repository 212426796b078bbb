/** SigningKeys keeps the Ed25519 keys that sign workload tokens: rotates them, publishes the public halves (JWKS). */
import { createHash, createPrivateKey, createPublicKey, generateKeyPairSync, type JsonWebKey, type KeyObject } from 'node:crypto';
import type { Store } from '../store/store.js';
import type { Keyring } from '../data/keyring.js';

const UNKNOWN_KID_RELOAD_MS = 5000;

/** SigningKey is a usable key pair. */
export interface SigningKey {
  kid: string;
  createdAtMs: number;
  privateKey: KeyObject;
  publicKey: KeyObject;
  publicJwk: JsonWebKey;
}

/** SigningKeysOptions: how often to rotate, and how long tokens live (old keys stay until their last token expires). */
export interface SigningKeysOptions {
  rotationMs: number;
  tokenTtlMs: number;
  skewMs: number;
}

/** SigningKeys signs with the newest key and verifies with any key whose tokens may still be alive. */
export class SigningKeys {
  private keys: SigningKey[] = [];
  private reloadedAt = 0;

  constructor(
    private readonly store: Store,
    private readonly keyring: Keyring,
    private readonly options: SigningKeysOptions,
  ) {}

  /** current returns the key to sign with now, rotating (and pruning retired keys) when the newest is too old. */
  async current(now = Date.now()): Promise<SigningKey> {
    let newest = this.keys.at(-1);
    if (!newest || now - newest.createdAtMs >= this.options.rotationMs) {
      await this.reload(); // another replica may have rotated already
      newest = this.keys.at(-1);
    }
    if (!newest || now - newest.createdAtMs >= this.options.rotationMs) {
      // The store arbitrates between replicas rotating at once: the successor of a key has one id, so only the first
      // insert of it succeeds; the others take the winner's key and the chain of keys never forks.
      const candidate = this.generate(now, successorKid(newest?.kid ?? null));
      try {
        await this.store.addSigningKey({ kid: candidate.kid, publicJwk: JSON.stringify(candidate.publicJwk), wrappedPrivate: this.wrapPrivate(candidate), createdAt: new Date(now).toISOString() });
        this.keys.push(candidate);
        newest = candidate;
      } catch (e) {
        await this.reload();
        const winner = this.keys.find((k) => k.kid === candidate.kid);
        if (!winner) throw e;
        newest = winner;
      }
      await this.prune(now);
    }
    return newest;
  }

  /** verificationKey returns the public key with this id, reloading once for keys another replica made. */
  async verificationKey(kid: string): Promise<KeyObject | null> {
    let k = this.keys.find((x) => x.kid === kid);
    // Unknown ids come from forged tokens too: look in the store again at most every few seconds.
    if (!k && Date.now() - this.reloadedAt >= UNKNOWN_KID_RELOAD_MS) {
      await this.reload();
      k = this.keys.find((x) => x.kid === kid);
    }
    return k?.publicKey ?? null;
  }

  /** jwks returns the published key set: every key whose tokens may still verify. */
  async jwks(): Promise<{ keys: JsonWebKey[] }> {
    await this.current();
    return { keys: this.keys.map((k) => ({ ...k.publicJwk, kid: k.kid, alg: 'EdDSA', use: 'sig' })) };
  }

  private async reload(): Promise<void> {
    this.reloadedAt = Date.now();
    this.keys = (await this.store.listSigningKeys()).map((r) => {
      const publicJwk = JSON.parse(r.publicJwk) as JsonWebKey;
      const d = this.keyring.unwrap(r.wrappedPrivate, `signing:${r.kid}`);
      const privateKey = createPrivateKey({ key: { ...publicJwk, d: d.toString('base64url') }, format: 'jwk' });
      d.fill(0);
      return { kid: r.kid, createdAtMs: Date.parse(r.createdAt), privateKey, publicKey: createPublicKey({ key: publicJwk, format: 'jwk' }), publicJwk };
    });
  }

  private generate(now: number, kid: string): SigningKey {
    const { privateKey, publicKey } = generateKeyPairSync('ed25519');
    const jwk = publicKey.export({ format: 'jwk' });
    return { kid, createdAtMs: now, privateKey, publicKey, publicJwk: { kty: jwk.kty, crv: jwk.crv, x: jwk.x } };
  }

  private wrapPrivate(k: SigningKey): Buffer {
    const d = Buffer.from(k.privateKey.export({ format: 'jwk' }).d!, 'base64url');
    try {
      return this.keyring.wrap(d, `signing:${k.kid}`);
    } finally {
      d.fill(0);
    }
  }

  // A key signs until the next one replaces it; its last token then lives one more lifetime (plus skew).
  private async prune(now: number): Promise<void> {
    const { rotationMs, tokenTtlMs, skewMs } = this.options;
    const keep: SigningKey[] = [];
    for (const [i, k] of this.keys.entries()) {
      const replacedAt = this.keys[i + 1]?.createdAtMs ?? Infinity;
      if (replacedAt + tokenTtlMs + skewMs < now && k.createdAtMs + rotationMs < now) await this.store.deleteSigningKey(k.kid);
      else keep.push(k);
    }
    this.keys = keep;
  }
}

/** successorKid is the id of the key that replaces `kid` (null: the first key): every replica derives the same one. */
function successorKid(kid: string | null): string {
  return `k_${createHash('sha256').update(`cleanroom signing key after ${kid ?? '(none)'}`).digest('hex').slice(0, 16)}`;
}
