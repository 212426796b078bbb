/**
 * EnvdTokens makes and checks the per-sandbox access tokens of the e2b adapter (`envdAccessToken`, sent back by the SDK as
 * X-Access-Token and used to sign upload/download URLs). A token is HMAC-SHA256 of the sandbox id under a key derived
 * (HKDF) from the sandbox's workspace key: unpredictable without that key (a PRF output, so as good as random per
 * sandbox), the same after a control-plane restart, and nothing stored. It dies with the sandbox because every envd
 * request also requires the sandbox to be running.
 */
import { createHash, createHmac, hkdfSync, timingSafeEqual } from 'node:crypto';
import type { Job } from '../../model.js';

/** TOKEN_INFO binds the derived key to this one purpose. */
const TOKEN_INFO = 'cleanroom e2b envd access token v1';

/** FileOperation is what a signed /files URL allows. */
export type FileOperation = 'read' | 'write';

/** EnvdTokens derives and verifies access tokens. */
export class EnvdTokens {
  private readonly keys = new Map<string, Buffer>();

  constructor(private readonly workspaceKey: (workspaceId: string) => Promise<Buffer>) {}

  /** tokenFor returns a sandbox's access token. */
  async tokenFor(job: Pick<Job, 'id' | 'workspaceId' | 'createdAt'>): Promise<string> {
    const key = await this.derived(job.workspaceId);
    return createHmac('sha256', key).update(`${job.id}\n${job.createdAt}`).digest('base64url');
  }

  /** check compares a presented token with the sandbox's, in constant time. */
  async check(job: Pick<Job, 'id' | 'workspaceId' | 'createdAt'>, presented: string | undefined): Promise<boolean> {
    if (presented === undefined) return false;
    return equal(presented, await this.tokenFor(job));
  }

  /**
   * checkSignature verifies a signed URL: `v1_` + base64(sha256("<path>:<operation>:<user>:<token>[:<expiration>]"))
   * without padding (the e2b SDK's getSignature), not expired.
   */
  async checkSignature(job: Pick<Job, 'id' | 'workspaceId' | 'createdAt'>, s: { path: string; operation: FileOperation; user: string; signature: string; expiration: string | null }, nowMs = Date.now()): Promise<boolean> {
    if (s.expiration !== null && !(/^\d{1,12}$/.test(s.expiration) && Number(s.expiration) * 1000 > nowMs)) return false;
    return equal(s.signature, signature(s.path, s.operation, s.user, await this.tokenFor(job), s.expiration));
  }

  private async derived(workspaceId: string): Promise<Buffer> {
    const cached = this.keys.get(workspaceId);
    if (cached) return cached;
    const key = Buffer.from(hkdfSync('sha256', await this.workspaceKey(workspaceId), Buffer.alloc(0), TOKEN_INFO, 32));
    this.keys.set(workspaceId, key);
    return key;
  }
}

/** signature computes the e2b URL signature of an operation on a path. */
export function signature(path: string, operation: FileOperation, user: string, token: string, expiration: string | null): string {
  const raw = `${path}:${operation}:${user}:${token}${expiration !== null ? `:${expiration}` : ''}`;
  return `v1_${createHash('sha256').update(raw).digest('base64').replace(/=+$/, '')}`;
}

/** equal compares two strings in constant time (for equal lengths; a length difference fails at once, and says nothing of the content). */
function equal(a: string, b: string): boolean {
  const x = Buffer.from(a);
  const y = Buffer.from(b);
  return x.length === y.length && timingSafeEqual(x, y);
}
