// Proves cell confinement from inside real cells of both runtimes (creds, userns, namespaces, ro root, masks; forbidden,
// new-mount-API and default-denied syscalls, i386 and x32 entries, against lists the test owns) and of runsc's host processes.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { readdirSync, readFileSync, readlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { promisify } from 'node:util';
import { cellSeccompProfile, FORBIDDEN_SYSCALLS } from '../../src/agent/runtime/seccomp.js';
import { WORKLOAD_UID } from '../../src/agent/runtime/spec.js';
import type { Job } from '../../src/sdk/client.js';
import { TestCluster, type JobResult } from '../support/cluster.js';
import { cellWorkDir } from '../support/host.js';

const execFileP = promisify(execFile);
/** NOBODY is the host's unprivileged uid/gid the calibration probes run as. */
const NOBODY = 65534;

const NAMESPACES = ['pid', 'mnt', 'net', 'ipc', 'uts', 'user', 'cgroup'] as const;
/** Sensitive /proc entries an attacker would read; each must be absent, unreadable or empty inside a cell. */
const MASKED = ['/proc/kcore', '/proc/keys', '/proc/timer_list', '/proc/sched_debug', '/proc/latency_stats', '/proc/timer_stats', '/proc/acpi', '/proc/scsi', '/proc/asound'];

/** An unmapped user address: with it, a syscall the filter let through would fail with EFAULT (never EPERM) and do nothing. */
const BAD = 1;
const AT_FDCWD = -100;
/** Probe is a syscall's number and harmless arguments. */
type Probe = [number, ...number[]];

/**
 * FORBIDDEN_PROBES: the calls a cell must never make, with their x86_64 numbers and harmless arguments. This list is
 * the test's own: it must not be derived from the code under test. Where the kernel validates arguments before
 * checking privilege, the arguments are chosen so that a call the filter let through would answer something other than
 * EPERM/ENOSYS (EFAULT, EBADF, ESRCH, EINVAL or success); the rest are privilege-checked first (PRIVILEGE_FIRST).
 */
const FORBIDDEN_PROBES: Record<string, Probe> = {
  mount: [165, 0, BAD, 0, 0, 0],
  umount2: [166, BAD, 0],
  unshare: [272, 0], // unshare(0) is a successful no-op when allowed
  setns: [308, -1, 0],
  keyctl: [250, 0, -3, 0], // KEYCTL_GET_KEYRING_ID(session keyring, create=0)
  add_key: [248, BAD, BAD, 0, 0, -3],
  request_key: [249, BAD, BAD, 0, -3],
  bpf: [321, 0xffff, 0, 0],
  ptrace: [101, 12, 0x3fffffff, 0, 0], // PTRACE_GETREGS of a pid that cannot exist
  init_module: [175, 0, 0, BAD],
  finit_module: [313, -1, BAD, 0],
  kexec_load: [246, 0, 0, 0, 0],
  perf_event_open: [298, BAD, 0, -1, -1, 0],
  userfaultfd: [323, 0x7fffffff],
  io_uring_setup: [425, 0, BAD],
  open_by_handle_at: [304, -1, BAD, 0],
  pivot_root: [155, BAD, BAD],
  swapon: [167, BAD, 0],
  reboot: [169, 0, 0, 0, 0], // bad magic numbers
};
/** MOUNT_API_PROBES: the new mount API (Linux 5.2+), a second door to mount(2); numbers are the same on every arch. */
const MOUNT_API_PROBES: Record<string, Probe> = {
  open_tree: [428, AT_FDCWD, BAD, 0], // without OPEN_TREE_CLONE it needs no privilege: EFAULT when allowed
  move_mount: [429, -1, BAD, -1, BAD, 0],
  fsopen: [430, BAD, 0],
  fsconfig: [431, -1, 0, 0, 0, 0], // EINVAL (fd < 0) when allowed
  fsmount: [432, -1, 0, 0],
  fspick: [433, -1, BAD, 0],
  mount_setattr: [442, -1, BAD, 0, BAD, 0], // EINVAL (size 0) when allowed
};
/**
 * DEFAULT_DENY_PROBES: real x86_64 syscalls that are neither allowed nor in the forbidden list (a test checks both);
 * they prove the filter denies by default. Most would succeed or fail otherwise for an unprivileged caller (the
 * calibration test runs them on the host to show it); the ones in PRIVILEGE_FIRST are refused by the kernel anyway.
 */
