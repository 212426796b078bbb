// The agent's decoder of cell output refuses malformed or oversized frames and survives arbitrary chunking.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { encodeAssignment, encodeFile, encodeStart, FrameDecoder, MAX_FRAME_BYTES } from '../../src/agent/cells/frames.js';
import { assignmentBytes, MAX_ASSIGNMENT_BYTES, MAX_CELL_FILE_BYTES } from '../../src/shared/wire.js';
import { REPO_ROOT } from '../support/cluster.js';

function frame(type: string, data: string | Buffer): Buffer {
  const body = Buffer.from(data);
  const h = Buffer.alloc(5);
  h.write(type, 0, 'latin1');
  h.writeUInt32LE(body.length, 1);
  return Buffer.concat([h, body]);
}

test('frames decode across arbitrary chunk boundaries', () => {
  const stream = Buffer.concat([frame('s', '7'), frame('o', 'hello'), frame('e', 'oops'), frame('x', 'code 3')]);
  for (let step = 1; step <= stream.length; step++) {
    const d = new FrameDecoder();
    const out = [];
    for (let i = 0; i < stream.length; i += step) out.push(...d.push(stream.subarray(i, i + step)));
    assert.deepEqual(
      out.map((f) => f.type),
      ['started', 'stdout', 'stderr', 'exit'],
    );
    assert.deepEqual(out[3], { type: 'exit', code: 3, signal: null });
    assert.equal(d.pending, false);
  }
});

test('exit by signal decodes as a signal', () => {
  assert.deepEqual(new FrameDecoder().push(frame('x', 'signal 9')), [{ type: 'exit', code: null, signal: 9 }]);
});

test('hostile frames are refused', () => {
  assert.throws(() => new FrameDecoder().push(frame('?', 'x')), /unknown cell frame/);
  assert.throws(() => new FrameDecoder().push(frame('x', 'code -1')), /malformed exit/);
  assert.throws(() => new FrameDecoder().push(frame('s', '12abc')), /malformed started/);
  const huge = Buffer.alloc(5);
  huge.write('o', 0, 'latin1');
  huge.writeUInt32LE(MAX_FRAME_BYTES + 1, 1);
  assert.throws(() => new FrameDecoder().push(huge), /too large/);
});

test('an assignment carries argv, env and cwd as NUL-separated strings', () => {
  const b = encodeAssignment(['echo', 'a b'], { A: '1' }, '/work');
  assert.equal(b.subarray(0, 4).toString(), 'CRA1');
  assert.equal(b.readUInt32LE(4), b.length - 8);
  assert.equal(b.readUInt32LE(8), 2);
  assert.equal(b.readUInt32LE(12), 1);
  assert.equal(b.subarray(16).toString(), '/work\0echo\0a b\0A=1\0');
  assert.throws(() => encodeAssignment(['a\0b'], {}, '/work'), /NUL/);
});

test('the start message is an empty CRS1 message; files are CRF1 with mode and name', () => {
  assert.deepEqual([...encodeStart()], [...Buffer.from('CRS1'), 0, 0, 0, 0]);
  const f = encodeFile('token', 0o400, 'abc');
  assert.equal(f.subarray(0, 4).toString(), 'CRF1');
  assert.equal(f.readUInt32LE(4), f.length - 8);
  assert.equal(f.readUInt32LE(8), 0o400);
  assert.equal(f.subarray(12).toString(), 'token\0abc');
  assert.throws(() => encodeFile('.hidden', 0o400, ''), /bad cell file name/);
});

test('the size limits of the cell protocol are the same on both sides (wire.ts and cell-init.c)', () => {
  const c = readFileSync(join(REPO_ROOT, 'native/cell-init/cell-init.c'), 'utf8');
  const define = (name: string) => {
    const m = new RegExp(`#define ${name} \\((\\d+)u(?: << (\\d+)| \\* (\\d+))\\)`).exec(c);
    assert.ok(m, `cell-init.c defines ${name}`);
    return m[2] ? Number(m[1]) << Number(m[2]) : Number(m[1]) * Number(m[3]);
  };
  assert.equal(define('MAX_ASSIGNMENT'), MAX_ASSIGNMENT_BYTES);
  assert.equal(define('MAX_FILE'), MAX_CELL_FILE_BYTES);
  // What the control plane counts is what the agent encodes.
  const command = ['sh', '-c', 'echo é'];
  const env = { A: '1', LONG: 'x'.repeat(1000) };
  assert.equal(assignmentBytes(command, env, '/work/dir'), encodeAssignment(command, env, '/work/dir').length - 8);
});
