// Netlink wire format (netlink(7)): 16-byte message headers, 4-byte aligned type-length-value attributes, and the
// kernel's answers (NLMSG_ERROR: an errno, 0 for an ack). Pure encoding and decoding; the socket is in socket.ts.

/** NLM_F_* request flags (include/uapi/linux/netlink.h). */
export const NLM_F = { REQUEST: 0x1, ACK: 0x4, REPLACE: 0x100, EXCL: 0x200, CREATE: 0x400 } as const;

const NLMSG_ERROR = 2;
const NLMSG_DONE = 3;
const NLA_F_NESTED = 0x8000;
const HEADER = 16;

const align4 = (n: number): number => (n + 3) & ~3;

/** attr encodes one attribute: type, then the payload padded to 4 bytes. */
export function attr(type: number, payload: Buffer): Buffer {
  const out = Buffer.alloc(align4(4 + payload.length));
  out.writeUInt16LE(4 + payload.length, 0);
  out.writeUInt16LE(type, 2);
  payload.copy(out, 4);
  return out;
}

/** nested encodes an attribute holding other attributes. */
export function nested(type: number, children: readonly Buffer[]): Buffer {
  return attr(type | NLA_F_NESTED, Buffer.concat(children));
}

/** strAttr encodes a NUL-terminated string attribute. */
export function strAttr(type: number, value: string): Buffer {
  return attr(type, Buffer.from(`${value}\0`));
}

/** u32Attr encodes a host-order 32-bit attribute. */
export function u32Attr(type: number, value: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(value >>> 0);
  return attr(type, b);
}

/** be32Attr encodes a network-order 32-bit attribute. */
export function be32Attr(type: number, value: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(value >>> 0);
  return attr(type, b);
}

/** ipv4Bytes returns the 4 network-order bytes of a dotted-quad address; throws on anything else. */
export function ipv4Bytes(address: string): Buffer {
  const parts = address.split('.');
  if (parts.length !== 4 || !parts.every((p) => /^\d{1,3}$/.test(p) && Number(p) <= 255)) throw new Error(`not an IPv4 address: ${address}`);
  return Buffer.from(parts.map(Number));
}

/** macBytes returns the 6 bytes of a colon-separated MAC address; throws on anything else. */
export function macBytes(mac: string): Buffer {
  if (!/^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/i.test(mac)) throw new Error(`not a MAC address: ${mac}`);
  return Buffer.from(mac.replaceAll(':', ''), 'hex');
}

/** NetlinkRequest accumulates messages with consecutive sequence numbers, to send in one write. */
export class NetlinkRequest {
  private readonly parts: Buffer[] = [];
  private readonly acked: number[] = [];
  private next: number;

  constructor(firstSeq: number) {
    this.next = firstSeq >>> 0;
  }

  /** add appends a message (fixed header `body`, then attributes) and returns its sequence number. */
  add(type: number, flags: number, body: Buffer, attrs: readonly Buffer[] = []): number {
    const seq = this.next;
    this.next = (this.next + 1) >>> 0;
    const payload = Buffer.concat([body, Buffer.alloc(align4(body.length) - body.length), ...attrs]);
    const header = Buffer.alloc(HEADER);
    header.writeUInt32LE(HEADER + payload.length, 0);
    header.writeUInt16LE(type, 4);
    header.writeUInt16LE(flags, 6);
    header.writeUInt32LE(seq, 8);
    this.parts.push(header, payload);
    if (flags & NLM_F.ACK) this.acked.push(seq);
    return seq;
  }

  /** bytes is the whole request. */
  get bytes(): Buffer {
    return Buffer.concat(this.parts);
  }

  /** ackedSeqs are the sequence numbers that asked for an ack, in order. */
  get ackedSeqs(): readonly number[] {
    return this.acked;
  }

  /** nextSeq is the sequence number the next message would get. */
  get nextSeq(): number {
    return this.next;
  }
}

/** NetlinkMessage is one decoded message of an answer. */
export interface NetlinkMessage {
  readonly type: number;
  readonly seq: number;
  /** The bytes after the 16-byte header. */
  readonly payload: Buffer;
}

/** parseMessages splits a buffer of received datagrams into messages. */
export function parseMessages(buf: Buffer): NetlinkMessage[] {
  const out: NetlinkMessage[] = [];
  for (let off = 0; off + HEADER <= buf.length; ) {
    const len = buf.readUInt32LE(off);
    if (len < HEADER || off + len > buf.length) throw new Error(`malformed netlink message at ${off} (length ${len})`);
    out.push({ type: buf.readUInt16LE(off + 4), seq: buf.readUInt32LE(off + 8), payload: buf.subarray(off + HEADER, off + len) });
    off += align4(len);
  }
  return out;
}

/** answerErrors maps each answered sequence number to its errno (0 = success), from NLMSG_ERROR and NLMSG_DONE messages. */
export function answerErrors(messages: readonly NetlinkMessage[]): Map<number, number> {
  const out = new Map<number, number>();
  for (const m of messages) {
    if (m.type === NLMSG_ERROR) out.set(m.seq, Math.abs(m.payload.readInt32LE(0)));
    else if (m.type === NLMSG_DONE) out.set(m.seq, 0);
  }
  return out;
}

/** attrsOf decodes the attributes in `buf` (a message payload after its fixed header) into type → payload. */
export function attrsOf(buf: Buffer): Map<number, Buffer> {
  const out = new Map<number, Buffer>();
  for (let off = 0; off + 4 <= buf.length; ) {
    const len = buf.readUInt16LE(off);
    if (len < 4 || off + len > buf.length) break;
    out.set(buf.readUInt16LE(off + 2) & ~NLA_F_NESTED, buf.subarray(off + 4, off + len));
    off += align4(len);
  }
  return out;
}