const DEFAULT_DENY_PROBES: Record<string, Probe> = {
  acct: [163, BAD],
  settimeofday: [164, BAD, 0],
  quotactl: [179, 0, BAD, 0, BAD],
  lookup_dcookie: [212, 0, BAD, 0],
  vhangup: [153],
  syslog: [103, 10, 0, 0], // SYSLOG_ACTION_SIZE_BUFFER
  name_to_handle_at: [303, AT_FDCWD, BAD, BAD, BAD, 0],
  fanotify_init: [300, 0xffffffff, 0],
  process_vm_readv: [310, 0, BAD, 1, BAD, 1, 1], // flags must be 0: EINVAL
  process_vm_writev: [311, 0, BAD, 1, BAD, 1, 1],
  kcmp: [312, 0, 0, 0xff, 0, 0],
  modify_ldt: [154, 0, BAD, 0], // read 0 bytes of the LDT
  personality: [135, 0xffffffff], // query only
  vmsplice: [278, -1, BAD, 1, 0],
  pidfd_getfd: [438, -1, 0, 0],
  process_madvise: [440, -1, BAD, 1, 0, 0],
  process_mrelease: [448, -1, 0],
  io_uring_enter: [426, -1, 0, 0, 0, 0, 0],
  io_uring_register: [427, -1, 0, 0, 0],
  get_mempolicy: [239, 0, 0, 0, 0, 0],
  set_mempolicy: [238, 0, 0, 0], // MPOL_DEFAULT
  mbind: [237, 0, 0, 0, 0, 0, 0], // empty range
  move_pages: [279, 0, 0, 0, 0, 0, 0], // no pages
  migrate_pages: [256, 0, 0, 0, 0],
  memfd_secret: [447, 0xffffffff],
  chroot: [161, BAD],
  swapoff: [168, BAD],
  delete_module: [176, BAD, 0],
  kexec_file_load: [320, -1, -1, 0, BAD, 0],
  clock_settime: [227, 0, BAD],
  clock_adjtime: [305, 0, BAD],
  adjtimex: [159, BAD],
  sethostname: [170, BAD, 0xfffff],
  setdomainname: [171, BAD, 0xfffff],
  sysfs: [139, 3], // number of filesystem types
};
/** PRIVILEGE_FIRST names probes an unprivileged, unfiltered caller gets EPERM/ENOSYS from too (capability checked first, or not built into this kernel). */
const PRIVILEGE_FIRST = new Set([
  'init_module', 'finit_module', 'kexec_load', 'pivot_root', 'swapon', 'reboot',
  'move_mount', 'fsopen', 'fsmount', 'fspick',
  'acct', 'lookup_dcookie', 'vhangup', 'syslog', 'fanotify_init', 'swapoff', 'delete_module', 'kexec_file_load', 'sethostname', 'setdomainname',
]);
const CLONE_NEWUSER = 0x10000000;
const CLONE_NEWNS = 0x00020000;
const CLONE_NEWNET = 0x40000000;
const SIGCHLD = 17;
const SIGSYS = 31;
/** EXTRA_PROBES: other doors to the same powers; each must fail like the forbidden list. */
const EXTRA_PROBES: Record<string, Probe> = {
  'clone(CLONE_NEWUSER)': [56, CLONE_NEWUSER | SIGCHLD, 0, 0, 0, 0],
  'clone(CLONE_NEWNS)': [56, CLONE_NEWNS | SIGCHLD, 0, 0, 0, 0],
  'clone(CLONE_NEWNET)': [56, CLONE_NEWNET | SIGCHLD, 0, 0, 0, 0],
  clone3: [435, BAD, 88],
};
/** Controls: allowed calls that must succeed, proving the probe harness itself works. */
const CONTROL_PROBES: Record<string, Probe> = {
  getpid: [39],
  'clone(SIGCHLD) (fork)': [56, SIGCHLD, 0, 0, 0, 0],
};
const X32 = 0x40000000;
/** X32_PROBES: x86_64 entry with the x32 bit set (a different ABI, same instruction). */
const X32_PROBES: Record<string, Probe> = {
  'x32 getpid': [X32 + 39],
  'x32 mount': [X32 + 165, 0, BAD, 0, 0, 0],
};
/**
 * I386_PROBES: i386 numbers and arguments (ebx, ecx, edx, esi, edi, ebp), called with `int 0x80` from the 64-bit
 * process. edi (which a sentry reading the call as x86_64 would take as its first argument) is an invalid address or
 * descriptor, so that no reading of the call can succeed by accident.
 */
const I386_PROBES: Record<string, Probe> = {
  'i386 getpid': [20, 0, 0, 0, 0, 0xffffffff],
  'i386 mount': [21, 0, BAD, 0, 0, BAD],
  'i386 unshare': [310, 0, 0, 0, 0, 0xffffffff],
  'i386 setns': [346, 0xffffffff, 0, 0, 0, 0xffffffff],
  'i386 open_tree': [428, AT_FDCWD, BAD, 0, 0, 0xffffffff],
};

/**
 * Each probe runs in a child of its own (a call that kills its caller is reported, not fatal); a clone that succeeds
 * exits its child at once. `native` probes use syscall(3); `i386` probes run `int 0x80` from a page of machine code:
 * push rbx; push rbp; mov eax..ebp, imm32; int 0x80; movsxd rax, eax; pop rbp; pop rbx; ret. Prints one JSON line.
 */
const SYSCALL_SCRIPT = `
import ctypes, errno, json, mmap, os, signal, struct, subprocess, sys
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
P = json.loads(sys.argv[1])
def native(nr, args):
    ctypes.set_errno(0)
    r = libc.syscall(*[ctypes.c_long(x) for x in [nr] + args])
    if nr == 56 and r == 0:
        os._exit(0)
    if nr == 56 and r > 0:
        os.waitpid(r, 0)
    return r, ctypes.get_errno()
def i386(nr, args):
    a = (args + [0] * 6)[:6]
    code = b'\\x53\\x55\\xb8' + struct.pack('<I', nr & 0xffffffff)
    for op, v in zip(b'\\xbb\\xb9\\xba\\xbe\\xbf\\xbd', a):
        code += bytes([op]) + struct.pack('<I', v & 0xffffffff)
    code += b'\\xcd\\x80\\x48\\x63\\xc0\\x5d\\x5b\\xc3'
    m = mmap.mmap(-1, mmap.PAGESIZE, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
    m.write(code)
    r = ctypes.CFUNCTYPE(ctypes.c_long)(ctypes.addressof(ctypes.c_char.from_buffer(m)))()
    return (r, 0) if r >= 0 else (-1, -r)
def run(fn, nr, args):
    rfd, wfd = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(rfd)
            signal.alarm(30)
            r, e = fn(nr, args)
            os.write(wfd, json.dumps({'r': r, 'e': e}).encode())
        except BaseException as ex:
            os.write(wfd, json.dumps({'error': repr(ex)}).encode())
        finally:
            os._exit(0)
    os.close(wfd)
    data = b''
    while True:
        chunk = os.read(rfd, 4096)
        if not chunk:
            break
        data += chunk
    os.close(rfd)
    _, st = os.waitpid(pid, 0)
    out = {'pid': pid, 'ret': None, 'errno': None, 'signal': os.WTERMSIG(st) if os.WIFSIGNALED(st) else None, 'error': None}
    if data:
        d = json.loads(data)
        if 'error' in d:
            out['error'] = d['error']
        else:
            out['ret'] = d['r']
            out['errno'] = errno.errorcode.get(d['e'], str(d['e'])) if d['r'] < 0 else None
    return out
R = {}
for name, spec in P['native'].items():
    R[name] = run(native, spec[0], spec[1:])
for name, spec in P['i386'].items():
    R[name] = run(i386, spec[0], spec[1:])
if P.get('unshareCommand'):
    u = '/usr/bin/unshare'
    if os.path.exists(u):
        p = subprocess.run([u, '-U', 'true'], capture_output=True, text=True)
        R['unshare -U'] = {'pid': None, 'ret': p.returncode, 'errno': p.stderr.strip()[-200:] or None, 'signal': None, 'error': None}
    else:
        R['unshare -U'] = {'pid': None, 'ret': None, 'errno': None, 'signal': None, 'error': u + ' is missing'}
print('PROBE ' + json.dumps(R))
`;

