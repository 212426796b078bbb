/** Network routes: the workspace's egress policy, and the connections it denied. */
import { z } from 'zod';
import type { NetworkPolicyService } from '../../network/network-policy-service.js';
import { actorOf, type RouteTable } from '../route-table.js';
import { DeniedConnectionView, deniedConnectionView, EgressPolicyView, egressPolicyView } from '../views.js';

// Only the shape is checked here; validateEgressPolicy (in the service) is the authority on what a rule may say.
const PolicyBody = z
  .object({
    allow: z
      .array(
        z
          .object({
            cidr: z.string().describe('IPv4 address or canonical CIDR, e.g. 203.0.113.0/24; never loopback, link-local, multicast or the cell pool'),
            protocol: z.string().optional().describe('tcp, udp, icmp or any; default any, or tcp when a port is given'),
            port: z.union([z.number(), z.string()]).optional().describe('1-65535 or a range "from-to"; only with tcp or udp'),
          })
          .strict(),
      )
      .describe('destinations cells may reach; everything else is denied'),
    dryRun: z.boolean().optional().describe('allow everything, but record what the allow-list would deny'),
  })
  .strict();

const DeniedQuery = z
  .object({
    limit: z.coerce.number().int().min(1).max(1000).optional().describe('at most this many (default 100)'),
    jobId: z.string().min(1).optional().describe("only this job's records"),
  })
  .strict();

/** registerNetworkRoutes adds the egress policy and denied-connection operations. */
export function registerNetworkRoutes(t: RouteTable, network: NetworkPolicyService): void {
  t.add({
    method: 'GET',
    path: '/v1/network/policy',
    operationId: 'getNetworkPolicy',
    summary: "The workspace's egress policy (default: deny all egress)",
    auth: 'key',
    response: EgressPolicyView,
    handler: async ({ principal }) => egressPolicyView(await network.policyOf(principal.workspace.id)),
  });
  t.add({
    method: 'PUT',
    path: '/v1/network/policy',
    operationId: 'setNetworkPolicy',
    summary: "Replace the workspace's egress policy; it applies to workloads created from now on",
    auth: 'key',
    body: PolicyBody,
    response: EgressPolicyView,
    errors: ['invalid_policy'],
    handler: async ({ principal, body }) => egressPolicyView(await network.set(principal.workspace, body, actorOf(principal))),
  });
  t.add({
    method: 'GET',
    path: '/v1/network/denied',
    operationId: 'listDeniedConnections',
    summary: "The workspace's denied (and dry-run would-be denied) egress connections, newest first",
    auth: 'key',
    query: DeniedQuery,
    response: z.object({ denied: z.array(DeniedConnectionView) }),
    errors: ['not_found'],
    handler: async ({ principal, query }) => ({
      denied: (await network.listDenied(principal.workspace, { limit: query.limit ?? 100, ...(query.jobId ? { jobId: query.jobId } : {}) })).map(deniedConnectionView),
    }),
  });
}
