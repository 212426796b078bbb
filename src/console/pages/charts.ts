/** Start latency and throughput over the last hour, from the plane's own metrics history (platform admins). */
import { call } from '../api.js';
import { h, replace } from '../dom.js';
import type { Page } from '../page.js';
import { poll } from './jobs.js';

interface HistoryPoint {
  at: string;
  jobsEnded: number;
  jobsPerSecond: number;
  startP50Ms: number | null;
  startP95Ms: number | null;
}

const SVG = 'http://www.w3.org/2000/svg';

function svg<K extends keyof SVGElementTagNameMap>(tag: K, attrs: Record<string, string>): SVGElementTagNameMap[K] {
  const el = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, v);
  return el;
}

/** chart draws one or more series over the same x axis (interval index), scaled to the largest value. */
function chart(id: string, title: string, unit: string, series: Array<{ label: string; color: string; values: Array<number | null> }>): SVGSVGElement {
  const root = svg('svg', { id, viewBox: '0 0 400 130', role: 'img' });
  const label = svg('title', {});
  label.textContent = title;
  root.appendChild(label);
  const all = series.flatMap((s) => s.values.filter((v): v is number => v !== null));
  const max = Math.max(1e-9, ...all);
  const n = Math.max(1, ...series.map((s) => s.values.length - 1));
  for (const s of series) {
    const points = s.values.map((v, i) => (v === null ? null : `${(i / n) * 390 + 5},${120 - (v / max) * 100}`)).filter(Boolean);
    root.appendChild(svg('polyline', { fill: 'none', stroke: s.color, 'stroke-width': '1.5', points: points.join(' '), class: 'series' }));
    // A dot per interval: one interval alone is a point, not a line.
    for (const p of points) {
      const [cx = '0', cy = '0'] = (p ?? '').split(',');
      root.appendChild(svg('circle', { cx, cy, r: '1.8', fill: s.color }));
    }
  }
  const text = svg('text', { x: '5', y: '12' });
  const last = series.map((s) => `${s.label} ${s.values.filter((v) => v !== null).at(-1)?.toFixed(2) ?? '—'}`).join(', ');
  text.textContent = `${title} (${unit}): now ${last}; max ${all.length ? max.toFixed(2) : '—'}`;
  root.appendChild(text);
  return root;
}

export const chartsPage: Page = (root, signal) => {
  const body = h('div', { id: 'charts' });
  replace(root, h('h2', {}, 'Start latency and throughput'), h('p', {}, 'The last hour in 10-second intervals, kept by the control plane (platform admins).'), body);
  poll(
    async () => {
      try {
        const { points } = await call<{ points: HistoryPoint[] }>('GET', '/v1/metrics/history');
        replace(
          body,
          points.length === 0 ? h('p', { id: 'charts-empty' }, 'No interval has closed yet; the first appears within 10 s.') : null,
          chart('chart-throughput', 'throughput', 'jobs/s', [{ label: 'jobs/s', color: '#2856b6', values: points.map((p) => p.jobsPerSecond) }]),
          chart('chart-latency', 'start latency', 'ms', [
            { label: 'p50', color: '#0a7a32', values: points.map((p) => p.startP50Ms) },
            { label: 'p95', color: '#b35c00', values: points.map((p) => p.startP95Ms) },
          ]),
          h('p', { class: 'hint' }, points.length ? `${points.length} intervals, ${points.reduce((n, p) => n + p.jobsEnded, 0)} jobs ended.` : ''),
        );
      } catch (e) {
        replace(body, h('p', { class: 'error' }, (e as Error).message));
      }
    },
    10_000,
    signal,
  );
};
