/**
 * The agent's libuv thread pool size. The agent moves its blocking kernel calls there — netlink exchanges waiting for the
 * RTNL lock, cgroup v1 rmdirs and cgroup.procs writes waiting for an RCU grace period, loop attach, mounts, helper
 * spawns, file removal on a `discard` filesystem — and a wipe alone queues about ten cgroup rmdirs at once. With libuv's
 * default of 4 threads, a start's network attach or spawn waited behind them; threads that wait in the kernel cost no
 * CPU, so the pool is sized for waiting, not for the host's cores.
 *
 * It must be in the agent's environment when Node starts (its launchers set it: `cleanroom up`, the systemd unit, the
 * Kubernetes DaemonSet): Node's ES module loader reads every module through the pool before any module's code runs, so
 * libuv has already sized the pool by then.
 */
export const AGENT_THREAD_POOL_SIZE = 16;

/** threadPoolWarning says what to change when the agent was started without the pool size it is meant to have; null when it was. */
export function threadPoolWarning(env: NodeJS.ProcessEnv): string | null {
  const size = Number(env.UV_THREADPOOL_SIZE ?? 4);
  if (size >= AGENT_THREAD_POOL_SIZE) return null;
  return `the agent's thread pool has ${size} threads (UV_THREADPOOL_SIZE); start it with UV_THREADPOOL_SIZE=${AGENT_THREAD_POOL_SIZE} or more, or starts wait behind wipes' kernel calls`;
}
