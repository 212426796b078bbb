// bench/chart.ts: an SVG of latency distributions (hand-written, no dependency): one row per series on a log time axis,
// every sample as a dot, a box from p50 to p95, whiskers to min and max, a tick at p99.
import { summarize } from './stats.js';

/** Series is one named set of samples in milliseconds. */
export interface Series {
  label: string;
  samples: readonly number[];
  color: string;
}

const WIDTH = 980;
const LEFT = 230;
const RIGHT = 250;
const TOP = 84;
const ROW = 46;
const BOTTOM = 44;

/** renderChart returns a standalone SVG document; series without samples are drawn as "no samples". */
export function renderChart(title: string, subtitle: string, series: readonly Series[]): string {
  const all = series.flatMap((s) => s.samples).filter((x) => x > 0 && Number.isFinite(x));
  const lo = 10 ** Math.floor(Math.log10(Math.min(...all, 1)));
  const hi = 10 ** Math.ceil(Math.log10(Math.max(...all, 10)));
  const plotW = WIDTH - LEFT - RIGHT;
  const x = (ms: number): number => LEFT + (Math.log10(Math.max(ms, lo)) - Math.log10(lo)) / (Math.log10(hi) - Math.log10(lo)) * plotW;
  const height = TOP + ROW * series.length + BOTTOM;
  const out: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${WIDTH}" height="${height}" viewBox="0 0 ${WIDTH} ${height}" font-family="system-ui, sans-serif" font-size="12">`,
    `<rect width="${WIDTH}" height="${height}" fill="#fff"/>`,
    `<text x="16" y="24" font-size="16" font-weight="600">${esc(title)}</text>`,
    `<text x="16" y="44" fill="#555">${esc(subtitle)}</text>`,
  ];
  for (let d = lo; d <= hi; d *= 10) {
    for (const m of [1, 2, 5]) {
      const v = d * m;
      if (v > hi) break;
      const gx = x(v).toFixed(1);
      out.push(`<line x1="${gx}" y1="${TOP - 6}" x2="${gx}" y2="${height - BOTTOM}" stroke="${m === 1 ? '#ccc' : '#eee'}"/>`);
      out.push(`<text x="${gx}" y="${height - BOTTOM + 16}" text-anchor="middle" fill="#555">${fmtMs(v)}</text>`);
    }
  }
  out.push(`<text x="${LEFT + plotW / 2}" y="${height - 8}" text-anchor="middle" fill="#555">milliseconds (log scale)</text>`);
  series.forEach((s, i) => {
    const cy = TOP + ROW * i + ROW / 2;
    out.push(`<text x="${LEFT - 10}" y="${cy + 4}" text-anchor="end">${esc(s.label)}</text>`);
    const st = summarize(s.samples);
    if (st.n === 0) {
      out.push(`<text x="${LEFT + 4}" y="${cy + 4}" fill="#999">no samples</text>`);
      return;
    }
    s.samples.forEach((v, j) => {
      // Deterministic jitter spreads the dots vertically so repeated values stay visible.
      const jy = cy + (((j * 7919) % 17) / 16 - 0.5) * (ROW * 0.55);
      out.push(`<circle cx="${x(v).toFixed(1)}" cy="${jy.toFixed(1)}" r="2" fill="${s.color}" fill-opacity="0.35"/>`);
    });
    const h = ROW * 0.6;
    out.push(`<line x1="${x(st.min).toFixed(1)}" y1="${cy}" x2="${x(st.max).toFixed(1)}" y2="${cy}" stroke="${s.color}"/>`);
    out.push(`<rect x="${x(st.p50).toFixed(1)}" y="${cy - h / 2}" width="${Math.max(1, x(st.p95) - x(st.p50)).toFixed(1)}" height="${h}" fill="none" stroke="${s.color}" stroke-width="1.5"/>`);
    out.push(`<line x1="${x(st.p50).toFixed(1)}" y1="${cy - h / 2}" x2="${x(st.p50).toFixed(1)}" y2="${cy + h / 2}" stroke="${s.color}" stroke-width="3"/>`);
    out.push(`<line x1="${x(st.p99).toFixed(1)}" y1="${cy - h / 3}" x2="${x(st.p99).toFixed(1)}" y2="${cy + h / 3}" stroke="${s.color}" stroke-width="1.5" stroke-dasharray="2 2"/>`);
    out.push(`<text x="${WIDTH - RIGHT + 12}" y="${cy + 4}" fill="#333">p50 ${fmtMs(st.p50)} · p99 ${fmtMs(st.p99)} · n ${st.n}</text>`);
  });
  out.push(`<text x="${LEFT}" y="${TOP - 16}" fill="#777">dots: samples · thick bar: p50 · box: p50–p95 · dashed: p99 · line: min–max</text>`);
  out.push('</svg>\n');
  return out.join('\n');
}

function fmtMs(v: number): string {
  if (v >= 1000) return `${+(v / 1000).toPrecision(3)} s`;
  return `${+v.toPrecision(v < 10 ? 2 : 3)} ms`;
}

function esc(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
}
