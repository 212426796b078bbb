// jsonTextArray makes the text[] literal pg itself would make of JSON texts (pg's prepareValue), natively.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createRequire } from 'node:module';
import { jsonTextArray } from '../../src/control/store/pg-json-array.js';

const { prepareValue } = createRequire(import.meta.url)('pg/lib/utils.js') as { prepareValue: (v: unknown) => string };

test('the same literal as pg makes, for JSON texts and pieces of them', () => {
  const docs = [
    JSON.stringify({ id: 'job_1', message: 'line "quoted" \\ back\nslash \u2028 \u0001 żółw ✓', list: [1, null, true], lone: '\ud800' }),
    JSON.stringify('plain'),
    '{"actor":"key:k1","details":{"a":"\\"x\\""},"seq":',
    ',"subject":null,"time":"2026-12-05T18:00:00.000Z"}',
    '',
  ];
  assert.equal(jsonTextArray(docs), prepareValue(docs));
  assert.equal(jsonTextArray([]), prepareValue([]));
});

test('an element that is not a string throws instead of being written as a word', () => {
  for (const bad of [undefined, null, 1, {}]) {
    assert.throws(() => jsonTextArray(['{}', bad as unknown as string]), /element 1 is .*not a JSON text/);
  }
});
