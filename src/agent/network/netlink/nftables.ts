// nftables set elements over nfnetlink, as one atomic batch (what `nft add/delete element` sends, without nft's parser
// or cache). Keys and values are encoded the way nft lays out its registers: each field of a concatenation starts on
// a 4-byte boundary and is zero-padded to it; interface names take IFNAMSIZ (16) bytes; marks are in host order.
import { endianness } from 'node:os';
import { attr, be32Attr, ipv4Bytes, macBytes, nested, NLM_F, strAttr, type NetlinkRequest } from './message.js';
import { NETLINK, NetlinkSocket } from './socket.js';

const NFNL_SUBSYS_NFTABLES = 10;
const NFNL_MSG_BATCH = { BEGIN: 0x10, END: 0x11 } as const;
const NFT_MSG = { NEWSETELEM: 12, DELSETELEM: 14 } as const;
const NFPROTO_INET = 1;
const LIST = { TABLE: 1, SET: 2, ELEMENTS: 3 } as const;
const NFTA_LIST_ELEM = 1;
const ELEM = { KEY: 1, DATA: 2 } as const;
const DATA = { VALUE: 1, VERDICT: 2 } as const;
const VERDICT = { CODE: 1, CHAIN: 2 } as const;
const NFT_JUMP = -3;
const IFNAMSIZ = 16;

/** Field is one typed part of a set key or map value. */
export type Field =
  | { readonly ifname: string }
  | { readonly ether: string }
  | { readonly ipv4: string }
  | { readonly proto: 'tcp' | 'udp' }
  | { readonly port: number }
  | { readonly mark: number };

/** SetElement is one element of a named set or map: its key fields and, for a map, a value or a jump verdict. */
export interface SetElement {
  readonly set: string;
  readonly key: readonly Field[];
  readonly value?: readonly Field[];
  readonly jump?: string;
}

/** encodeFields lays out fields as nft registers: each at a 4-byte boundary, zero-padded. */
export function encodeFields(fields: readonly Field[]): Buffer {
  return Buffer.concat(fields.map((f) => pad4(fieldBytes(f))));
}

function fieldBytes(f: Field): Buffer {
  if ('ifname' in f) {
    if (f.ifname.length === 0 || Buffer.byteLength(f.ifname) >= IFNAMSIZ) throw new Error(`bad interface name ${JSON.stringify(f.ifname)}`);
    const b = Buffer.alloc(IFNAMSIZ);
    b.write(f.ifname);
    return b;
  }
  if ('ether' in f) return macBytes(f.ether);
  if ('ipv4' in f) return ipv4Bytes(f.ipv4);
  if ('proto' in f) return Buffer.from([f.proto === 'tcp' ? 6 : 17]);
  if ('port' in f) {
    if (!Number.isInteger(f.port) || f.port < 0 || f.port > 65535) throw new Error(`bad port ${f.port}`);
    const b = Buffer.alloc(2);
    b.writeUInt16BE(f.port);
    return b;
  }
  const b = Buffer.alloc(4);
  if (endianness() === 'LE') b.writeUInt32LE(f.mark >>> 0);
  else b.writeUInt32BE(f.mark >>> 0);
  return b;
}

function pad4(b: Buffer): Buffer {
  const rem = b.length % 4;
  return rem === 0 ? b : Buffer.concat([b, Buffer.alloc(4 - rem)]);
}

/** NftSocket changes set elements of one `inet` table, in the agent's netns or, given its path, another one. */
export class NftSocket {
  private readonly socket: NetlinkSocket;

  constructor(private readonly table: string, netnsPath?: string) {
    this.socket = new NetlinkSocket(NETLINK.NETFILTER, netnsPath);
  }

  /**
   * change adds (or deletes) the elements in one transaction: all or none. Elements of the same set go in one
   * message. A refusal throws a NetlinkError (EEXIST: an element with that key already maps elsewhere; ENOENT on
   * delete). On the agent's thread (an assignment's request): see NetlinkSocket.exchangeSync.
   */
  change(verb: 'add' | 'delete', elements: readonly SetElement[]): void {
    this.socket.exchangeSync(...this.request(verb, elements));
  }

  /** changeAsync is change on the thread pool (a wipe's request). */
  async changeAsync(verb: 'add' | 'delete', elements: readonly SetElement[]): Promise<void> {
    await this.socket.exchange(...this.request(verb, elements));
  }

  // The batch that adds or deletes the elements: what it is about, and its builder.
  private request(verb: 'add' | 'delete', elements: readonly SetElement[]): [string, (r: NetlinkRequest) => void] {
    const bySet = new Map<string, SetElement[]>();
    for (const e of elements) bySet.set(e.set, [...(bySet.get(e.set) ?? []), e]);
    return [`nft ${verb} element inet ${this.table} ${[...bySet.keys()].join(', ')}`, (r) => {
      r.add(NFNL_MSG_BATCH.BEGIN, NLM_F.REQUEST, nfgen(0, NFNL_SUBSYS_NFTABLES));
      const type = (NFNL_SUBSYS_NFTABLES << 8) | (verb === 'add' ? NFT_MSG.NEWSETELEM : NFT_MSG.DELSETELEM);
      const flags = NLM_F.REQUEST | NLM_F.ACK | (verb === 'add' ? NLM_F.CREATE : 0);
      for (const [set, members] of bySet) {
        const list = members.map((e) => nested(NFTA_LIST_ELEM, [nested(ELEM.KEY, [attr(DATA.VALUE, encodeFields(e.key))]), ...(verb === 'add' ? elementData(e) : [])]));
        r.add(type, flags, nfgen(NFPROTO_INET, 0), [strAttr(LIST.TABLE, this.table), strAttr(LIST.SET, set), nested(LIST.ELEMENTS, list)]);
      }
      r.add(NFNL_MSG_BATCH.END, NLM_F.REQUEST, nfgen(0, NFNL_SUBSYS_NFTABLES));
    }];
  }

  /** close releases the socket. */
  close(): void {
    this.socket.close();
  }
}

function elementData(e: SetElement): Buffer[] {
  if (e.jump !== undefined) return [nested(ELEM.DATA, [nested(DATA.VERDICT, [be32Attr(VERDICT.CODE, NFT_JUMP), strAttr(VERDICT.CHAIN, e.jump)])])];
  if (e.value !== undefined) return [nested(ELEM.DATA, [attr(DATA.VALUE, encodeFields(e.value))])];
  return [];
}

// struct nfgenmsg: family, version (NFNETLINK_V0), resource id (network order).
function nfgen(family: number, resId: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt8(family, 0);
  b.writeUInt16BE(resId, 2);
  return b;
}
