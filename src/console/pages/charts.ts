/** Start latency and throughput over time, from the plane's own Prometheus metrics (sampled while the page is open). */
import { call } from '../api.js';
import { h, replace } from '../dom.js';
import type { Page } from '../page.js';
import { poll } from './jobs.js';

interface Sample {
  at: number;
  ended: number;
  buckets: Array<[number, number]>;
}

/** parse reads the counters the charts need from the exposition text. */
function parse(text: string): Sample {
  let ended = 0;
  const buckets = new Map<number, number>();
  for (const line of text.split('\n')) {
    const m = /^([a-z_]+)\{([^}]*)\} (\S+)$/.exec(line);
    if (!m) continue;
    const value = Number(m[3]);
    if (m[1] === 'cleanroom_jobs_ended_total') ended += value;
    if (m[1] === 'cleanroom_job_start_seconds_bucket') {
      const le = /le="([^"]+)"/.exec(m[2] ?? '')?.[1];
      if (le && le !== '+Inf') buckets.set(Number(le), (buckets.get(Number(le)) ?? 0) + value);
    }
  }
  return { at: Date.now(), ended, buckets: [...buckets].sort((a, b) => a[0] - b[0]) };
}

/** p50 of the starts between two samples, from the histogram's bucket deltas (upper bound of the median's bucket). */
function p50(a: Sample, b: Sample): number | null {
  const delta = b.buckets.map(([le, n], i) => [le, n - (a.buckets[i]?.[1] ?? 0)] as const);
  const total = delta.at(-1)?.[1] ?? 0;
  if (total <= 0) return null;
  return delta.find(([, n]) => n >= total / 2)?.[0] ?? null;
}

function chart(id: string, title: string, unit: string, points: Array<number | null>): SVGSVGElement {
  const ns = 'http://www.w3.org/2000/svg';
  const svg = document.createElementNS(ns, 'svg');
  svg.setAttribute('id', id);
  svg.setAttribute('viewBox', '0 0 400 120');
  svg.setAttribute('role', 'img');
  const label = document.createElementNS(ns, 'title');
  label.textContent = title;
  svg.appendChild(label);
  const values = points.filter((p): p is number => p !== null);
  const max = Math.max(1e-9, ...values);
  const line = document.createElementNS(ns, 'polyline');
  line.setAttribute('fill', 'none');
  line.setAttribute('stroke', 'currentColor');
  line.setAttribute('points', points.map((p, i) => (p === null ? null : `${(i / Math.max(1, points.length - 1)) * 390 + 5},${110 - (p / max) * 100}`)).filter(Boolean).join(' '));
  svg.appendChild(line);
  const text = document.createElementNS(ns, 'text');
  text.setAttribute('x', '5');
  text.setAttribute('y', '12');
  text.textContent = `${title}: last ${values.at(-1)?.toFixed(3) ?? '—'} ${unit}, max ${values.length ? max.toFixed(3) : '—'} ${unit}`;
  svg.appendChild(text);
  return svg;
}

export const chartsPage: Page = (root, signal) => {
  const body = h('div', { id: 'charts' });
  replace(root, h('h2', {}, 'Start latency and throughput'), h('p', {}, 'Sampled every 5 s from /metrics while this page is open (platform admins).'), body);
  const samples: Sample[] = [];
  poll(
    async () => {
      try {
        samples.push(parse(await call<string>('GET', '/metrics')));
      } catch (e) {
        replace(body, h('p', { class: 'error' }, (e as Error).message));
        return;
      }
      if (samples.length > 120) samples.shift();
      const pairs = samples.slice(1).map((s, i) => [samples[i]!, s] as const);
      replace(
        body,
        chart('chart-throughput', 'throughput', 'jobs/s', pairs.map(([a, b]) => (b.ended - a.ended) / ((b.at - a.at) / 1000))),
        chart('chart-latency', 'start latency p50', 's', pairs.map(([a, b]) => p50(a, b))),
      );
    },
    5000,
    signal,
  );
};
