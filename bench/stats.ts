// bench/stats.ts: the summary every figure is reported as (nearest-rank percentiles, milliseconds unless named otherwise).

/** Stats summarises one series of samples. */
export interface Stats {
  p50: number;
  p95: number;
  p99: number;
  min: number;
  max: number;
  n: number;
}

/** summarize returns p50/p95/p99/min/max/n of the samples, rounded to microseconds (an empty series gives NaN, null in JSON, and n 0). */
export function summarize(samples: readonly number[]): Stats {
  const sorted = samples.filter((s) => Number.isFinite(s)).sort((a, b) => a - b);
  const at = (q: number): number => round(sorted[Math.max(0, Math.ceil(q * sorted.length) - 1)] ?? Number.NaN);
  return { p50: at(0.5), p95: at(0.95), p99: at(0.99), min: round(sorted[0] ?? Number.NaN), max: round(sorted.at(-1) ?? Number.NaN), n: sorted.length };
}

/** mean is the arithmetic mean, NaN for no samples. */
export function mean(samples: readonly number[]): number {
  return samples.length === 0 ? Number.NaN : samples.reduce((a, b) => a + b, 0) / samples.length;
}

/** round keeps three decimals (µs for milliseconds). */
export function round(x: number): number {
  return Math.round(x * 1000) / 1000;
}
