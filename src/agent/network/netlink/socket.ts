// A netlink socket of the agent (build/netlink.node), optionally created inside a cell's network namespace. Requests are
// synchronous: the kernel handles rtnetlink and nftables messages while they are sent, so an exchange is a few syscalls
// on the agent's own thread — no helper process to wake, no event-loop round trip.
import { constants } from 'node:os';
import { loadNativeAddon } from '../../native-addon.js';
import { answerErrors, NetlinkRequest, parseMessages, type NetlinkMessage } from './message.js';

interface Addon {
  open(protocol: number, netnsPath: string | null): number;
  talk(fd: number, request: Buffer, lastSeq: number): Buffer;
  close(fd: number): void;
  writeSysctlsAsync(netnsPath: string | null, pairs: ReadonlyArray<readonly [string, string]>): Promise<void>;
}

/** NETLINK_ROUTE and NETLINK_NETFILTER protocol numbers. */
export const NETLINK = { ROUTE: 0, NETFILTER: 12 } as const;

const ERRNO_NAMES = new Map(Object.entries(constants.errno).map(([name, n]) => [n, name]));

/** NetlinkError is a request the kernel refused; `code` is the errno name (EEXIST, ENOENT, …). */
export class NetlinkError extends Error {
  readonly code: string;

  constructor(readonly errno: number, what: string) {
    const code = ERRNO_NAMES.get(errno) ?? `E${errno}`;
    super(`${what}: ${code}`);
    this.code = code;
  }
}

/** NetlinkSocket is one open netlink socket; close it when done. */
export class NetlinkSocket {
  private fd: number | null;
  private seq = 1;

  /** Opens a socket of `protocol`, inside the network namespace at `netnsPath` if given (else the agent's). */
  constructor(protocol: number, netnsPath?: string) {
    this.fd = addon().open(protocol, netnsPath ?? null);
  }

  /**
   * exchange builds one request with `build`, sends it and returns the kernel's answer messages. Every message that
   * asked for an ack must be acked; the first refusal throws a NetlinkError naming `what`.
   */
  exchange(what: string, build: (request: NetlinkRequest) => void): NetlinkMessage[] {
    if (this.fd === null) throw new Error(`${what}: netlink socket is closed`);
    const request = new NetlinkRequest(this.seq);
    build(request);
    this.seq = request.nextSeq;
    const acked = request.ackedSeqs;
    const last = acked.at(-1);
    if (last === undefined) throw new Error(`${what}: a request must ask for at least one ack`);
    const messages = parseMessages(addon().talk(this.fd, request.bytes, last));
    const errors = answerErrors(messages);
    for (const seq of acked) {
      const errno = errors.get(seq);
      if (errno === undefined) throw new Error(`${what}: no answer from the kernel for message ${seq}`);
      if (errno !== 0) throw new NetlinkError(errno, what);
    }
    return messages;
  }

  /** close releases the socket; idempotent. */
  close(): void {
    if (this.fd === null) return;
    addon().close(this.fd);
    this.fd = null;
  }
}

/**
 * writeNetSysctlsAsync writes /proc/sys/net/<path> values on the thread pool, inside the network namespace at netnsPath
 * (null: the agent's own). Writes such as a device's `forwarding` or `disable_ipv6` wait for the RTNL lock, which netns
 * and veth creation and deletion hold for milliseconds: on the agent's thread that wait stalled every other cell's start.
 */
export function writeNetSysctlsAsync(netnsPath: string | null, pairs: ReadonlyArray<readonly [string, string]>): Promise<void> {
  return addon().writeSysctlsAsync(netnsPath, pairs);
}

function addon(): Addon {
  return loadNativeAddon<Addon>('netlink');
}
