/** Builds the OCI runtime spec (config.json) of a cell. */
import { cellSeccompProfile } from './seccomp.js';
import type { Runtime } from '../../shared/wire.js';

/** WORKLOAD_UID is the uid (and gid) the workload runs as inside every cell. */
export const WORKLOAD_UID = 1000;

/** CELL_FILES_DIR is the cell's private tmpfs; /etc/hosts and /etc/resolv.conf link into it. */
export const CELL_FILES_DIR = '/run/cleanroom';

/** CELL_CA_FILE is where cells find the CA that signs the platform's TLS certificates. */
export const CELL_CA_FILE = '/etc/cleanroom/ca.pem';

/** CELL_INIT_PATH is where cell init's binary is inside every cell. */
export const CELL_INIT_PATH = '/.cr/init';

/** CELL_MOUNT_POINTS are the directories the spec mounts over: an image's read-only root must already have them. */
export const CELL_MOUNT_POINTS: readonly string[] = ['/proc', '/dev', '/sys', '/work', '/tmp', CELL_FILES_DIR, '/.cr'];

/** UID_RANGE_SIZE is how many host uids each cell's user namespace maps. */
export const UID_RANGE_SIZE = 65536;

/** CellSpecInput is everything the spec depends on; none of it is tenant data. */
export interface CellSpecInput {
  runtime: Runtime;
  /** Read-only root filesystem: the directory shared by host-root cells (synthetic /etc, mount points), or an image cell's own overlay. */
  rootfs: string;
  /**
   * For a cell whose root is an image: cell init's binary on the host (bind-mounted read-only at CELL_INIT_PATH) and
   * the workload's uid/gid inside the cell (init's argv; never 0). null: the host's /usr under a synthetic /etc.
   */
  image?: { initBinary: string; uid: number; gid: number } | null;
  /** Host directory mounted read-write at /work. */
  workDir: string;
  /** Host directory mounted read-write at /tmp. */
  tmpDir: string;
  /** First host uid/gid of this cell's private range; container root maps here. */
  hostUidBase: number;
  /** cgroup path (flat, under each controller's root). */
  cgroupsPath: string;
  /** Path of a network namespace prepared by the agent, or null for a fresh empty one. */
  netnsPath: string | null;
  /** Upper bounds of the cell's size class; tightened to the job's request at assignment. */
  memoryBytes: number;
  cpuMillis: number;
  pids: number;
  nofile: number;
  /** Annotations for the runtime (CellRuntime.specAnnotations), e.g. crun's compiled form of the seccomp profile. */
  annotations?: Record<string, string>;
}

const CPU_PERIOD_US = 100_000;
/** WARM_CPU_SHARES weighs a cell while it is prepared and waits (its init starting): below the start path and running
 *  workloads, which get the normal weight at assignment (CellCgroup.limit). */
export const WARM_CPU_SHARES = 64;
/** INIT_CAPS are cell init's capabilities inside the cell's user namespace until the workload starts. */
const INIT_CAPS = ['CAP_SETUID', 'CAP_SETGID', 'CAP_SETPCAP'];

