/** Audit routes: read the hash-chained security log, and verify the chain. */
import { z } from 'zod';
import { AUDIT_EVENT_TYPES } from '../../audit/chain.js';
import type { AuditLog } from '../../audit/audit-log.js';
import type { TenancyService } from '../../tenancy/tenancy-service.js';
import type { RouteTable } from '../route-table.js';
import { AuditEventView } from '../views.js';

const AuditQuery = z
  .object({
    limit: z.coerce.number().int().min(1).max(1000).optional().describe('at most this many (default 100)'),
    before: z.coerce.number().int().min(1).optional().describe('only events with a smaller seq (paging, newest first)'),
    type: z.enum(AUDIT_EVENT_TYPES).optional().describe('only events of this type'),
    workspace: z.string().min(1).optional().describe("only this workspace's events, by id or name (a platform admin any; other keys only their own, else 404)"),
  })
  .strict();

/**
 * registerAuditRoutes adds the audit log operations. Platform admins read every event and check the chain; every other
 * key reads its own workspace's events only. A workspace admin cannot check the chain, even for its own events: each
 * link covers the event before it, whoever's it is, so a check needs every workspace's events, and its verdict (how
 * many events, where it broke) describes the whole platform; there is nothing a tenant could do about a broken link.
 */
export function registerAuditRoutes(t: RouteTable, audit: AuditLog, tenancy: TenancyService): void {
  t.add({
    method: 'GET',
    path: '/v1/audit',
    operationId: 'listAuditEvents',
    summary: "Security events, newest first (platform admins: all workspaces and platform events; other keys: their workspace's)",
    auth: 'key',
    query: AuditQuery,
    response: z.object({ events: z.array(AuditEventView) }),
    errors: ['not_found'],
    handler: async ({ principal, query }) => {
      const key = principal.key!;
      const only = query.workspace !== undefined ? (await tenancy.workspaceFor(key, query.workspace)).id : key.role === 'platform-admin' ? undefined : key.workspaceId;
      return {
        events: await audit.list({
          order: 'desc',
          limit: query.limit ?? 100,
          ...(only !== undefined ? { workspaceId: only } : {}),
          ...(query.before !== undefined ? { beforeSeq: query.before } : {}),
          ...(query.type !== undefined ? { type: query.type } : {}),
        }),
      };
    },
  });
  t.add({
    method: 'GET',
    path: '/v1/audit/verify',
    operationId: 'verifyAuditChain',
    summary: 'Check the whole hash chain from its first event; reports the first broken link (platform admin)',
    auth: 'platform-admin',
    response: z.object({ ok: z.boolean(), events: z.number(), lastHash: z.string().optional(), brokenAt: z.number().optional(), reason: z.string().optional() }),
    handler: async () => audit.verify(),
  });
}
