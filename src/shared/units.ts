/** Parsing of human-friendly sizes and durations used by the CLI and config. */

const SIZE_UNITS: Record<string, number> = { '': 1, b: 1, k: 1024, ki: 1024, kib: 1024, m: 1024 ** 2, mi: 1024 ** 2, mib: 1024 ** 2, g: 1024 ** 3, gi: 1024 ** 3, gib: 1024 ** 3 };
const DURATION_UNITS: Record<string, number> = { ms: 0.001, s: 1, '': 1, m: 60, h: 3600 };

/** parseSize turns "256M", "1GiB" or "1048576" into bytes; returns null when it cannot. */
export function parseSize(text: string): number | null {
  const m = /^\s*(\d+(?:\.\d+)?)\s*([a-z]*)\s*$/i.exec(text);
  if (!m) return null;
  const unit = SIZE_UNITS[(m[2] ?? '').toLowerCase()];
  return unit === undefined ? null : Math.round(Number(m[1]) * unit);
}

/** parseDurationSeconds turns "90s", "5m", "1h" or "30" into seconds; returns null when it cannot. */
export function parseDurationSeconds(text: string): number | null {
  const m = /^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|)\s*$/i.exec(text);
  if (!m) return null;
  const unit = DURATION_UNITS[(m[2] ?? '').toLowerCase()];
  return unit === undefined ? null : Number(m[1]) * unit;
}

/** MIB is one mebibyte in bytes. */
export const MIB = 1024 * 1024;
