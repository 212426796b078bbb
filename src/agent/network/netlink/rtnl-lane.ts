/**
 * RtnlLane lets at most one of the agent's calls wait for the kernel's RTNL lock at a time, start-path calls first.
 * rtnetlink requests and the per-device sysctl writes of a cell's network take RTNL, which netns and veth creation and
 * deletion (ours, for other cells) hold for milliseconds. A waiter does not sleep quietly: the mutex spins while its
 * owner runs, and the `forwarding` and `disable_ipv6` sysctls take it with a trylock and restart the system call until
 * it is free. On the agent's thread one such wait at a time blocked every start; on the thread pool several at once
 * would each burn a core. Through this lane they run one at a time off the agent's thread, and an attach (a job is
 * waiting for it) goes before queued prepare and wipe work.
 */
export class RtnlLane {
  private busy = false;
  private readonly urgent: Array<() => void> = [];
  private readonly background: Array<() => void> = [];

  /** run calls fn once no other call of this lane is in flight; `urgent` calls go before queued others. */
  async run<T>(fn: () => Promise<T>, urgent = false): Promise<T> {
    if (this.busy) await new Promise<void>((resolve) => (urgent ? this.urgent : this.background).push(resolve));
    else this.busy = true;
    try {
      return await fn();
    } finally {
      const next = this.urgent.shift() ?? this.background.shift();
      if (next) next(); // the lane stays busy: handed over
      else this.busy = false;
    }
  }
}

/** RTNL_LANE is the agent's one lane (RTNL is one lock per host). */
export const RTNL_LANE = new RtnlLane();