/** Reads the cell's view of its credentials, namespaces and filesystems. Prints one JSON line. */
const POSTURE_SCRIPT = `
import errno, json, os, sys, threading
MASKED = json.loads(sys.argv[1])
def en(e): return errno.errorcode.get(e.errno, str(e.errno))
R = {}
fds = {}
for f in os.listdir('/proc/self/fd'):
    try: fds[f] = os.readlink('/proc/self/fd/' + f)
    except OSError as e:
        if e.errno != errno.ENOENT: fds[f] = 'ERR ' + en(e)
R['fds'] = fds
ev = threading.Event(); th = threading.Thread(target=ev.wait)
try: th.start(); R['thread_error'] = None
except RuntimeError as e: R['thread_error'] = str(e); th = None
def status(p):
    kv = dict((l.partition(':')[0], l.partition(':')[2].strip()) for l in open(p).read().splitlines())
    return {k: kv.get(k) for k in ('Uid', 'Gid', 'CapInh', 'CapPrm', 'CapEff', 'CapBnd', 'CapAmb', 'NoNewPrivs', 'Seccomp')}
R['status'] = {'self': status('/proc/self/status')}
for t in os.listdir('/proc/self/task'):
    R['status']['task/' + t] = status('/proc/self/task/%s/status' % t)
ev.set()
if th: th.join()
R['uid_map'] = open('/proc/self/uid_map').read()
R['gid_map'] = open('/proc/self/gid_map').read()
R['ids'] = [os.getuid(), os.geteuid(), os.getgid(), os.getegid(), os.getgroups()]
R['ns'] = {}
for n in ${JSON.stringify(NAMESPACES)}:
    try: R['ns'][n] = os.readlink('/proc/self/ns/' + n)
    except OSError as e: R['ns'][n] = 'ERR ' + en(e)
def create(p):
    try:
        fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        os.write(fd, b'probe'); os.close(fd)
        ok = open(p, 'rb').read() == b'probe'; os.unlink(p)
        return 'written' if ok else 'written-but-unreadable'
    except OSError as e: return en(e)
def openw(p):
    try:
        fd = os.open(p, os.O_WRONLY | os.O_APPEND); os.close(fd); return 'opened-for-write'
    except OSError as e: return en(e)
def mkd(p):
    try: os.mkdir(p); os.rmdir(p); return 'created'
    except OSError as e: return en(e)
R['create'] = {p: create(p) for p in ['/probe', '/usr/probe', '/etc/probe', '/.cr/probe', '/work/probe', '/tmp/probe']}
R['mkdir'] = {p: mkd(p) for p in ['/probedir', '/usr/probedir', '/etc/probedir']}
R['openw'] = {p: openw(p) for p in ['/etc/passwd', '/.cr/init', '/usr/bin/python3', '/proc/sys/kernel/hostname', '/proc/sys/kernel/domainname', '/proc/sys/vm/drop_caches', '/proc/sysrq-trigger']}
def rd(p):
    try:
        if os.path.isdir(p): n = os.listdir(p); return 'empty' if not n else 'entries: ' + ','.join(n[:8])
        d = open(p, 'rb').read(4096); return 'empty' if not d else '%d bytes' % len(d)
    except FileNotFoundError: return 'absent'
    except OSError as e: return en(e)
R['masked'] = {p: rd(p) for p in MASKED}
try: R['sys'] = os.listdir('/sys')
except OSError as e: R['sys'] = 'ERR ' + en(e)
R['mounts'] = open('/proc/self/mountinfo').read()
print('PROBE ' + json.dumps(R))
`;
import { RUNTIMES, type Runtime } from '../../src/shared/wire.js';

interface StatusView {
  Uid: string | null;
  Gid: string | null;
  CapInh: string | null;
  CapPrm: string | null;
  CapEff: string | null;
  CapBnd: string | null;
  CapAmb: string | null;
  NoNewPrivs: string | null;
  Seccomp: string | null;
}
interface PostureView {
  fds: Record<string, string>;
  thread_error: string | null;
  status: Record<string, StatusView>;
  uid_map: string;
  gid_map: string;
  ids: [number, number, number, number, number[]];
  ns: Record<string, string>;
  create: Record<string, string>;
  mkdir: Record<string, string>;
  openw: Record<string, string>;
  masked: Record<string, string>;
  sys: string[] | string;
  mounts: string;
}
/** ProbeResult is one probe's outcome: a return value and errno, or the signal that killed its child, or a harness error. */
interface ProbeResult {
  pid: number | null;
  ret: number | null;
  errno: string | null;
  signal: number | null;
  error: string | null;
}
type SyscallView = Record<string, ProbeResult>;

