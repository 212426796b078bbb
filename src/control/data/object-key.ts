/** Object keys and key prefixes: what a name in a workspace's data store may look like. */

/** MAX_KEY_BYTES bounds an object key (UTF-8 bytes). */
export const MAX_KEY_BYTES = 1024;

/** keyProblem returns why `key` is not a valid object key, or null if it is. */
export function keyProblem(key: string): string | null {
  if (key.length === 0) return 'the object key is empty';
  if (key.endsWith('/')) return 'an object key must not end with "/"';
  return prefixProblem(key);
}

/** prefixProblem returns why `prefix` is not a valid key prefix (empty is valid: the whole workspace), or null. */
export function prefixProblem(prefix: string): string | null {
  if (Buffer.byteLength(prefix, 'utf8') > MAX_KEY_BYTES) return `an object key is at most ${MAX_KEY_BYTES} bytes`;
  // eslint-disable-next-line no-control-regex
  if (/[\x00-\x1f\x7f]/.test(prefix)) return 'an object key must not contain NUL or control characters';
  if (prefix.includes('\\')) return 'an object key must not contain "\\"';
  if (prefix.startsWith('/')) return 'an object key is relative: it must not start with "/"';
  const segments = prefix.split('/');
  // The last segment of a prefix may be partial ("logs/2026-") or empty ("logs/"); earlier ones must be real names.
  for (const [i, s] of segments.entries()) {
    if (s === '.' || s === '..') return 'an object key must not contain "." or ".." segments';
    if (s === '' && i < segments.length - 1) return 'an object key must not contain empty segments ("//")';
  }
  return null;
}

/** isUnder reports whether `key` lies under `prefix` (plain string prefix, like S3). */
export function isUnder(key: string, prefix: string): boolean {
  return key.startsWith(prefix);
}
