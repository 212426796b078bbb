/** Token routes: the public keys workload tokens are signed with (JWKS). */
import { z } from 'zod';
import type { TokenService } from '../../tokens/token-service.js';
import type { RouteTable } from '../route-table.js';

/** registerTokenRoutes adds the JWKS document. */
export function registerTokenRoutes(t: RouteTable, tokens: TokenService): void {
  t.add({
    method: 'GET',
    path: '/.well-known/jwks.json',
    operationId: 'jwks',
    summary: 'Public keys that verify workload tokens (EdDSA); rotated keys stay listed until their tokens expire',
    auth: 'none',
    response: z.object({ keys: z.array(z.record(z.string(), z.unknown())) }),
    handler: async () => tokens.jwks(),
  });
}