let cluster: TestCluster;
const posture = new Map<Runtime, PostureView[]>();
const posturejobs = new Map<Runtime, Job[]>();

before(async () => {
  cluster = await TestCluster.start();
  await cluster.waitWarm();
});

after(async () => {
  await cluster?.stop();
});

/** probe runs a python script in a cell of `runtime` and returns the JSON it printed. */
async function probe<T>(runtime: Runtime, script: string, arg: unknown): Promise<{ view: T; result: JobResult }> {
  const result = await cluster.runJob({ runtime, command: ['/usr/bin/python3', '-c', script, JSON.stringify(arg)], timeoutSeconds: 60 });
  assert.equal(result.job.status, 'succeeded', `${runtime} probe job ended ${result.job.status} (${result.job.message}): ${result.stderr}`);
  const line = result.stdout.split('\n').find((l) => l.startsWith('PROBE '));
  assert.ok(line, `${runtime} probe printed no result: ${result.stdout} ${result.stderr}`);
  return { view: JSON.parse(line.slice(6)) as T, result };
}

/** postureOf returns (once) two posture views per runtime, taken from two cells run at the same time. */
async function postureOf(runtime: Runtime): Promise<PostureView[]> {
  let v = posture.get(runtime);
  if (!v) {
    const two = await Promise.all([probe<PostureView>(runtime, POSTURE_SCRIPT, MASKED), probe<PostureView>(runtime, POSTURE_SCRIPT, MASKED)]);
    v = two.map((t) => t.view);
    posture.set(runtime, v);
    posturejobs.set(runtime, two.map((t) => t.result.job));
  }
  return v;
}

/** mapLines parses a uid_map/gid_map into [inside, outside, count] triples. */
function mapLines(text: string): Array<[number, number, number]> {
  return text
    .trim()
    .split('\n')
    .filter((l) => l.trim())
    .map((l) => l.trim().split(/\s+/).map(Number) as [number, number, number]);
}

/** mapsHostRoot says whether any line of an id map maps some inside id onto host id 0. */
function mapsHostRoot(text: string): boolean {
  return mapLines(text).some(([, outside, count]) => outside === 0 && count > 0);
}

function hostNamespaces(): Record<string, string> {
  return Object.fromEntries(NAMESPACES.map((n) => [n, readlinkSync(`/proc/self/ns/${n}`)]));
}

function assertConfinedCreds(runtime: Runtime, v: PostureView): void {
  for (const [who, s] of Object.entries(v.status)) {
    for (const cap of ['CapEff', 'CapPrm', 'CapBnd', 'CapInh', 'CapAmb'] as const) {
      if (s[cap] === null && cap === 'CapAmb' && runtime === 'runsc') continue; // gVisor does not report CapAmb
      assert.match(s[cap] ?? 'missing', /^0+$/, `${runtime} ${who}: ${cap}=${s[cap]}: the workload holds capabilities`);
    }
    assert.equal(s.Seccomp, '2', `${runtime} ${who}: Seccomp=${s.Seccomp}: the workload is not under a seccomp filter`);
    // gVisor's /proc/<pid>/status has no NoNewPrivs line; its no_new_privs is covered by the host-side test.
    if (runtime !== 'runsc') assert.equal(s.NoNewPrivs, '1', `${runtime} ${who}: NoNewPrivs=${s.NoNewPrivs}: setuid binaries could raise privilege`);
    assert.deepEqual(s.Uid?.split(/\s+/).map(Number), [WORKLOAD_UID, WORKLOAD_UID, WORKLOAD_UID, WORKLOAD_UID], `${runtime} ${who}: Uid=${s.Uid}: the workload does not run as uid ${WORKLOAD_UID}`);
  }
  const [uid, euid, gid, egid, groups] = v.ids;
  assert.deepEqual([uid, euid, gid, egid], [WORKLOAD_UID, WORKLOAD_UID, WORKLOAD_UID, WORKLOAD_UID], `${runtime}: workload ids ${v.ids.join(' ')} are not the unprivileged workload user`);
  assert.ok(!groups.includes(0), `${runtime}: workload is in group 0 (${groups.join(',')})`);
}

