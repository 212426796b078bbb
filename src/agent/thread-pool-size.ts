/**
 * The agent's libuv thread pool size, set before anything uses the pool (main.ts imports this module first; libuv reads
 * UV_THREADPOOL_SIZE once, at the pool's first use). The agent moves its blocking kernel calls there — netlink exchanges
 * waiting for the RTNL lock, cgroup v1 rmdirs and cgroup.procs writes waiting for an RCU grace period, loop attach,
 * mounts, helper spawns, file removal on a `discard` filesystem — and a wipe alone queues about ten cgroup rmdirs at
 * once. With libuv's default of 4 threads, a start's network attach or spawn waited behind them; threads that wait in
 * the kernel cost no CPU, so the pool is sized for waiting, not for the host's cores. An operator's own setting wins.
 */
export const AGENT_THREAD_POOL_SIZE = 16;

process.env.UV_THREADPOOL_SIZE ??= String(AGENT_THREAD_POOL_SIZE);
