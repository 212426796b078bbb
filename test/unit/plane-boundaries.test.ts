// The planes stay apart: a plane imports another only through the shared code (and, for the CLI, the SDK and the
// process supervisor). The supervisor and tools are composition roots: they wire planes together and may import any.
// Checked on the TypeScript sources, so a stray import fails the suite with the file and the line that crossed.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

/** The repository (this file runs as dist/test/unit/plane-boundaries.test.js). */
const REPO_ROOT = fileURLToPath(new URL('../../..', import.meta.url));
const SRC = join(REPO_ROOT, 'src');

/** MAY_IMPORT lists, per top-level directory of src/, the others it may import from ('*': any). */
const MAY_IMPORT: Record<string, readonly string[] | '*'> = {
  shared: [],
  sdk: ['shared'],
  console: ['shared', 'sdk'],
  agent: ['shared'],
  control: ['shared'],
  cli: ['shared', 'sdk', 'supervisor'],
  supervisor: '*',
  tools: '*',
};

function* sources(dir: string): Generator<string> {
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    if (e.isDirectory()) yield* sources(p);
    else if (e.name.endsWith('.ts')) yield p;
  }
}

/** crossings lists every relative import that leaves its plane for one it may not use (or leaves src/). */
function crossings(): string[] {
  const out: string[] = [];
  for (const file of sources(SRC)) {
    const plane = relative(SRC, file).split('/')[0]!;
    const allowed = MAY_IMPORT[plane];
    if (allowed === undefined) {
      out.push(`${relative(REPO_ROOT, file)}: src/${plane} has no rule in MAY_IMPORT`);
      continue;
    }
    const lines = readFileSync(file, 'utf8').split('\n');
    lines.forEach((line, i) => {
      for (const m of line.matchAll(/(?:\bfrom\s+|\bimport\s*\(\s*|^import\s+)'(\.{1,2}\/[^']+)'/g)) {
        const target = relative(SRC, resolve(dirname(file), m[1]!));
        const to = target.startsWith('..') ? 'outside src/' : target.split('/')[0]!;
        const ok = to === plane || (to !== 'outside src/' && (allowed === '*' || allowed.includes(to)));
        if (ok) continue;
        out.push(`${relative(REPO_ROOT, file)}:${i + 1}: ${plane} imports ${to} (${m[1]})`);
      }
    });
  }
  return out;
}

test('planes import each other only through shared code, the SDK or a composition root', () => {
  assert.deepEqual(crossings(), []);
});

test('every plane of src/ has a rule', () => {
  const planes = readdirSync(SRC, { withFileTypes: true }).filter((e) => e.isDirectory()).map((e) => e.name);
  assert.deepEqual(planes.filter((p) => !(p in MAY_IMPORT)), []);
});