function assertFilesystems(runtime: Runtime, v: PostureView): void {
  console.log(`${runtime} filesystem probe: ${JSON.stringify({ create: v.create, mkdir: v.mkdir, openForWrite: v.openw, masked: v.masked, sys: v.sys })}`);
  for (const p of ['/probe', '/usr/probe', '/etc/probe', '/.cr/probe']) {
    assert.notEqual(v.create[p], 'written', `${runtime}: created ${p}: the root filesystem is writable`);
    assert.notEqual(v.create[p], 'written-but-unreadable', `${runtime}: created ${p}: the root filesystem is writable`);
  }
  for (const [p, r] of Object.entries(v.mkdir)) assert.notEqual(r, 'created', `${runtime}: mkdir ${p} succeeded: the root filesystem is writable`);
  for (const [p, r] of Object.entries(v.openw)) assert.notEqual(r, 'opened-for-write', `${runtime}: opened ${p} for writing`);
  for (const p of ['/work/probe', '/tmp/probe']) assert.equal(v.create[p], 'written', `${runtime}: ${p} not writable (${v.create[p]}): workloads need /work and /tmp`);
  for (const [p, r] of Object.entries(v.masked)) {
    assert.ok(r === 'absent' || r === 'empty' || /^E[A-Z]+$/.test(r), `${runtime}: masked path ${p} is readable: ${r}`);
  }
  assert.deepEqual(v.sys, [], `${runtime}: /sys shows host entries: ${JSON.stringify(v.sys)}`);
  // Permission checks can answer EACCES before the read-only flag is consulted: the mount table must say ro as well.
  const mounts = mountOptions(v.mounts);
  const roMounts = runtime !== 'runsc' ? ['/', '/usr', '/sys', '/proc/sys', '/proc/bus', '/proc/fs', '/proc/irq'] : ['/', '/usr', '/sys'];
  for (const m of roMounts) assert.ok(mounts.get(m)?.includes('ro'), `${runtime}: ${m} is not mounted read-only (options ${mounts.get(m)?.join(',') ?? 'not mounted'})`);
  for (const m of ['/work', '/tmp']) assert.ok(mounts.get(m)?.includes('rw'), `${runtime}: ${m} is not mounted read-write`);
  for (const m of ['/work', '/tmp', '/dev/shm', '/usr']) assert.ok(runtime === 'runsc' || mounts.get(m)?.includes('nosuid'), `${runtime}: ${m} is not mounted nosuid`);
  // Inherited descriptors: nothing that reaches a host object (the control FIFO, a socket, a host file).
  // The listing's own descriptor is closed before readlink, so it does not show here.
  const leaked = Object.entries(v.fds).filter(([fd, target]) => Number(fd) > 2 && target !== '/dev/null');
  assert.deepEqual(leaked, [], `${runtime}: the workload inherited descriptors to host objects: ${JSON.stringify(leaked)}`);
  assert.equal(v.fds['0'], '/dev/null', `${runtime}: stdin is ${v.fds['0']}, not /dev/null`);
}

/** mountOptions maps each mount point in a mountinfo text to its per-mount options (the last mount wins). */
function mountOptions(mountinfo: string): Map<string, string[]> {
  const out = new Map<string, string[]>();
  for (const line of mountinfo.split('\n')) {
    const f = line.split(' ');
    if (f.length > 5 && f[4] && f[5]) out.set(f[4], f[5].split(','));
  }
  return out;
}

/** extraDescriptors lists inherited descriptors beyond stdio. */
function extraDescriptors(v: PostureView): Array<[string, string]> {
  return Object.entries(v.fds).filter(([fd]) => Number(fd) > 2);
}

/** taskCount asserts the probe's second thread ran, so every task's status was really read. */
function assertTwoTasks(runtime: Runtime, v: PostureView): void {
  assert.equal(v.thread_error, null, `${runtime}: the workload cannot start a thread: ${v.thread_error}`);
  assert.ok(Object.keys(v.status).length >= 2, `${runtime}: expected two tasks in /proc/self/task, saw ${Object.keys(v.status).join(',')}`);
}

// runc and crun run the same spec on the host kernel: the same posture, checked for each.
for (const rt of ['runc', 'crun'] as const) {
  test(`${rt}: no capabilities, seccomp filter and no_new_privs on every thread; uid 1000`, async () => {
    for (const v of await postureOf(rt)) {
      assertTwoTasks(rt, v);
      assertConfinedCreds(rt, v);
    }
  });

  test(`${rt}: own user namespace with host root unmapped, a distinct host uid range per cell`, async () => {
    const [a, b] = await postureOf(rt);
    assert.ok(a && b);
    for (const [i, v] of [a, b].entries()) {
      assert.ok(!mapsHostRoot(v.uid_map), `${rt} cell ${i}: uid_map maps host uid 0: ${v.uid_map}`);
      assert.ok(!mapsHostRoot(v.gid_map), `${rt} cell ${i}: gid_map maps host gid 0: ${v.gid_map}`);
      const root = mapLines(v.uid_map).find(([inside]) => inside === 0);
      assert.ok(!root || root[1] !== 0, `${rt} cell ${i}: container root is host root: ${v.uid_map}`);
    }
    const ranges = [a, b].map((v) => mapLines(v.uid_map).map(([, o, c]) => [o, o + c] as const));
    for (const [lo1, hi1] of ranges[0] ?? [])
      for (const [lo2, hi2] of ranges[1] ?? [])
        assert.ok(hi1 <= lo2 || hi2 <= lo1, `two concurrent ${rt} cells share host uids: ${a.uid_map.trim()} vs ${b.uid_map.trim()}`);
    const jobs = posturejobs.get(rt) ?? [];
    assert.notEqual(jobs[0]?.cellId, jobs[1]?.cellId, 'two concurrent jobs ran in the same cell');
  });

  test(`${rt}: every namespace differs from the host`, async () => {
    const host = hostNamespaces();
    for (const v of await postureOf(rt)) {
      for (const n of NAMESPACES) {
        assert.match(v.ns[n] ?? '', /^[a-z_]+:\[\d+\]$/, `${rt}: could not read ns/${n}: ${v.ns[n]}`);
        assert.notEqual(v.ns[n], host[n], `${rt}: the cell shares the host's ${n} namespace (${host[n]})`);
      }
    }
  });

  test(`${rt}: read-only root, writable /work and /tmp, masked /proc, read-only /proc/sys, empty /sys`, async () => {
    for (const v of await postureOf(rt)) assertFilesystems(rt, v);
  });
}

test('runsc: no capabilities, seccomp filter, uid 1000, read-only root, masked /proc, empty /sys (gVisor view)', async () => {
  for (const v of await postureOf('runsc')) {
    assertConfinedCreds('runsc', v);
    assertFilesystems('runsc', v);
  }
});

test('runsc: a workload can start a thread, so the status of every task is probed', async () => {
  for (const v of await postureOf('runsc')) assertTwoTasks('runsc', v);
});

