/**
 * RtnlLane lets at most one of the agent's thread-pool calls wait for the kernel's RTNL lock at a time, in call order.
 * A prepare's rtnetlink requests and per-device sysctl writes take RTNL, which netns and veth creation and deletion
 * (ours, for other cells) hold for milliseconds. A waiter does not sleep quietly: the mutex spins while its owner runs,
 * and the `forwarding` and `disable_ipv6` sysctls take it with a trylock and restart the system call until it is free.
 * On the agent's thread one such wait blocked every start; on the thread pool several at once would each burn a core.
 */
export class RtnlLane {
  private busy = false;
  private readonly queue: Array<() => void> = [];

  /** run calls fn once no other call of this lane is in flight. */
  async run<T>(fn: () => Promise<T>): Promise<T> {
    if (this.busy) await new Promise<void>((resolve) => this.queue.push(resolve));
    else this.busy = true;
    try {
      return await fn();
    } finally {
      const next = this.queue.shift();
      if (next) next(); // the lane stays busy: handed over
      else this.busy = false;
    }
  }
}

/** RTNL_LANE is the agent's one lane (RTNL is one lock per host). */
export const RTNL_LANE = new RtnlLane();
