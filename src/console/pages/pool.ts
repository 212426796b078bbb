/** Warm pool and agents: warm, preparing, busy and target per agent and pool entry, recent prepare failures, volumes. */
import { call } from '../api.js';
import { h, replace, table } from '../dom.js';
import type { Page } from '../page.js';
import { poll } from './jobs.js';

interface PoolAnswer {
  agents: Record<string, Record<string, { target: number; warm: number; preparing: number; busy: number; lastError: string | null }>>;
  volumes: Record<string, Record<string, number>>;
}

export const poolPage: Page = (root, signal) => {
  const body = h('div', { id: 'pool' });
  replace(root, h('h2', {}, 'Warm pool and agents'), body);
  poll(
    async () => {
      const p = await call<PoolAnswer>('GET', '/v1/pool');
      const agents = Object.keys(p.agents);
      replace(
        body,
        agents.length === 0 ? h('p', {}, 'No agent is connected.') : null,
        ...agents.map((a) =>
          h(
            'section',
            {},
            h('h3', {}, 'Agent ', h('code', {}, a)),
            table(
              ['pool', 'warm', 'preparing', 'busy', 'target', 'last prepare failure'],
              Object.entries(p.agents[a] ?? {}).map(([k, e]) => [k, e.warm, e.preparing, e.busy, e.target, e.lastError ? h('span', { class: 'error' }, e.lastError) : '—']),
            ),
            h('p', {}, 'Volumes: ', Object.entries(p.volumes[a] ?? {}).map(([k, n]) => `${k} ${n}`).join(' · ')),
          ),
        ),
      );
    },
    2000,
    signal,
  );
};
