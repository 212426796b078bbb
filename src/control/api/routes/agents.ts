/** Agent routes for operators (platform admins): list the fleet, drain, undrain (re-admit) and remove agents. */
import { z } from 'zod';
import type { AgentHub } from '../../agents/agent-hub.js';
import type { AuditLog } from '../../audit/audit-log.js';
import { actorOf, type RouteTable } from '../route-table.js';

const WarmPool = z.object({
  image: z.string().nullable().describe('image manifest digest; null: the host root'),
  runtime: z.string(),
  sizeClass: z.string(),
  cells: z.number(),
});
const Offers = z
  .object({
    runtimes: z.array(z.string()).describe('the runtimes its host runs: jobs and sandboxes of other runtimes are not placed on it'),
    classes: z
      .array(z.object({ name: z.string(), cpu: z.number(), memoryMiB: z.number(), diskMiB: z.number() }))
      .describe('its size classes: a workload is placed on it only if one fits its cpu, memory and disk'),
  })
  .nullable()
  .describe('what it can run, as it last said; null: an agent that does not say (every runtime and size is placed on it)');
const AgentView = z.object({
  id: z.string(),
  state: z.enum(['connected', 'disconnected', 'draining', 'removed']).describe('removed wins over draining, which wins over the connection'),
  connected: z.boolean(),
  capacity: z.number().describe('jobs it runs at once'),
  running: z.number().describe('jobs placed on it and not ended (the last count when disconnected)'),
  preparing: z.number().describe('cells it is preparing'),
  warmCells: z.number().describe('warm cells in all'),
  warm: z.array(WarmPool).describe('warm cells per image, runtime and size class'),
  offers: Offers,
  connectedAt: z.string().nullable(),
  lastSeenAt: z.string(),
});

/** registerAgentRoutes adds GET /v1/agents and the drain, undrain and remove operations. */
export function registerAgentRoutes(t: RouteTable, agents: AgentHub, audit: AuditLog): void {
  t.add({
    method: 'GET',
    path: '/v1/agents',
    operationId: 'listAgents',
    summary: 'Every agent of the replica set: state, capacity, running jobs, warm cells, offered runtimes and size classes, times (platform admin)',
    auth: 'platform-admin',
    response: z.object({ agents: z.array(AgentView) }),
    handler: async () => ({ agents: await agents.listAll() }),
  });
  t.add({
    method: 'POST',
    path: '/v1/agents/:id/drain',
    operationId: 'drainAgent',
    summary: 'Place no new jobs or sandboxes on the agent; what runs there finishes (platform admin)',
    auth: 'platform-admin',
    response: AgentView,
    errors: ['not_found'],
    handler: async ({ principal, params }) => {
      const a = agents.drain(params.id!);
      await audit.record({ type: 'agent.drained', actor: actorOf(principal), workspaceId: null, subject: a.id, details: { running: a.running } });
      return a;
    },
  });
  t.add({
    method: 'POST',
    path: '/v1/agents/:id/undrain',
    operationId: 'undrainAgent',
    summary: 'Let the agent take new work again; a removed agent is re-admitted and may connect again (platform admin)',
    auth: 'platform-admin',
    response: AgentView,
    errors: ['not_found'],
    handler: async ({ principal, params }) => {
      const a = agents.undrain(params.id!);
      await audit.record({ type: 'agent.undrained', actor: actorOf(principal), workspaceId: null, subject: a.id, details: {} });
      return a;
    },
  });
  t.add({
    method: 'DELETE',
    path: '/v1/agents/:id',
    operationId: 'removeAgent',
    summary:
      'Remove an agent: allowed when it is disconnected, or drained with nothing running (else conflict: drain it first). Its unfinished jobs end as error; it is refused if it connects again, until undrained (platform admin)',
    auth: 'platform-admin',
    response: AgentView,
    errors: ['not_found', 'conflict'],
    handler: async ({ principal, params }) => {
      const a = await agents.remove(params.id!);
      await audit.record({ type: 'agent.removed', actor: actorOf(principal), workspaceId: null, subject: a.id, details: {} });
      return a;
    },
  });
}
