/** Seeded generators for the API fuzz suite: the same seed and index give the same request, so a failure replays. */

/** Rng is sfc32, seeded from (seed, index): each request draws from its own stream. */
export class Rng {
  private a: number;
  private b: number;
  private c: number;
  private d: number;

  constructor(seed: number, index: number) {
    this.a = seed >>> 0;
    this.b = (index * 0x9e3779b9) >>> 0;
    this.c = 0x243f6a88 ^ index;
    this.d = 1;
    for (let i = 0; i < 16; i++) this.next();
  }

  /** next returns a float in [0, 1). */
  next(): number {
    const t = (((this.a + this.b) | 0) + this.d) | 0;
    this.d = (this.d + 1) | 0;
    this.a = this.b ^ (this.b >>> 9);
    this.b = (this.c + (this.c << 3)) | 0;
    this.c = (this.c << 21) | (this.c >>> 11);
    this.c = (this.c + t) | 0;
    return (t >>> 0) / 4294967296;
  }

  /** int returns an integer in [0, n). */
  int(n: number): number {
    return Math.floor(this.next() * n);
  }

  /** chance is true with probability p. */
  chance(p: number): boolean {
    return this.next() < p;
  }

  /** pick returns one element. */
  pick<T>(xs: readonly T[]): T {
    return xs[this.int(xs.length)]!;
  }

  /** weighted picks by weight. */
  weighted<T>(choices: ReadonlyArray<readonly [number, T]>): T {
    let r = this.next() * choices.reduce((s, [w]) => s + w, 0);
    for (const [w, v] of choices) if ((r -= w) < 0) return v;
    return choices[choices.length - 1]![1];
  }

  /** hex returns n random hex digits. */
  hex(n: number): string {
    let s = '';
    while (s.length < n) s += this.int(16).toString(16);
    return s;
  }

  /** bytes returns n random bytes. */
  bytes(n: number): Buffer {
    const b = Buffer.alloc(n);
    for (let i = 0; i < n; i++) b[i] = this.int(256);
    return b;
  }
}

/** JUNK are hostile fragments for path segments, query values, keys and header values. None names a file of this
 *  repository or host, so that a response echoing them cannot be mistaken for a leaked internal path. */
export const JUNK: readonly string[] = [
  '', ' ', '%', '%Z', '%ZZ', '%0', '%00', '%0a', '%0d%0a', '%20', '%2e', '%2e%2e', '%2E%2E%2F', '%2f', '%5c', '%25', '%25ZZ',
  '%c0%af', '%c0%ae', '%ff', '%fe%ff', '%ed%a0%80', '%e2%80%ae', '%f0%9f%92%a9', '%u0041', '..', '.', '...', '..%2f', '%2e./',
  '\\', '..\\..\\', "'", '"', '`', '<script>', '${jndi:x}', '{{7*7}}', '%n%s%x', 'NaN', '-1', '0', '1e309', '-0', '0x10',
  '9'.repeat(40), 'null', 'undefined', 'true', '[]', '{}', '__proto__', 'constructor', 'prototype', 'hasOwnProperty', '*', ';', ',',
  '&', '=', '+', '~', '@', ':', '!', '$', '(', ')', 'é', 'Ω', '中文', '💩', '\u202e', '\ufeff', '\u0000', '\t', 'a'.repeat(101),
  'x'.repeat(1500), 'job_' + '0'.repeat(24), 'ws_nope', 'key_nope', 'crk_nope', 'CON', 'NUL', 'fuzz/', 'fuzz/../canary',
];

/** junk returns one hostile fragment, sometimes combined with another. */
export function junk(rng: Rng): string {
  const a = rng.pick(JUNK);
  return rng.chance(0.2) ? a + rng.pick(JUNK) : a;
}

