// The agent's decoder of cell output refuses malformed or oversized frames and survives arbitrary chunking.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { encodeAssignment, encodeFile, encodeStart, FrameDecoder, MAX_FRAME_BYTES } from '../../src/agent/cells/frames.js';
import { assignmentBytes, MAX_ASSIGNMENT_BYTES, MAX_CELL_FILE_BYTES } from '../../src/shared/wire.js';
import { REPO_ROOT } from '../support/cluster.js';
import { seeded } from '../support/seeded.js';

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

test('the size limits of the cell protocol are the same on both sides (wire.ts and cell-init.h)', () => {
  const c = readFileSync(join(REPO_ROOT, 'native/cell-init/cell-init.h'), 'utf8');
  const define = (name: string) => {
    const m = new RegExp(`#define ${name} \\((\\d+)u(?: << (\\d+)| \\* (\\d+))\\)`).exec(c);
    assert.ok(m, `cell-init.h defines ${name}`);
    return m[2] ? Number(m[1]) << Number(m[2]) : Number(m[1]) * Number(m[3]);
  };
  assert.equal(define('MAX_ASSIGNMENT'), MAX_ASSIGNMENT_BYTES);
  assert.equal(define('MAX_FILE'), MAX_CELL_FILE_BYTES);
  // What the control plane counts is what the agent encodes.
  const command = ['sh', '-c', 'echo é'];
  const env = { A: '1', LONG: 'x'.repeat(1000) };
  assert.equal(assignmentBytes(command, env, '/work/dir'), encodeAssignment(command, env, '/work/dir').length - 8);
});


const DECODER_ERRORS = /^(cell frame too large: \d+ bytes|unknown cell frame type ".*"|malformed (exit|started|process exit) frame|malformed process exit|short sandbox frame ".*"|bad output stream|cell stream already refused: .*)$/s;

/** fuzzStream makes a byte stream: valid frames, frames with hostile fields, and raw garbage, in a random mix. */
function fuzzStream(rand: () => number): Buffer {
  const int = (n: number) => Math.floor(rand() * n);
  const parts: Buffer[] = [];
  const count = 1 + int(8);
  for (let i = 0; i < count; i++) {
    const pick = int(10);
    if (pick < 4) {
      const type = 'oesxE'[int(5)]!;
      const body = type === 's' ? String(int(1e6)) : type === 'x' ? (rand() < 0.5 ? `code ${int(300)}` : `signal ${int(70)}`) : Buffer.from(Array.from({ length: int(300) }, () => int(256)));
      parts.push(frame(type, body));
    } else if (pick < 6) {
      parts.push(frame(String.fromCharCode(int(256)), Buffer.from(Array.from({ length: int(64) }, () => int(256)))));
    } else if (pick < 8) {
      // A header announcing a length near or over the limit, followed by less (or more) than it announces.
      const h = Buffer.alloc(5);
      h.write('oesxE?'[int(6)]!, 0, 'latin1');
      h.writeUInt32LE([MAX_FRAME_BYTES, MAX_FRAME_BYTES + 1, 0xffffffff, int(2 ** 32), MAX_FRAME_BYTES - int(10)][int(5)]!, 1);
      parts.push(h, Buffer.alloc(int(2000), int(256)));
    } else {
      parts.push(Buffer.from(Array.from({ length: int(200) }, () => int(256))));
    }
  }
  return Buffer.concat(parts);
}

test('fuzz: any byte stream in any chunking yields frames or the decoder\'s own error, and never more than one frame buffered', () => {
  const seed = Number(process.env.CLEANROOM_FUZZ_SEED ?? 20_240_601);
  const rand = seeded(seed);
  const int = (n: number) => Math.floor(rand() * n);
  let streams = 0;
  let refusedStreams = 0;
  let frames = 0;
  for (; streams < 10_000; streams++) {
    const stream = fuzzStream(rand);
    const d = new FrameDecoder();
    let refused = false;
    for (let i = 0; i < stream.length; ) {
      const step = [1, 2, 5, 7, 64, 4096][int(6)]! + int(3);
      const chunk = stream.subarray(i, i + step);
      i += step;
      try {
        frames += d.push(chunk).length;
      } catch (e) {
        assert.ok(e instanceof Error && e.constructor === Error, `seed ${seed}, stream ${streams}: threw ${String(e)}`);
        assert.match(e.message, DECODER_ERRORS, `seed ${seed}, stream ${streams}`);
        refused = true;
      }
      assert.ok(d.bufferedBytes <= MAX_FRAME_BYTES + 5, `seed ${seed}, stream ${streams}: ${d.bufferedBytes} bytes buffered`);
      if (refused) {
        // Once refused, it stays refused and holds nothing.
        assert.throws(() => d.push(Buffer.from('o\x01\x00\x00\x00x', 'latin1')), /already refused/);
        assert.equal(d.bufferedBytes, 0);
        break;
      }
    }
    if (refused) refusedStreams++;
  }
  // The mix exercised both outcomes.
  assert.ok(refusedStreams > 1000 && refusedStreams < streams, `${refusedStreams} of ${streams} streams refused`);
  assert.ok(frames > 1000, `${frames} frames decoded`);
});

test('a partial frame of the largest size is held whole, and no more', () => {
  const d = new FrameDecoder();
  const big = frame('o', Buffer.alloc(MAX_FRAME_BYTES, 1));
  assert.deepEqual(d.push(big.subarray(0, big.length - 1)), []);
  assert.equal(d.bufferedBytes, MAX_FRAME_BYTES + 4);
  const out = d.push(big.subarray(big.length - 1));
  assert.equal(out.length, 1);
  assert.equal(d.bufferedBytes, 0);
  assert.throws(() => new FrameDecoder().push(frame('x', 'code 256')), /malformed exit/);
});