test('the workload inherits no descriptor beyond stdin, stdout and stderr', async () => {
  for (const rt of RUNTIMES) for (const v of await postureOf(rt)) assert.deepEqual(extraDescriptors(v), [], `${rt}: the workload inherited descriptors beyond stdio: ${JSON.stringify(extraDescriptors(v))}`);
});

/**
 * LIBC_INTERNAL_SIGNALS: 32 and 33 (glibc's SIGCANCEL and SIGSETXID) arrive ignored from the runtimes (runc ignores 32,
 * crun 32 and 33); libc refuses to change them for its callers and installs its own handlers when it needs them.
 */
const LIBC_INTERNAL_SIGNALS = (1n << 31n) | (1n << 32n);

test('the workload starts with no signal ignored or blocked (cell init ignores them itself, through a handler execve resets)', async () => {
  for (const runtime of RUNTIMES) {
    const r = await cluster.runJob({ runtime, command: ['/usr/bin/grep', '-E', '^Sig(Ign|Blk):', '/proc/self/status'] });
    // gVisor's /proc/<pid>/status has no signal lines (grep then exits 1): nothing to read there.
    if (runtime === 'runsc' && r.stdout === '') continue;
    assert.equal(r.job.status, 'succeeded', `${runtime}: ${r.job.message} ${r.stderr}`);
    const masks = Object.fromEntries(r.stdout.trim().split('\n').map((l) => l.split(':').map((x) => x.trim()) as [string, string]));
    assert.equal(masks.SigBlk, '0000000000000000', `${runtime}: the workload starts with signals blocked: ${r.stdout}`);
    const ignored = BigInt(`0x${masks.SigIgn ?? 'missing'}`) & ~LIBC_INTERNAL_SIGNALS;
    assert.equal(ignored, 0n, `${runtime}: the workload inherited ignored signals (mask ${ignored.toString(16)}): ${r.stdout}`);
  }
});

/** DENIED_GROUPS are the probe lists whose every call must fail with EPERM or ENOSYS in both runtimes. */
const DENIED_GROUPS: Record<string, Record<string, Probe>> = { forbidden: FORBIDDEN_PROBES, 'mount API': MOUNT_API_PROBES, 'default deny': DEFAULT_DENY_PROBES, 'other doors': EXTRA_PROBES };
const ABI_PROBES = { ...X32_PROBES, ...I386_PROBES };
const syscallViews = new Map<Runtime, Promise<SyscallView>>();

/** syscallsIn runs (once per runtime) every syscall probe in a cell of `runtime`. */
function syscallsIn(runtime: Runtime): Promise<SyscallView> {
  let v = syscallViews.get(runtime);
  if (!v) {
    const native = { ...FORBIDDEN_PROBES, ...MOUNT_API_PROBES, ...DEFAULT_DENY_PROBES, ...EXTRA_PROBES, ...CONTROL_PROBES, ...X32_PROBES };
    v = probe<SyscallView>(runtime, SYSCALL_SCRIPT, { native, i386: I386_PROBES, unshareCommand: true }).then((r) => r.view);
    syscallViews.set(runtime, v);
  }
  return v;
}

/** show renders one probe's outcome for a table or a message. */
function show(r: ProbeResult | undefined): string {
  if (!r) return 'not run';
  if (r.error) return `harness error: ${r.error}`;
  if (r.signal !== null) return `killed by signal ${r.signal}`;
  if (r.ret === null) return 'no result';
  return r.ret < 0 ? r.errno ?? '?' : `ret ${r.ret}`;
}

/** refused says whether a probe failed the way a denied call must: -1 with EPERM or ENOSYS, its caller alive. */
function refused(r: ProbeResult | undefined): boolean {
  return !!r && r.error === null && r.signal === null && r.ret !== null && r.ret < 0 && (r.errno === 'EPERM' || r.errno === 'ENOSYS');
}

/** namesIn lists the syscall names of the profile's rules with the given action (any action when omitted). */
function namesIn(runtime: Runtime, action?: 'SCMP_ACT_ALLOW' | 'SCMP_ACT_ERRNO'): Set<string> {
  return new Set(cellSeccompProfile(runtime).syscalls.filter((s) => !action || s.action === action).flatMap((s) => s.names));
}

test("the test's own syscall lists: none is on the seccomp allowlist; the default-deny probes are on no list; every call the code forbids is probed", () => {
  for (const rt of RUNTIMES) {
    const allowed = namesIn(rt, 'SCMP_ACT_ALLOW');
    const named = namesIn(rt);
    assert.ok(allowed.has('read') && allowed.has('getpid'), `${rt}: the allowlist read from the profile is not the allowlist (${[...allowed].slice(0, 5).join(', ')}…)`);
    for (const list of [FORBIDDEN_PROBES, MOUNT_API_PROBES]) {
      const overlap = Object.keys(list).filter((n) => allowed.has(n));
      assert.deepEqual(overlap, [], `${rt}: the seccomp profile allows calls the test expects to be denied: ${overlap.join(', ')}`);
    }
    const listed = Object.keys(DEFAULT_DENY_PROBES).filter((n) => named.has(n) || n in FORBIDDEN_PROBES || n in MOUNT_API_PROBES);
    assert.deepEqual(listed, [], `${rt}: default-deny probes that are on a list, so they prove nothing about the default: ${listed.join(', ')}`);
  }
  const unprobed = FORBIDDEN_SYSCALLS.filter((s) => !(s in FORBIDDEN_PROBES));
  assert.deepEqual(unprobed, [], `the code declares forbidden syscalls the test does not probe: ${unprobed.join(', ')}`);
});