/** cellSpec returns the OCI spec of a cell whose init waits for an assignment. */
export function cellSpec(i: CellSpecInput): Record<string, unknown> {
  const ro = ['bind', 'ro', 'nosuid', 'nodev'];
  const rw = ['bind', 'rw', 'nosuid', 'nodev'];
  return {
    ociVersion: '1.0.2',
    process: {
      terminal: false,
      // Cell init runs as the cell's root with only the capabilities it needs to start the workload as WORKLOAD_UID
      // with none at all; then it drops them too. A different real uid is what keeps the workload from signalling,
      // tracing or opening init (native/cell-init: act_as_workload, become_workload).
      user: { uid: 0, gid: 0, additionalGids: [] },
      args: i.image ? [CELL_INIT_PATH, String(i.image.uid), String(i.image.gid)] : [CELL_INIT_PATH],
      // Init needs no environment (the workload's comes with its assignment); gVisor lets a workload read init's.
      env: [],
      cwd: '/',
      capabilities: { bounding: INIT_CAPS, effective: INIT_CAPS, inheritable: [], permitted: INIT_CAPS, ambient: [] },
      rlimits: [
        { type: 'RLIMIT_NOFILE', hard: i.nofile, soft: i.nofile },
        { type: 'RLIMIT_CORE', hard: 0, soft: 0 },
      ],
      noNewPrivileges: true,
    },
    root: { path: i.rootfs, readonly: true },
    hostname: 'cell',
    ...(i.annotations && Object.keys(i.annotations).length > 0 ? { annotations: i.annotations } : {}),
    mounts: [
      { destination: '/proc', type: 'proc', source: 'proc', options: ['nosuid', 'noexec', 'nodev'] },
      { destination: '/dev', type: 'tmpfs', source: 'tmpfs', options: ['nosuid', 'strictatime', 'mode=755', 'size=1024k'] },
      { destination: '/dev/shm', type: 'tmpfs', source: 'shm', options: ['nosuid', 'noexec', 'nodev', 'mode=1777', 'size=65536k'] },
      // The cell's own PTYs (a sandbox's terminals): a private devpts instance, nothing of the host's.
      { destination: '/dev/pts', type: 'devpts', source: 'devpts', options: ['nosuid', 'noexec', 'newinstance', 'ptmxmode=0666', 'mode=0620'] },
      // No sysfs: an empty read-only tmpfs hides host devices and lets the cell join a netns the agent made.
      { destination: '/sys', type: 'tmpfs', source: 'sysfs-empty', options: ['ro', 'nosuid', 'noexec', 'nodev', 'size=4k'] },
      // Host-root cells see the host's /usr; an image cell's root is the image itself, with cell init bound in from the agent.
      i.image ? { destination: CELL_INIT_PATH, type: 'bind', source: i.image.initBinary, options: ro } : { destination: '/usr', type: 'bind', source: '/usr', options: ro },
      { destination: '/work', type: 'bind', source: i.workDir, options: rw },
      { destination: '/tmp', type: 'bind', source: i.tmpDir, options: rw },
      // The cell's private RAM-backed files: its token, hosts and resolv.conf, written by cell init at assignment.
      { destination: CELL_FILES_DIR, type: 'tmpfs', source: 'tmpfs', options: ['nosuid', 'nodev', 'noexec', 'mode=0700', `uid=${i.image?.uid ?? WORKLOAD_UID}`, `gid=${i.image?.gid ?? WORKLOAD_UID}`, 'size=1m'] },
    ],
    linux: {
      uidMappings: [{ containerID: 0, hostID: i.hostUidBase, size: UID_RANGE_SIZE }],
      gidMappings: [{ containerID: 0, hostID: i.hostUidBase, size: UID_RANGE_SIZE }],
      namespaces: [
        { type: 'pid' },
        { type: 'ipc' },
        { type: 'uts' },
        { type: 'mount' },
        { type: 'user' },
        { type: 'cgroup' },
        i.netnsPath ? { type: 'network', path: i.netnsPath } : { type: 'network' },
      ],
      cgroupsPath: i.cgroupsPath,
      resources: {
        // No device but the cell's own PTYs: /dev/pts/ptmx (5:2) and its terminals (136:*).
        devices: [
          { allow: false, access: 'rwm' },
          { allow: true, type: 'c', major: 5, minor: 2, access: 'rwm' },
          { allow: true, type: 'c', major: 136, access: 'rwm' },
        ],
        memory: { limit: i.memoryBytes, swap: i.memoryBytes },
        cpu: { quota: Math.round((i.cpuMillis / 1000) * CPU_PERIOD_US), period: CPU_PERIOD_US, shares: WARM_CPU_SHARES },
        pids: { limit: i.pids },
      },
      seccomp: cellSeccompProfile(i.runtime),
      maskedPaths: [
        '/proc/acpi', '/proc/asound', '/proc/kcore', '/proc/keys', '/proc/latency_stats',
        '/proc/timer_list', '/proc/timer_stats', '/proc/sched_debug', '/proc/scsi', '/sys/firmware',
      ],
      readonlyPaths: ['/proc/bus', '/proc/fs', '/proc/irq', '/proc/sys', '/proc/sysrq-trigger'],
    },
  };
}
