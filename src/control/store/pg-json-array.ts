/**
 * jsonTextArray renders strings that are JSON texts (or pieces of JSON.stringify output) as a PostgreSQL text[] literal,
 * for a `$n::text[]` parameter. pg renders a JS array of strings by escaping each element with two regular-expression
 * passes; for a string holding no control character and no lone surrogate (JSON.stringify escapes every one of them),
 * the element pg would write ("…" with \ and " escaped) is exactly JSON.stringify of the string, which V8 makes in
 * native code: the same literal, a few times cheaper for job documents. Precondition: every value is such a string.
 * A value that is not a string throws (JSON.stringify(undefined) is no text, and would be stored as the word `undefined`
 * in an append-only table).
 */
export function jsonTextArray(values: readonly string[]): string {
  let out = '{';
  for (let i = 0; i < values.length; i++) {
    const v: unknown = values[i];
    if (typeof v !== 'string') throw new TypeError(`jsonTextArray: element ${i} is ${v === null ? 'null' : typeof v}, not a JSON text`);
    out += (i > 0 ? ',' : '') + JSON.stringify(v);
  }
  return `${out}}`;
}
