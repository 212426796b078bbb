/** The seccomp profile every cell runs under: default-deny, with an allowlist of ordinary syscalls. */
import type { Runtime } from '../../shared/wire.js';

/** ALLOWED_SYSCALLS lists what a workload may call; everything else fails with EPERM. */
const ALLOWED_SYSCALLS = `
accept accept4 access alarm arch_prctl bind brk capget capset chdir chmod chown clock_getres
clock_gettime clock_nanosleep close close_range connect copy_file_range creat dup dup2 dup3
epoll_create epoll_create1 epoll_ctl epoll_pwait epoll_pwait2 epoll_wait eventfd eventfd2 execve
execveat exit exit_group faccessat faccessat2 fadvise64 fallocate fchdir fchmod fchmodat fchown
fchownat fcntl fdatasync fgetxattr flistxattr flock fork fremovexattr fsetxattr fstat fstatfs fsync
ftruncate futex futex_waitv getcpu getcwd getdents getdents64 getegid geteuid getgid getgroups
getitimer getpeername getpgid getpgrp getpid getppid getpriority getrandom getresgid getresuid
getrlimit get_robust_list getrusage getsid getsockname getsockopt gettid gettimeofday getuid
getxattr inotify_add_watch inotify_init inotify_init1 inotify_rm_watch io_cancel io_destroy
io_getevents io_pgetevents io_setup io_submit ioctl ioprio_get ioprio_set kill landlock_add_rule
landlock_create_ruleset landlock_restrict_self lchown lgetxattr link linkat listen listxattr
llistxattr lremovexattr lseek lsetxattr lstat madvise membarrier memfd_create mincore mkdir
mkdirat mknod mknodat mlock mlock2 mlockall mmap mprotect mq_getsetattr mq_notify mq_open
mq_timedreceive mq_timedsend mq_unlink mremap msgctl msgget msgrcv msgsnd msync munlock munlockall
munmap nanosleep newfstatat open openat openat2 pause pidfd_open pidfd_send_signal pipe pipe2 poll
ppoll prctl pread64 preadv preadv2 prlimit64 pselect6 pwrite64 pwritev pwritev2 read readahead
readlink readlinkat readv recvfrom recvmmsg recvmsg remap_file_pages removexattr rename renameat
renameat2 restart_syscall rmdir rseq rt_sigaction rt_sigpending rt_sigprocmask rt_sigqueueinfo
rt_sigreturn rt_sigsuspend rt_sigtimedwait rt_tgsigqueueinfo sched_getaffinity sched_getattr
sched_getparam sched_get_priority_max sched_get_priority_min sched_getscheduler
sched_rr_get_interval sched_setaffinity sched_setattr sched_setparam sched_setscheduler sched_yield
seccomp select semctl semget semop semtimedop sendfile sendmmsg sendmsg sendto setfsgid setfsuid
setgid setgroups setitimer setpgid setpriority setregid setresgid setresuid setreuid setrlimit
set_robust_list setsid setsockopt set_tid_address setuid setxattr shmat shmctl shmdt shmget
shutdown sigaltstack signalfd signalfd4 socket socketpair splice stat statfs statx symlink
symlinkat sync sync_file_range syncfs sysinfo tee tgkill time timer_create timer_delete
timer_getoverrun timer_gettime timer_settime timerfd_create timerfd_gettime timerfd_settime times
tkill truncate umask uname unlink unlinkat utime utimensat utimes vfork wait4 waitid write writev
`.trim().split(/\s+/);

/** NAMESPACE_CLONE_FLAGS masks CLONE_NEW{NS,CGROUP,UTS,IPC,USER,PID,NET}: clone may not create namespaces. */
const NAMESPACE_CLONE_FLAGS = 0x7e020000;

const ENOSYS = 38;
const EPERM = 1;

/** SeccompProfile is the OCI `linux.seccomp` object. */
export interface SeccompProfile {
  defaultAction: 'SCMP_ACT_ERRNO';
  defaultErrnoRet: number;
  architectures: string[];
  syscalls: Array<{
    names: string[];
    action: 'SCMP_ACT_ALLOW' | 'SCMP_ACT_ERRNO';
    errnoRet?: number;
    args?: Array<{ index: number; value: number; valueTwo: number; op: string }>;
  }>;
}

/** cellSeccompProfile returns the default-deny allowlist applied to every cell of the given runtime. */
export function cellSeccompProfile(runtime: Runtime): SeccompProfile {
  return {
    defaultAction: 'SCMP_ACT_ERRNO',
    defaultErrnoRet: EPERM,
    // x86_64 only: a workload has no use for the i386 (`int 0x80`) or x32 entries, old kernel attack surface that
    // would otherwise take the same allowlist; a call through them hits libseccomp's bad-arch action and kills its caller.
    architectures: ['SCMP_ARCH_X86_64'],
    syscalls: [
      { names: ALLOWED_SYSCALLS, action: 'SCMP_ACT_ALLOW' },
      {
        names: ['clone'],
        action: 'SCMP_ACT_ALLOW',
        args: [{ index: 0, value: NAMESPACE_CLONE_FLAGS, valueTwo: 0, op: 'SCMP_CMP_MASKED_EQ' }],
      },
      // clone3 passes its flags in memory seccomp cannot read: ENOSYS makes libc fall back to clone.
      // runsc (20221219) ignores errnoRet and would answer EPERM, which breaks pthread_create; its
      // sentry does not implement clone3 and answers ENOSYS itself, so there it is let through
      // (the security tests assert clone3 still fails inside both runtimes).
      runtime === 'runsc'
        ? { names: ['clone3'], action: 'SCMP_ACT_ALLOW' }
        : { names: ['clone3'], action: 'SCMP_ACT_ERRNO', errnoRet: ENOSYS },
    ],
  };
}

const profileJson = new Map<Runtime, string>();

/** cellSeccompProfileJson is cellSeccompProfile(runtime) as JSON, computed once per runtime (a cache key for its compiled filter). */
export function cellSeccompProfileJson(runtime: Runtime): string {
  let json = profileJson.get(runtime);
  if (json === undefined) profileJson.set(runtime, (json = JSON.stringify(cellSeccompProfile(runtime))));
  return json;
}

/** FORBIDDEN_SYSCALLS are the calls a cell must never be able to make; tests probe each one. */
export const FORBIDDEN_SYSCALLS = [
  'mount', 'umount2', 'unshare', 'setns', 'keyctl', 'add_key', 'request_key', 'bpf', 'ptrace',
  'init_module', 'finit_module', 'kexec_load', 'perf_event_open', 'userfaultfd', 'io_uring_setup',
  'open_by_handle_at', 'pivot_root', 'swapon', 'reboot',
] as const;
