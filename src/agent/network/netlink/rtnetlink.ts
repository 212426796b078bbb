// The few rtnetlink requests a cell's network needs (rtnetlink(7)): bring links up and find their indices, and replace an
// IPv4 address, a static neighbour or a route — what `ip link/address/neigh/route` would send.
import { attr, attrsOf, ipv4Bytes, macBytes, NLM_F, strAttr, u32Attr } from './message.js';
import { NETLINK, NetlinkError, NetlinkSocket } from './socket.js';

const RTM = { NEWLINK: 16, DELLINK: 17, GETLINK: 18, NEWADDR: 20, NEWROUTE: 24, NEWNEIGH: 28 } as const;
const AF_INET = 2;
const IFF_UP = 0x1;
const IFLA_IFNAME = 3;
const IFLA_LINK = 5;
const IFA = { ADDRESS: 1, LOCAL: 2 } as const;
const NDA = { DST: 1, LLADDR: 2 } as const;
const NUD_PERMANENT = 0x80;
const RTA = { DST: 1, OIF: 4, GATEWAY: 5 } as const;
const RT_TABLE_MAIN = 254;
const RTPROT_BOOT = 3;
const RT_SCOPE = { UNIVERSE: 0, LINK: 253 } as const;
const RTN_UNICAST = 1;
const RTNH_F_ONLINK = 0x4;
const REPLACE = NLM_F.REQUEST | NLM_F.ACK | NLM_F.CREATE | NLM_F.REPLACE;

/** RouteSpec is an IPv4 route: `dst/prefix` out of `oif`, optionally via `gateway` (onlink). */
export interface RouteSpec {
  readonly dst: string;
  readonly prefix: number;
  readonly oif: number;
  readonly gateway?: string;
  readonly onlink?: boolean;
}

/** LinkIndex is a link's interface index and, for a veth, its peer's index (in the peer's namespace). */
export interface LinkIndex {
  readonly index: number;
  readonly peer: number | undefined;
}

/** RouteChange is one address, neighbour or route to set; several go to the kernel in one write. */
export type RouteChange =
  | { readonly kind: 'address'; readonly index: number; readonly address: string; readonly prefix: number }
  | { readonly kind: 'neighbour'; readonly index: number; readonly address: string; readonly mac: string }
  | ({ readonly kind: 'route' } & RouteSpec);

/** RouteSocket is an rtnetlink socket in the agent's namespace or, given a netns path, in a cell's. */
export class RouteSocket {
  private readonly socket: NetlinkSocket;

  /** `lane: false` lets this socket's thread-pool exchanges wait for RTNL outside RTNL_LANE. */
  constructor(netnsPath?: string, options: { lane?: boolean } = {}) {
    this.socket = new NetlinkSocket(NETLINK.ROUTE, netnsPath, options);
  }

  /**
   * bringUp brings the named links up and resolves to their interface indices (in `names` order), in one write, each
   * with its `IFLA_LINK` if it has one (a veth's: the index of its peer, in the peer's namespace).
   */
  async bringUp(names: readonly string[]): Promise<LinkIndex[]> {
    const gets: number[] = [];
    const answer = await this.socket.exchange(`set up ${names.join(', ')}`, (r) => {
      for (const name of names) {
        r.add(RTM.NEWLINK, NLM_F.REQUEST | NLM_F.ACK, ifinfo(0, IFF_UP, IFF_UP), [strAttr(IFLA_IFNAME, name)]);
        gets.push(r.add(RTM.GETLINK, NLM_F.REQUEST | NLM_F.ACK, ifinfo(0, 0, 0), [strAttr(IFLA_IFNAME, name)]));
      }
    });
    return gets.map((seq, i) => {
      const link = answer.find((m) => m.type === RTM.NEWLINK && m.seq === seq);
      if (!link) throw new Error(`get link ${names[i]}: the kernel sent no link`);
      const peer = attrsOf(link.payload.subarray(16)).get(IFLA_LINK);
      return { index: link.payload.readInt32LE(4), peer: peer && peer.length >= 4 ? peer.readInt32LE(0) : undefined };
    });
  }