test('forbidden syscalls, the new mount API and calls on neither list fail with EPERM or ENOSYS in every runtime', async () => {
  const seen = await Promise.all(RUNTIMES.map((rt) => syscallsIn(rt)));
  const views = Object.fromEntries(RUNTIMES.map((rt, i) => [rt, seen[i]!])) as Record<Runtime, SyscallView>;
  const row = (group: string, syscall: string, expected: string) => ({ group, syscall, ...Object.fromEntries(RUNTIMES.map((rt) => [rt, show(views[rt][syscall])])), expected });
  const rows = Object.entries(DENIED_GROUPS).flatMap(([group, list]) => Object.keys(list).map((name) => row(group, name, 'EPERM|ENOSYS')));
  rows.push(...Object.keys(CONTROL_PROBES).map((name) => row('control', name, 'success')));
  rows.push(row('command', 'unshare -U', 'exit≠0'));
  console.log('\nSyscall probes (observed vs expected):');
  console.table(rows);
  for (const rt of RUNTIMES) {
    const view = views[rt];
    for (const [group, list] of Object.entries(DENIED_GROUPS)) {
      for (const name of Object.keys(list)) assert.ok(refused(view[name]), `${rt}: ${group} ${name} was not refused: ${show(view[name])} (expected -1 with EPERM or ENOSYS)`);
    }
    for (const name of Object.keys(CONTROL_PROBES)) {
      const r = view[name];
      assert.ok(r && r.error === null && r.signal === null && r.ret !== null && r.ret >= 0, `${rt}: control ${name} failed (${show(r)}): the probe harness is broken`);
    }
    assert.equal(view.getpid?.ret, view.getpid?.pid, `${rt}: control getpid returned ${show(view.getpid)}, not its own pid ${view.getpid?.pid}: the harness is broken`);
    const u = view['unshare -U'];
    assert.ok(u && u.error === null, `${rt}: 'unshare -U true' could not be tried: ${show(u)}`);
    assert.notEqual(u.ret, 0, `${rt}: 'unshare -U true' succeeded: the workload can create a user namespace`);
  }
});

test('other syscall ABIs: i386 (int 0x80) and x32 calls kill their caller in runc cells (the filter knows only x86_64) and never succeed in runsc cells', async () => {
  for (const rt of RUNTIMES) assert.deepEqual(cellSeccompProfile(rt).architectures, ['SCMP_ARCH_X86_64'], `${rt}: the profile admits other architectures than x86_64`);
  const [runc, runsc] = await Promise.all(RUNTIMES.map((rt) => syscallsIn(rt)));
  assert.ok(runc && runsc);
  console.log('\nOther-ABI probes (runc: killed by SIGSYS; runsc: gVisor has no i386/x32 ABI and reads int 0x80 as an x86_64 call):');
  console.table(Object.keys(ABI_PROBES).map((name) => ({ probe: name, runc: show(runc[name]), runsc: show(runsc[name]) })));
  for (const name of Object.keys(ABI_PROBES)) {
    // libseccomp's answer to an architecture the filter does not list is SECCOMP_RET_KILL: the caller dies of SIGSYS.
    assert.equal(runc[name]?.signal, SIGSYS, `runc: ${name} was not killed by the filter: ${show(runc[name])} (expected killed by signal ${SIGSYS}, SIGSYS)`);
    const r = runsc[name];
    assert.ok(r && r.error === null && (r.signal !== null || (r.ret !== null && r.ret < 0)), `runsc: ${name} succeeded or was not run: ${show(r)}`);
  }
});

test('calibration: on this host, outside any filter, an unprivileged caller gets other answers than EPERM/ENOSYS (so the cells answer from the filter), and int 0x80 reaches the i386 ABI', async () => {
  const native = { ...FORBIDDEN_PROBES, ...MOUNT_API_PROBES, ...DEFAULT_DENY_PROBES };
  const unknown = [...PRIVILEGE_FIRST].filter((n) => !(n in native));
  assert.deepEqual(unknown, [], `PRIVILEGE_FIRST names unknown probes: ${unknown.join(', ')}`);
  const { stdout } = await execFileP('/usr/bin/python3', ['-c', SYSCALL_SCRIPT, JSON.stringify({ native, i386: { 'i386 getpid': I386_PROBES['i386 getpid'] } })], { uid: NOBODY, gid: NOBODY, cwd: '/', timeout: 120_000 });
  const line = stdout.split('\n').find((l) => l.startsWith('PROBE '));
  assert.ok(line, `the host probe printed no result: ${stdout}`);
  const host = JSON.parse(line.slice(6)) as SyscallView;
  const wrong = Object.keys(native)
    .filter((n) => !PRIVILEGE_FIRST.has(n))
    .filter((n) => refused(host[n]) || host[n]?.signal !== null || host[n]?.error !== null)
    .map((n) => `${n}: ${show(host[n])}`);
  assert.deepEqual(wrong, [], 'probes that an unfiltered, unprivileged caller on this host also sees refused (or that crash): in a cell their EPERM would not prove the filter; choose other arguments or list them in PRIVILEGE_FIRST');
  const g = host['i386 getpid'];
  assert.ok(g && g.signal === null && g.ret === g.pid, `int 0x80 getpid on the host answered ${show(g)}, not the caller's pid ${g?.pid}: the i386 probe machine code or the kernel's IA-32 emulation does not work, so the cell's i386 results prove nothing`);
});

/** HostProc is what the host's /proc says about one process. */
interface HostProc {
  pid: number;
  cmd: string;
  status: Record<string, string>;
  userns: string;
  uidMap: string;
}

