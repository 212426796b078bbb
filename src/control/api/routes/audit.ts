/** Audit routes: read the hash-chained security log, and verify the chain. */
import { z } from 'zod';
import { AUDIT_EVENT_TYPES } from '../../audit/chain.js';
import type { AuditLog } from '../../audit/audit-log.js';
import type { RouteTable } from '../route-table.js';
import { AuditEventView } from '../views.js';

const AuditQuery = z
  .object({
    limit: z.coerce.number().int().min(1).max(1000).optional().describe('at most this many (default 100)'),
    before: z.coerce.number().int().min(1).optional().describe('only events with a smaller seq (paging, newest first)'),
    type: z.enum(AUDIT_EVENT_TYPES).optional().describe('only events of this type'),
  })
  .strict();

/** registerAuditRoutes adds the audit log operations: admin keys see every workspace's events, other keys their own. */
export function registerAuditRoutes(t: RouteTable, audit: AuditLog): void {
  t.add({
    method: 'GET',
    path: '/v1/audit',
    operationId: 'listAuditEvents',
    summary: 'Security events, newest first (admin keys: all workspaces and platform events; other keys: their workspace)',
    auth: 'key',
    query: AuditQuery,
    response: z.object({ events: z.array(AuditEventView) }),
    handler: async ({ principal, query }) => ({
      events: await audit.list({
        order: 'desc',
        limit: query.limit ?? 100,
        ...(principal.key!.admin ? {} : { workspaceId: principal.workspace.id }),
        ...(query.before !== undefined ? { beforeSeq: query.before } : {}),
        ...(query.type !== undefined ? { type: query.type } : {}),
      }),
    }),
  });
  t.add({
    method: 'GET',
    path: '/v1/audit/verify',
    operationId: 'verifyAuditChain',
    summary: 'Check the whole hash chain from its first event; reports the first broken link (admin)',
    auth: 'admin',
    response: z.object({ ok: z.boolean(), events: z.number(), lastHash: z.string().optional(), brokenAt: z.number().optional(), reason: z.string().optional() }),
    handler: async () => audit.verify(),
  });
}
