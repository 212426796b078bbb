// The byte protocol between the agent and a sandbox's supervisor: every request encodes as cell init reads it, every
// frame decodes (or is refused), and the limits agree on both sides (init-codec.ts, wire.ts and native/cell-init).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import {
  decodeEntries,
  decodeSandboxFrame,
  encodeCredit,
  encodeFileData,
  encodeFileOp,
  encodeFlow,
  encodeProcStart,
  encodeResize,
  encodeSandboxAssignment,
  encodeSignal,
  encodeStdin,
  fileErrorCode,
  FILE_OPS,
  INIT_CHUNK_BYTES,
  MAX_INIT_OPS,
  MAX_INIT_PROCS,
  procErrorCode,
} from '../../src/agent/sandbox/init-codec.js';
import { FrameDecoder } from '../../src/agent/cells/frames.js';
import { MAX_FILE_OPS_PER_SANDBOX, MAX_LIST_ENTRIES, MAX_PROCS_PER_SANDBOX } from '../../src/shared/wire.js';
import { REPO_ROOT } from '../support/cluster.js';

function frame(type: string, data: Buffer): Buffer {
  const h = Buffer.alloc(5);
  h.write(type, 0, 'latin1');
  h.writeUInt32LE(data.length, 1);
  return Buffer.concat([h, data]);
}
const u32 = (...v: number[]) => Buffer.from(new Uint32Array(v).buffer);

test('requests encode as magic, length and the fields cell init reads', () => {
  assert.deepEqual([...encodeSandboxAssignment()], [...Buffer.from('CRB1'), 0, 0, 0, 0]);
  const p = encodeProcStart({ id: 7, argv: ['sh', '-c', 'echo é'], env: { A: '1' }, cwd: '/work', pty: { cols: 80, rows: 24 }, stdin: false });
  assert.equal(p.subarray(0, 4).toString(), 'CRP1');
  assert.equal(p.readUInt32LE(4), p.length - 8);
  assert.deepEqual([p.readUInt32LE(8), p.readUInt32LE(12), p.readUInt16LE(16), p.readUInt16LE(18), p.readUInt32LE(20), p.readUInt32LE(24)], [7, 3, 80, 24, 3, 1]);
  assert.equal(p.subarray(28).toString(), '/work\0sh\0-c\0echo é\0A=1\0');
  assert.equal(encodeProcStart({ id: 1, argv: ['x'], env: {}, cwd: '/', pty: null, stdin: true }).readUInt32LE(12), 2);
  assert.throws(() => encodeProcStart({ id: 1, argv: ['a\0b'], env: {}, cwd: '/', pty: null, stdin: false }), /NUL/);
  assert.equal(encodeStdin(3, Buffer.from('hi')).toString('latin1'), 'CRI1\x06\0\0\0\x03\0\0\0hi');
  assert.equal(encodeStdin(3, null).toString('latin1'), 'CRC1\x04\0\0\0\x03\0\0\0');
  assert.equal(encodeSignal(3, 15).toString('latin1'), 'CRK1\x08\0\0\0\x03\0\0\0\x0f\0\0\0');
  assert.equal(encodeResize(3, 132, 43).toString('latin1'), 'CRZ1\x08\0\0\0\x03\0\0\0\x84\0\x2b\0');
  assert.equal(encodeFlow(3, true).toString('latin1'), 'CRW1\x08\0\0\0\x03\0\0\0\x01\0\0\0');
  const op = encodeFileOp({ id: 9, op: 'rename', path: '/a', to: '/b', recursive: true, mode: 0o600, credit: 65536 });
  assert.equal(op.subarray(0, 4).toString(), 'CRO1');
  assert.deepEqual([9, FILE_OPS.rename, 1, 0o600, 65536].map((_, i) => op.readUInt32LE(8 + 4 * i)), [9, 7, 1, 0o600, 65536]);
  assert.equal(op.subarray(28).toString(), '/a\0/b\0');
  assert.throws(() => encodeFileOp({ id: 9, op: 'stat', path: '/a\0', to: '', recursive: false, mode: 0, credit: 0 }), /NUL/);
  assert.equal(encodeFileData(9, null).toString('latin1'), 'CRE1\x04\0\0\0\x09\0\0\0');
  assert.equal(encodeFileData(9, Buffer.from('x')).toString('latin1'), 'CRD1\x05\0\0\0\x09\0\0\0x');
  assert.equal(encodeCredit(9, 10).toString('latin1'), 'CRG1\x08\0\0\0\x09\0\0\0\x0a\0\0\0');
});

