/** System routes: health, the OpenAPI document, the warm pool and the Prometheus metrics. */
import { z } from 'zod';
import type { AgentHub } from '../../agents/agent-hub.js';
import type { PlaneMetrics } from '../../metrics/plane-metrics.js';
import type { RouteTable } from '../route-table.js';

const VolumeCounts = z.object({ warm: z.number(), inUse: z.number(), wiping: z.number(), wiped: z.number(), wipeFailed: z.number() });
const PoolEntry = z.object({ target: z.number(), warm: z.number(), preparing: z.number(), busy: z.number(), lastError: z.string().nullable().describe('why the last prepare failed') });

/** registerSystemRoutes adds health, openapi, pool and metrics. */
export function registerSystemRoutes(t: RouteTable, agents: AgentHub, metrics: PlaneMetrics): void {
  t.add({
    method: 'GET',
    path: '/metrics',
    operationId: 'metrics',
    summary: 'Prometheus metrics of the plane (jobs, starts, wipes, pools, tokens, denied connections); platform admins only',
    auth: 'platform-admin',
    response: { contentType: 'text/plain; version=0.0.4', description: 'Prometheus text exposition format' },
    handler: async ({ reply }) => {
      const text = await metrics.render();
      return reply.type(metrics.contentType).send(text);
    },
  });
  t.add({
    method: 'GET',
    path: '/v1/metrics/history',
    operationId: 'metricsHistory',
    summary: 'The last hour of throughput and start latency in 10 s intervals (what the console charts); platform admins only',
    auth: 'platform-admin',
    response: z.object({
      intervalSeconds: z.number(),
      points: z.array(z.object({ at: z.string(), jobsEnded: z.number(), jobsPerSecond: z.number(), startP50Ms: z.number().nullable(), startP95Ms: z.number().nullable() })),
    }),
    handler: async () => ({ intervalSeconds: metrics.history.intervalMs / 1000, points: metrics.history.list() }),
  });
  t.add({
    method: 'GET',
    path: '/v1/health',
    operationId: 'health',
    summary: 'Liveness, and how many agents are connected',
    auth: 'none',
    response: z.object({ ok: z.boolean(), agents: z.number() }),
    handler: async () => ({ ok: true, agents: agents.connectedAgents().length }),
  });
  t.add({
    method: 'GET',
    path: '/openapi.json',
    operationId: 'openapi',
    summary: 'This document',
    auth: 'none',
    response: { contentType: 'application/json', description: 'OpenAPI 3.1 document' },
    handler: async () => t.openapi(),
  });
  t.add({
    method: 'GET',
    path: '/v1/pool',
    operationId: 'getPool',
    summary: 'Warm pool per agent: target, warm, preparing and busy cells per runtime/class',
    auth: 'key',
    response: z.object({
      agents: z.record(z.string(), z.record(z.string(), PoolEntry)).describe('per agent: pool entries keyed runtime/class'),
      volumes: z.record(z.string(), VolumeCounts).describe('per agent: encrypted volumes by state'),
    }),
    handler: async () => {
      const all = await agents.pool();
      return {
        agents: Object.fromEntries(Object.entries(all).map(([id, a]) => [id, a.pool])),
        volumes: Object.fromEntries(Object.entries(all).map(([id, a]) => [id, a.volumes])),
      };
    },
  });
}
