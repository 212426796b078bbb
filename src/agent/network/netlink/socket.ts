// A netlink socket of the agent (build/netlink.node), optionally created inside a cell's network namespace. The kernel
// handles rtnetlink and nftables messages while they are sent, so an exchange is a few syscalls — no helper process to
// wake. `exchange` runs one on the libuv thread pool, for background work (a cell's prepare and wipe): a request about
// links, addresses or routes waits in the kernel for the RTNL lock, which other cells' netns and veth creation and
// deletion hold for milliseconds. `exchangeSync` runs one on the agent's thread, for an assignment: there a pool round
// trip (two thread wake-ups, milliseconds each on a busy host) costs more than the exchange.
import { constants } from 'node:os';
import { loadNativeAddon } from '../../native-addon.js';
import { answerErrors, NetlinkRequest, parseMessages, type NetlinkMessage } from './message.js';
import { RTNL_LANE } from './rtnl-lane.js';

interface Addon {
  open(protocol: number, netnsPath: string | null): number;
  talk(fd: number, request: Buffer, lastSeq: number): Buffer;
  talkAsync(fd: number, request: Buffer, lastSeq: number): Promise<Buffer>;
  close(fd: number): void;
  writeSysctlsAsync(writes: readonly NetSysctl[]): Promise<void>;
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
  /** The last asynchronous exchange queued on this socket (settled either way), or null when none is in flight. */
  private pending: Promise<void> | null = null;
  /** How many asynchronous exchanges are queued or in flight (exchangeSync refuses while any is). */
  private inFlight = 0;

  /**
   * Opens a socket of `protocol`, inside the network namespace at `netnsPath` if given (else the agent's). Asynchronous
   * exchanges of an rtnetlink socket go through RTNL_LANE (they wait for the RTNL lock) unless `lane` is false;
   * nftables' do not take it.
   */
  constructor(protocol: number, netnsPath?: string, options: { lane?: boolean } = {}) {
    this.fd = addon().open(protocol, netnsPath ?? null);
    this.rtnl = protocol === NETLINK.ROUTE && options.lane !== false;
  }

  private readonly rtnl: boolean;

  /**
   * exchange builds one request with `build`, sends it from the libuv thread pool and resolves to the kernel's answer
   * messages. Every message that asked for an ack must be acked; the first refusal rejects with a NetlinkError naming
   * `what`. Exchanges of one socket run one after another, in call order (each is sent once the previous one has its
   * answer), so one socket's requests and answers never interleave. An rtnetlink socket's go through RTNL_LANE.
   */
  exchange(what: string, build: (request: NetlinkRequest) => void): Promise<NetlinkMessage[]> {
    const previous = this.pending ?? Promise.resolve();
    this.inFlight++;
    const mine = previous.then(async () => {
      try {
        const { request, fd, acked, last } = this.request(what, build);
        const talk = () => addon().talkAsync(fd, request.bytes, last);
        return checkAnswer(what, acked, parseMessages(await (this.rtnl ? RTNL_LANE.run(talk) : talk())));
      } finally {
        this.inFlight--;
      }
    });
    const settled = mine.then(
      () => undefined,
      () => undefined,
    );
    this.pending = settled;
    void settled.then(() => {
      if (this.pending === settled) this.pending = null;
    });
    return mine;
  }

  /** exchangeSync is exchange on the agent's own thread. Not while an exchange of this socket is in flight. */
  exchangeSync(what: string, build: (request: NetlinkRequest) => void): NetlinkMessage[] {
    if (this.inFlight > 0) throw new Error(`${what}: an exchange is in flight on this socket`);
    const { request, fd, acked, last } = this.request(what, build);
    return checkAnswer(what, acked, parseMessages(addon().talk(fd, request.bytes, last)));
  }

  // Builds a request on this socket's sequence numbers; checks that the socket is open and an ack is asked for.
  private request(what: string, build: (request: NetlinkRequest) => void): { request: NetlinkRequest; fd: number; acked: readonly number[]; last: number } {
    if (this.fd === null) throw new Error(`${what}: netlink socket is closed`);
    const request = new NetlinkRequest(this.seq);
    build(request);
    this.seq = request.nextSeq;
    const acked = request.ackedSeqs;
    const last = acked.at(-1);
    if (last === undefined) throw new Error(`${what}: a request must ask for at least one ack`);
    return { request, fd: this.fd, acked, last };
  }

  /** close releases the socket once any exchange in flight has its answer; idempotent. */
  close(): void {
    if (this.fd === null) return;
    const fd = this.fd;
    this.fd = null;
    // A pool thread may still be reading from it: closing now could hand its number to another file meanwhile.
    if (this.pending) {
      void this.pending.then(() => {
        try {
          addon().close(fd);
        } catch {
          // Closing a socket whose exchanges are done cannot fail in a way anyone could act on; it must not crash the agent.
        }
      });
    }
    else addon().close(fd);
  }
}

// Every message that asked for an ack must be acked; the first refusal throws a NetlinkError naming `what`.
function checkAnswer(what: string, acked: readonly number[], messages: NetlinkMessage[]): NetlinkMessage[] {
  const errors = answerErrors(messages);
  for (const seq of acked) {
    const errno = errors.get(seq);
    if (errno === undefined) throw new Error(`${what}: no answer from the kernel for message ${seq}`);
    if (errno !== 0) throw new NetlinkError(errno, what);
  }
  return messages;
}

/** NetSysctl is one /proc/sys/net write: the network namespace to make it in (null: the agent's), the path under /proc/sys/net, the value. */
export type NetSysctl = readonly [netnsPath: string | null, path: string, value: string];

/**
 * writeNetSysctlsAsync makes the writes in order, in one call on the thread pool (through RTNL_LANE). Writes such as a
 * device's `forwarding` or `disable_ipv6` wait for the RTNL lock, which netns and veth creation and deletion hold for
 * milliseconds: on the agent's thread that wait stalled every other cell's start.
 */
export function writeNetSysctlsAsync(writes: readonly NetSysctl[]): Promise<void> {
  return RTNL_LANE.run(() => addon().writeSysctlsAsync(writes));
}

function addon(): Addon {
  return loadNativeAddon<Addon>('netlink');
}
