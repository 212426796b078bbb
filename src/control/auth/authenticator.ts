/** The request authenticator: API keys everywhere, workload tokens on data routes; every refusal is audited. */
import { ApiError } from '../../shared/errors.js';
import type { AuditLog } from '../audit/audit-log.js';
import type { Authenticator } from '../api/route-table.js';
import type { Store } from '../store/store.js';
import type { TenancyService } from '../tenancy/tenancy-service.js';
import type { TokenService } from '../tokens/token-service.js';

/** createAuthenticator combines API-key and workload-token authentication. */
export function createAuthenticator(tenancy: TenancyService, tokens: TokenService, store: Store, audit: AuditLog): Authenticator {
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
      if (e instanceof ApiError) await audit.record({ type: 'access.denied', actor: 'anonymous', workspaceId: null, subject: null, details: { reason: e.code, message: e.message, mode } });
      throw e;
    }
  };
}