/** randomJson builds a random JSON value up to `depth` levels deep; keys are drawn from `keys` and junk. */
export function randomJson(rng: Rng, depth: number, keys: readonly string[] = []): unknown {
  const kind = depth <= 0 ? rng.int(5) : rng.int(7);
  switch (kind) {
    case 0:
      return null;
    case 1:
      return rng.chance(0.5);
    case 2:
      return rng.pick([0, -1, 1, 0.5, 1e308, -1e308, 2 ** 53 + 1, 64, 65, 1024, 3600, 7 * 24 * 3600 + 1, Number.MIN_VALUE]);
    case 3:
      return junk(rng);
    case 4:
      return rng.hex(rng.int(12));
    case 5:
      return Array.from({ length: rng.int(5) }, () => randomJson(rng, depth - 1, keys));
    default: {
      const o: Record<string, unknown> = {};
      for (let i = rng.int(5); i > 0; i--) o[rng.chance(0.6) && keys.length ? rng.pick(keys) : junk(rng)] = randomJson(rng, depth - 1, keys);
      return o;
    }
  }
}

/** deepNesting returns JSON text nested `n` levels deep (arrays or objects), optionally inside `key` of an object. */
export function deepNesting(rng: Rng, n: number, key?: string): string {
  const inner = rng.chance(0.5) ? '['.repeat(n) + ']'.repeat(n) : '{"a":'.repeat(n) + '1' + '}'.repeat(n);
  return key ? `{"${key}":${inner}}` : inner;
}

/** INVALID_UTF8 are byte sequences no UTF-8 decoder accepts. */
const INVALID_UTF8 = [[0xff], [0xc3, 0x28], [0xa0, 0xa1], [0xe2, 0x28, 0xa1], [0xf0, 0x28, 0x8c, 0x28], [0xed, 0xa0, 0x80], [0xc0, 0xaf], [0xf8, 0x88, 0x80, 0x80, 0x80]];

/** withInvalidUtf8 inserts invalid UTF-8 into `text` (inside a string literal when there is one). */
export function withInvalidUtf8(rng: Rng, text: string): Buffer {
  const q = text.indexOf('"', text.indexOf(':') + 1);
  const at = q >= 0 ? q + 1 : rng.int(text.length + 1);
  return Buffer.concat([Buffer.from(text.slice(0, at)), Buffer.from(rng.pick(INVALID_UTF8)), Buffer.from(text.slice(at))]);
}

/** mutatePath damages a request path in one of many ways (percent junk, traversal, long segments, unicode, case…). */
export function mutatePath(rng: Rng, path: string): string {
  const segs = path.split('/');
  const i = 1 + rng.int(Math.max(1, segs.length - 1));
  switch (rng.int(14)) {
    case 0:
      segs[i] = junk(rng);
      return segs.join('/');
    case 1:
      segs.splice(i, 0, junk(rng));
      return segs.join('/');
    case 2:
      return path + rng.pick(['/', '//', '/.', '/..', '/../..', '/%2e%2e', '/./', ';x=1', '%3F', '%23', '#frag', '?', '??', '&']);
    case 3:
      return '/' + path.replace(/\//g, () => (rng.chance(0.3) ? '//' : '/'));
    case 4:
      return path.toUpperCase();
    case 5:
      return path.replace(/[a-z]/g, (c) => (rng.chance(0.3) ? `%${c.charCodeAt(0).toString(16)}` : c));
    case 6:
      segs[i] = 'a'.repeat(rng.pick([99, 100, 101, 255, 1024, 4096, 8000, 16_300, 17_000]));
      return segs.join('/');
    case 7:
      return rng.pick(['/', '', '*', '/v1', '/v1/', '/v2/jobs', '/.well-known/', '/openapi.json/..', '/v1/data', '/v1/data/objects/', '/favicon.ico', '/index.html']);
    case 8:
      return `/../..${path}`;
    case 9:
      segs[i] = `${segs[i] ?? ''}${rng.pick(['%00', '\u0000', '%0d%0aX-Injected: 1', '\r\nX-Injected: 1', ' HTTP/1.1', '\t'])}`;
      return segs.join('/');
    case 10:
      segs[i] = rng.pick(['é', 'Ω', '中文', '💩', '\u202e', '%C3%A9', '%E4%B8%AD', '\ufeff', '\ud83d']);
      return segs.join('/');
    case 11:
      return path + '/' + Array.from({ length: 1 + rng.int(60) }, () => rng.hex(3)).join('/');
    case 12:
      return `https://localhost${path}`;
    default:
      return segs.map((s) => (rng.chance(0.5) ? encodeURIComponent(s) : s)).join('/');
  }
}