test('supervisor frames decode through the cell decoder; short or malformed ones are refused', () => {
  const d = new FrameDecoder();
  const out = d.push(
    Buffer.concat([
      frame('R', Buffer.alloc(0)),
      frame('P', u32(1, 42)),
      frame('O', Buffer.concat([u32(1), Buffer.from([3]), Buffer.from('tty')])),
      frame('W', u32(1, 5, 1)),
      frame('X', u32(1, 1, 9)),
      frame('F', u32(2, 2, 0)),
      frame('D', Buffer.concat([u32(4), Buffer.from('data')])),
      frame('A', u32(4, 100)),
      frame('r', u32(4, 28)),
    ]),
  );
  assert.deepEqual(out, [
    { type: 'ready' },
    { type: 'proc.started', id: 1, pid: 42 },
    { type: 'proc.output', id: 1, stream: 'pty', data: Buffer.from('tty') },
    { type: 'proc.stdin', id: 1, taken: 5, closed: true },
    { type: 'proc.exited', id: 1, code: null, signal: 9 },
    { type: 'proc.failed', id: 2, errno: 2, stage: 0 },
    { type: 'file.data', id: 4, data: Buffer.from('data') },
    { type: 'file.taken', id: 4, bytes: 100 },
    { type: 'file.result', id: 4, errno: 28 },
  ]);
  assert.throws(() => new FrameDecoder().push(frame('P', u32(1))), /short sandbox frame/);
  assert.throws(() => new FrameDecoder().push(frame('O', Buffer.concat([u32(1), Buffer.from([9])]))), /bad output stream/);
  assert.throws(() => new FrameDecoder().push(frame('X', u32(1, 0, 256))), /malformed process exit/);
  assert.equal(decodeSandboxFrame('?', Buffer.alloc(0)), null);
});

test('stat entries decode, a truncation marker ends a list, a malformed tail is dropped', () => {
  const entry = (type: number, name: string, size: number) => {
    const n = Buffer.from(name);
    const b = Buffer.alloc(23);
    b[0] = type;
    b.writeUInt32LE(0o100644, 1);
    b.writeBigUInt64LE(BigInt(size), 5);
    b.writeBigUInt64LE(1_700_000_000_123n, 13);
    b.writeUInt16LE(n.length, 21);
    return Buffer.concat([b, n]);
  };
  const { entries, truncated } = decodeEntries(Buffer.concat([entry(1, 'a.txt', 5), entry(2, 'dir', 4096), Buffer.from([0xff])]));
  assert.equal(truncated, true);
  assert.deepEqual(entries, [
    { type: 'file', name: 'a.txt', size: 5, mode: 0o644, mtimeMs: 1_700_000_000_123 },
    { type: 'directory', name: 'dir', size: 4096, mode: 0o644, mtimeMs: 1_700_000_000_123 },
  ]);
  assert.deepEqual(decodeEntries(Buffer.concat([entry(3, 'l', 1), entry(9, 'bad', 1)])).entries.map((e) => e.type), ['symlink']);
  assert.deepEqual(decodeEntries(entry(1, 'cut', 1).subarray(0, 20)).entries, []);
});

test('errnos map to stable codes', () => {
  assert.deepEqual([2, 17, 20, 21, 13, 1, 30, 28, 122, 40, 36, 22, 39, 11, 5].map(fileErrorCode), [
    'not_found', 'exists', 'not_a_directory', 'is_a_directory', 'permission_denied', 'permission_denied', 'permission_denied',
    'no_space', 'no_space', 'invalid_path', 'invalid_path', 'invalid_path', 'not_empty', 'too_many_operations', 'io_error',
  ]);
  assert.deepEqual([[2, 0], [13, 0], [2, 1], [11, 3], [12, 3], [22, 5]].map(([e, s]) => procErrorCode(e!, s!)), ['command_not_found', 'permission_denied', 'invalid_cwd', 'too_many_processes', 'start_failed', 'start_failed']);
});

test('the limits of the supervisor are the same on both sides (init-codec.ts, wire.ts and cell-init.h)', () => {
  const h = readFileSync(join(REPO_ROOT, 'native/cell-init/cell-init.h'), 'utf8');
  const define = (name: string) => {
    const m = new RegExp(`#define ${name} \\(?(\\d+)u?(?: \\* (\\d+)\\))?`).exec(h);
    assert.ok(m, `cell-init.h defines ${name}`);
    return Number(m[1]) * (m[2] ? Number(m[2]) : 1);
  };
  assert.equal(define('IO_CHUNK'), INIT_CHUNK_BYTES);
  assert.equal(define('MAX_PROCS'), MAX_INIT_PROCS);
  assert.equal(define('MAX_PROCS'), MAX_PROCS_PER_SANDBOX);
  assert.equal(define('MAX_OPS'), MAX_INIT_OPS);
  assert.equal(define('MAX_OPS'), MAX_FILE_OPS_PER_SANDBOX);
  assert.equal(define('MAX_LIST'), MAX_LIST_ENTRIES);
  const fops = readFileSync(join(REPO_ROOT, 'native/cell-init/file-ops.c'), 'utf8');
  for (const [name, n] of Object.entries(FILE_OPS)) assert.match(fops, new RegExp(`FOP_${name.toUpperCase()} = ${n}\\b`));
});
