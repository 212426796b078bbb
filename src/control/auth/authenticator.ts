/** The request authenticator: API keys everywhere, workload tokens on data routes; every refusal is audited. */
import { ApiError } from '../../shared/errors.js';
import type { AuditLog } from '../audit/audit-log.js';
import type { Authenticator } from '../api/route-table.js';
import type { Store } from '../store/store.js';
import type { TenancyService } from '../tenancy/tenancy-service.js';
import type { TokenService } from '../tokens/token-service.js';

/** DENIALS_PER_MINUTE bounds how many refused credentials are written to the (never pruned) audit log per minute. */
const DENIALS_PER_MINUTE = 120;

/** createAuthenticator combines API-key and workload-token authentication. */
export function createAuthenticator(tenancy: TenancyService, tokens: TokenService, store: Store, audit: AuditLog): Authenticator {
  // A flood of bad credentials must not fill the disk: beyond the budget, refusals are counted and the count is
  // recorded with the next refusal that fits.
  let windowStart = 0;
  let recorded = 0;
  let suppressed = 0;
  const recordDenial = async (e: ApiError, mode: string): Promise<void> => {
    const now = Date.now();
    if (now - windowStart >= 60_000) {
      windowStart = now;
      recorded = 0;
    }
    if (recorded >= DENIALS_PER_MINUTE) {
      suppressed++;
      return;
    }
    recorded++;
    const details = { reason: e.code, message: e.message, mode, ...(suppressed ? { notRecordedBefore: suppressed } : {}) };
    suppressed = 0;
    await audit.record({ type: 'access.denied', actor: 'anonymous', workspaceId: null, subject: null, details });
  };
  return async (header, mode) => {
    try {
      const bearer = /^Bearer (\S+)$/.exec(header ?? '')?.[1];
      if (mode === 'data' && bearer && !bearer.startsWith('crk_')) {
        const workload = await tokens.verify(bearer);
        const workspace = await store.getWorkspace(workload.workspaceId);
        if (!workspace) throw new ApiError('invalid_token', 'the token names a workspace that does not exist');
        return { key: null, workload, workspace };
      }
      return await tenancy.authenticate(header, mode === 'admin');
    } catch (e) {
      if (e instanceof ApiError) await recordDenial(e, mode);
      throw e;
    }
  };
}