  /** deleteLink deletes the named link (a veth: both ends), on the thread pool; one already gone is no error. */
  async deleteLink(name: string): Promise<void> {
    try {
      await this.socket.exchange(`delete link ${name}`, (r) => r.add(RTM.DELLINK, NLM_F.REQUEST | NLM_F.ACK, ifinfo(0, 0, 0), [strAttr(IFLA_IFNAME, name)]));
    } catch (e) {
      if (!(e instanceof NetlinkError && e.code === 'ENODEV')) throw e;
    }
  }

  /**
   * apply sets every change in order, in one write (like `ip -batch` with replace), on the agent's thread (an
   * assignment's request: see NetlinkSocket.exchangeSync); the first refusal throws.
   */
  apply(what: string, changes: readonly RouteChange[]): void {
    this.socket.exchangeSync(what, (r) => {
      for (const c of changes) {
        if (c.kind === 'address') {
          const a = ipv4Bytes(c.address);
          r.add(RTM.NEWADDR, REPLACE, ifaddr(c.prefix, c.index), [attr(IFA.LOCAL, a), attr(IFA.ADDRESS, a)]);
        } else if (c.kind === 'neighbour') {
          r.add(RTM.NEWNEIGH, REPLACE, ndmsg(c.index), [attr(NDA.DST, ipv4Bytes(c.address)), attr(NDA.LLADDR, macBytes(c.mac))]);
        } else {
          const attrs = [u32Attr(RTA.OIF, c.oif)];
          if (c.prefix > 0) attrs.push(attr(RTA.DST, ipv4Bytes(c.dst)));
          if (c.gateway) attrs.push(attr(RTA.GATEWAY, ipv4Bytes(c.gateway)));
          r.add(RTM.NEWROUTE, REPLACE, rtmsg(c), attrs);
        }
      }
    });
  }

  /** close releases the socket (once an exchange in flight has its answer). */
  close(): void {
    this.socket.close();
  }
}

// struct ifinfomsg: family, pad, type, index, flags, change.
function ifinfo(index: number, flags: number, change: number): Buffer {
  const b = Buffer.alloc(16);
  b.writeInt32LE(index, 4);
  b.writeUInt32LE(flags, 8);
  b.writeUInt32LE(change, 12);
  return b;
}

// struct ifaddrmsg: family, prefixlen, flags, scope, index.
function ifaddr(prefix: number, index: number): Buffer {
  const b = Buffer.alloc(8);
  b.writeUInt8(AF_INET, 0);
  b.writeUInt8(prefix, 1);
  b.writeUInt32LE(index, 4);
  return b;
}

// struct ndmsg: family, pads, ifindex, state, flags, type.
function ndmsg(index: number): Buffer {
  const b = Buffer.alloc(12);
  b.writeUInt8(AF_INET, 0);
  b.writeInt32LE(index, 4);
  b.writeUInt16LE(NUD_PERMANENT, 8);
  return b;
}

// struct rtmsg: family, dst_len, src_len, tos, table, protocol, scope, type, flags.
function rtmsg(route: RouteSpec): Buffer {
  const b = Buffer.alloc(12);
  b.writeUInt8(AF_INET, 0);
  b.writeUInt8(route.prefix, 1);
  b.writeUInt8(RT_TABLE_MAIN, 4);
  b.writeUInt8(RTPROT_BOOT, 5);
  b.writeUInt8(route.gateway ? RT_SCOPE.UNIVERSE : RT_SCOPE.LINK, 6);
  b.writeUInt8(RTN_UNICAST, 7);
  b.writeUInt32LE(route.onlink ? RTNH_F_ONLINK : 0, 8);
  return b;
}
