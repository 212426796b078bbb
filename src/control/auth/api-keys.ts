/** API keys: `crk_<id>_<secret>`; only a SHA-256 of the 256-bit secret is stored. */
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import type { ApiKeyRecord, ApiKeyRole } from '../model.js';

const KEY_PATTERN = /^crk_([0-9a-f]{16})_([A-Za-z0-9_-]{43})$/;

/** NewApiKey is a freshly minted key: the plaintext is shown once, the record is stored. */
export interface NewApiKey {
  plaintext: string;
  record: ApiKeyRecord;
}

/** mintApiKey creates a key for a workspace, with a role. */
export function mintApiKey(workspaceId: string, name: string, role: ApiKeyRole): NewApiKey {
  const id = randomBytes(8).toString('hex');
  const secret = randomBytes(32).toString('base64url');
  return {
    plaintext: `crk_${id}_${secret}`,
    record: { id, workspaceId, name, role, secretHash: hashSecret(secret), createdAt: new Date().toISOString(), revokedAt: null },
  };
}

/** parseApiKey splits a presented key into id and secret, or returns null if it is not shaped like one. */
export function parseApiKey(presented: string): { id: string; secret: string } | null {
  const m = KEY_PATTERN.exec(presented);
  return m ? { id: m[1]!, secret: m[2]! } : null;
}

/** secretMatches compares a presented secret with a stored hash in constant time. */
export function secretMatches(secret: string, storedHash: string): boolean {
  const a = Buffer.from(hashSecret(secret), 'hex');
  const b = Buffer.from(storedHash, 'hex');
  return a.length === b.length && timingSafeEqual(a, b);
}

function hashSecret(secret: string): string {
  return createHash('sha256').update(secret).digest('hex');
}