function readStatus(pid: number | string): Record<string, string> {
  const text = readFileSync(`/proc/${pid}/status`, 'utf8');
  return Object.fromEntries(text.split('\n').filter((l) => l.includes(':')).map((l) => [l.slice(0, l.indexOf(':')), l.slice(l.indexOf(':') + 1).trim()]));
}

/** gvisorProcesses finds the runsc processes of one cell and every descendant of them (ptrace stubs). */
function gvisorProcesses(containerId: string, bundle: string): HostProc[] {
  const parents = new Map<number, number>();
  const cmds = new Map<number, string>();
  for (const e of readdirSync('/proc')) {
    if (!/^\d+$/.test(e)) continue;
    try {
      const stat = readFileSync(`/proc/${e}/stat`, 'utf8');
      parents.set(Number(e), Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]));
      cmds.set(Number(e), readFileSync(`/proc/${e}/cmdline`, 'utf8').replace(/\0/g, ' ').trim());
    } catch {
      // the process ended while we looked
    }
  }
  const roots = [...cmds].filter(([, c]) => /runsc/.test(c) && (c.includes(containerId) || c.includes(`${bundle} `) || c.endsWith(bundle))).map(([p]) => p);
  const found = new Set(roots);
  for (let grew = true; grew; ) {
    grew = false;
    for (const [pid, ppid] of parents) if (found.has(ppid) && !found.has(pid)) found.add(pid), (grew = true);
  }
  const out: HostProc[] = [];
  for (const pid of found) {
    try {
      out.push({ pid, cmd: (cmds.get(pid) ?? '').slice(0, 60), status: readStatus(pid), userns: readlinkSync(`/proc/${pid}/ns/user`), uidMap: readFileSync(`/proc/${pid}/uid_map`, 'utf8') });
    } catch {
      // ended
    }
  }
  return out;
}

test('runsc: on the host, the sandbox and gofer of a running cell are seccomp-confined, no_new_privs, non-root, in their own user namespace', async () => {
  const marker = `ready-${process.pid}-${Date.now()}`;
  // The cell lives on until its processes have been read from the host (a file in its /work), however slow the host.
  const created = await cluster.client.createJob({ runtime: 'runsc', command: ['/bin/sh', '-c', `echo ${marker}; until [ -e /work/go ]; do sleep 0.05; done`], timeoutSeconds: 60 });
  let seen: Promise<{ procs: HostProc[]; cellId: string }> | null = null;
  const job = await cluster.client.followLogs(created.id, (c) => {
    if (seen || !c.data.toString('utf8').includes(marker)) return;
    seen = (async () => {
      const j = await cluster.client.getJob(created.id);
      assert.ok(j.cellId, 'running job has no cellId');
      const containerId = `cr-${cluster.agentId}-${j.cellId}`;
      try {
        return { procs: gvisorProcesses(containerId, `${cluster.dataDir}/agent/cells/${j.cellId}`), cellId: j.cellId };
      } finally {
        writeFileSync(join(cellWorkDir(cluster.dataDir, j.cellId), 'go'), '');
      }
    })();
    seen.catch(() => {}); // awaited below
  });
  assert.equal(job.status, 'succeeded', `runsc job ended ${job.status}: ${job.message}`);
  assert.ok(seen, 'the runsc job never printed its marker');
  const { procs } = await (seen as Promise<{ procs: HostProc[]; cellId: string }>);
  const hostUserns = readlinkSync('/proc/self/ns/user');
  const names = procs.map((p) => p.cmd.split(' ')[0]);
  assert.ok(names.includes('runsc-sandbox'), `no runsc-sandbox process found for the cell (found: ${names.join(', ')})`);
  assert.ok(names.includes('runsc-gofer'), `no runsc-gofer process found for the cell (found: ${names.join(', ')})`);
  console.log('\nrunsc host processes of the cell:');
  console.table(procs.map((p) => ({ pid: p.pid, cmd: p.cmd.split(' ')[0], Uid: p.status.Uid, CapEff: p.status.CapEff, Seccomp: p.status.Seccomp, NoNewPrivs: p.status.NoNewPrivs, userns: p.userns, uid_map: p.uidMap.trim().replace(/\s+/g, ' ') })));
  for (const p of procs) {
    const who = `${p.cmd.split(' ')[0]} (pid ${p.pid})`;
    assert.equal(p.status.Seccomp, '2', `${who}: Seccomp=${p.status.Seccomp} on the host: gVisor runs unfiltered`);
    assert.equal(p.status.NoNewPrivs, '1', `${who}: NoNewPrivs=${p.status.NoNewPrivs} on the host`);
    assert.notEqual(p.userns, hostUserns, `${who} runs in the host user namespace: its CapEff ${p.status.CapEff} is real host privilege`);
    assert.ok(!mapsHostRoot(p.uidMap), `${who}: its user namespace maps host root: ${p.uidMap}`);
    const uids = (p.status.Uid ?? '').split(/\s+/).map(Number);
    assert.equal(uids.length, 4, `${who}: unreadable Uid line ${p.status.Uid}`);
    assert.ok(uids.every((u) => u !== 0), `${who} runs as host root: Uid ${p.status.Uid}`);
  }
});

test('a command that does not exist fails with exit code 127 and says so, in both runtimes', async () => {
  const cmd = 'no-such-command-xyz';
  for (const runtime of RUNTIMES) {
    const r = await cluster.runJob({ runtime, command: [cmd, '--flag'] });
    assert.equal(r.job.status, 'failed', `${runtime}: status ${r.job.status} (${r.job.message})`);
    assert.equal(r.job.exitCode, 127, `${runtime}: exit code ${r.job.exitCode}`);
    assert.match(r.stderr, new RegExp(`${cmd}.*not found`), `${runtime}: unhelpful stderr: ${JSON.stringify(r.stderr)}`);
  }
});
