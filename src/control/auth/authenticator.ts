/** The request authenticator: API keys everywhere, workload tokens on data routes; every refusal is audited, within a budget. */
import { ApiError } from '../../shared/errors.js';
import type { AccessDenials } from '../audit/access-denials.js';
import type { Authenticator, Principal } from '../api/route-table.js';
import { roleAtLeast } from '../model.js';
import type { TenancyService } from '../tenancy/tenancy-service.js';
import { TokenRefused, type TokenService } from '../tokens/token-service.js';

/** createAuthenticator combines API-key and workload-token authentication with the role a route needs. */
export function createAuthenticator(tenancy: TenancyService, tokens: TokenService, denials: AccessDenials): Authenticator {
  return async (header, mode) => {
    let principal: Principal | null = null;
    try {
      const bearer = /^Bearer (\S+)$/.exec(header ?? '')?.[1];
      if (mode === 'data' && bearer && !bearer.startsWith('crk_')) {
        const workload = await tokens.verify(bearer);
        const workspace = await tenancy.workspace(workload.workspaceId);
        if (!workspace) throw new ApiError('invalid_token', 'the token names a workspace that does not exist');
        return { key: null, workload, workspace };
      }
      principal = await tenancy.authenticate(header);
      if ((mode === 'platform-admin' || mode === 'workspace-admin') && !roleAtLeast(principal.key!.role, mode)) {
        throw new ApiError('forbidden', `this needs a ${mode} API key; this one is a ${principal.key!.role} key`);
      }
      return principal;
    } catch (e) {
      if (e instanceof ApiError) {
        // Charged to a workspace only when the credential proved it: a valid key, or a token whose signature verified.
        const who =
          e instanceof TokenRefused
            ? { actor: `workload:${e.workload.jobId}`, workspaceId: e.workload.workspaceId }
            : principal
              ? { actor: `key:${principal.key!.id}`, workspaceId: principal.workspace.id }
              : { actor: 'anonymous', workspaceId: null };
        await denials.record({ ...who, subject: null, reason: e.code, details: { message: e.message, mode } });
      }
      throw e;
    }
  };
}
