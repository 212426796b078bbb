/*
 * cell-init: the first process of every Cleanroom cell.
 *
 * It starts before any workload is known and holds nothing of any tenant:
 * it blocks reading one assignment frame from fd 0 (a FIFO the agent holds
 * open for writing; EOF means the agent is gone or the cell is drained). On assignment it forks the workload with the given argv, env and
 * working directory, and multiplexes the workload's stdout and stderr onto
 * its own fd 1 as frames. When the workload exits it sends an exit frame and
 * exits itself, which (as PID 1 of the cell's pid namespace) ends every
 * other process of the cell.
 *
 * Before the assignment, and at any time while the workload runs (token
 * refresh), the agent may send files for the cell's private tmpfs
 * (/run/cleanroom): init writes each one to a temporary name with its mode
 * and renames it into place, so a reader sees either the old or the new file.
 *
 * The assignment arrives before the workload may start: the agent hands it over first, then attaches the
 * cell's network and sets its limits while init wakes up and places the files, and only then sends "start".
 *
 * Wire format (all integers little-endian u32):
 *   file (agent -> init, fd 0): "CRF1" len payload
 *     payload = mode name\0 content   (name: [A-Za-z0-9._-], no leading dot)
 *   assignment (agent -> init, fd 0): "CRA1" len payload
 *     payload = argc envc cwd\0 argv[0]\0 ... env[0]\0 ...
 *   sandbox assignment (agent -> init, fd 0): "CRB1" 0 — instead of an assignment: this cell is a sandbox; on
 *     "start" init reports 'R' (ready) and serves requests (supervisor.c documents them) until fd 0 ends
 *   start (agent -> init, fd 0): "CRS1" 0 — the network and limits are in place: run the workload
 *   frames (init -> agent, fd 1): type(u8) len(u32) data
 *     type 'o' stdout bytes, 'e' stderr bytes,
 *     'x' exit: data = "code N" or "signal N",
 *     's' started (data = workload pid inside the cell),
 *     'E' platform error message (then init exits 125).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/capability.h>
#include <grp.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <unistd.h>
#include "cell-init.h"

#define FILES_DIR "/run/cleanroom"
#define DEFAULT_WORKLOAD_ID 1000 /* src/agent/runtime/spec.ts WORKLOAD_UID */

uid_t workload_uid = DEFAULT_WORKLOAD_ID;
gid_t workload_gid = DEFAULT_WORKLOAD_ID;
static int sigchld_pipe[2];

static void write_all(int fd, const void *buf, size_t len) {
  const char *p = buf;
  while (len > 0) {
    ssize_t n = write(fd, p, len);
    if (n < 0) {
      if (errno == EINTR) continue;
      _exit(124); /* the agent went away: nothing left to report to */
    }
    p += n;
    len -= (size_t)n;
  }
}

/* One frame in one write(v), so the agent wakes once per frame, not once for the header and again for the data. */
void send_frame(char type, const void *data, uint32_t len) {
  unsigned char hdr[5];
  hdr[0] = (unsigned char)type;
  memcpy(hdr + 1, &len, 4);
  struct iovec iov[2] = {{hdr, 5}, {(void *)data, len}};
  int n_iov = len ? 2 : 1;
  size_t left = 5 + (size_t)len;
  while (left > 0) {
    ssize_t n = writev(1, iov, n_iov);
    if (n < 0) {
      if (errno == EINTR) continue;
      _exit(124); /* the agent went away: nothing left to report to */
    }
    left -= (size_t)n;
    if (left == 0) break;
    /* A short write (pipe full): finish the rest with plain writes. */
    size_t done = (size_t)n;
    if (done < 5) {
      write_all(1, hdr + done, 5 - done);
      done = 5;
    }
    write_all(1, (const char *)data + (done - 5), len - (done - 5));
    break;
  }
}

/* send_frame2 sends one frame whose data is a small header (an id…) followed by bytes, without copying them. */
void send_frame2(char type, const void *head, uint32_t hlen, const void *data, uint32_t len) {
  unsigned char hdr[5 + 16];
  if (hlen > 16) _exit(125);
  uint32_t total = hlen + len;
  hdr[0] = (unsigned char)type;
  memcpy(hdr + 1, &total, 4);
  memcpy(hdr + 5, head, hlen);
  struct iovec iov[2] = {{hdr, 5 + hlen}, {(void *)data, len}};
  size_t left = 5 + (size_t)total;
  ssize_t n;
  while ((n = writev(1, iov, len ? 2 : 1)) < 0 && errno == EINTR) {}
  if (n < 0) _exit(124); /* the agent went away: nothing left to report to */
  left -= (size_t)n;
  if (left == 0) return;
  size_t done = (size_t)n;
  if (done < 5 + hlen) {
    write_all(1, hdr + done, 5 + hlen - done);
    done = 5 + hlen;
  }
  write_all(1, (const char *)data + (done - 5 - hlen), len - (done - 5 - hlen));
}

void fail(const char *what) {
  char msg[256];
  int n = snprintf(msg, sizeof msg, "cell-init: %s: %s", what, strerror(errno));
  send_frame('E', msg, (uint32_t)n);
  _exit(125);
}

static int read_exact(int fd, void *buf, size_t len) {
  char *p = buf;
  while (len > 0) {
    ssize_t n = read(fd, p, len);
    if (n == 0) return -1;
    if (n < 0) {
      if (errno == EINTR) continue;
      return -1;
    }
    p += n;
    len -= (size_t)n;
  }
  return 0;
}

/* Write one file into FILES_DIR atomically; a bad name or failed write is reported, not fatal. */
void place_file(const char *payload, uint32_t len) {
  if (len < 6) return;
  uint32_t mode;
  memcpy(&mode, payload, 4);
  const char *name = payload + 4;
  size_t nlen = strnlen(name, len - 4);
  if (nlen == 0 || nlen > 64 || nlen == len - 4 || name[0] == '.') return;
  for (size_t i = 0; i < nlen; i++) {
    char c = name[i];
    if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-')) return;
  }
  const char *content = name + nlen + 1;
  size_t clen = len - 4 - nlen - 1;
  char tmp[128], dst[128];
  snprintf(tmp, sizeof tmp, FILES_DIR "/.%s.new", name);
  snprintf(dst, sizeof dst, FILES_DIR "/%s", name);
  unlink(tmp);
  int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
  if (fd < 0) return;
  const char *p = content;
  while (clen > 0) {
    ssize_t n = write(fd, p, clen);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    p += n;
    clen -= (size_t)n;
  }
  int ok = clen == 0 && fchmod(fd, mode & 0444) == 0;
  close(fd);
  if (!ok || rename(tmp, dst) != 0) unlink(tmp);
}

/* Read one message header from fd 0; returns its payload (malloc'd, NUL-terminated) or NULL at EOF. */
char *read_message(char magic[4], uint32_t *len, uint32_t max) {
  unsigned char hdr[8];
  if (read_exact(0, hdr, 8) != 0) return NULL;
  memcpy(magic, hdr, 4);
  memcpy(len, hdr + 4, 4);
  if (*len > max) { errno = EMSGSIZE; fail("message too long"); }
  char *payload = malloc(*len + 1);
  if (!payload) fail("malloc");
  if (read_exact(0, payload, *len) != 0) { errno = EPIPE; fail("short message"); }
  payload[*len] = '\0';
  return payload;
}

/*
 * ignore_signal is init's disposition for every catchable signal once it has a job (see main): a signal sent to init
 * is ignored, but a fault of init's own (raised by the kernel: si_code > 0) gets its default action back, so the
 * faulting instruction, run again, ends init as SIG_IGN's forced delivery did (a handler that just returned would
 * fault for ever).
 */
static void ignore_signal(int sig, siginfo_t *info, void *context) {
  (void)context;
  if (info == NULL || info->si_code <= 0) return;
  if (sig == SIGSEGV || sig == SIGBUS || sig == SIGFPE || sig == SIGILL || sig == SIGTRAP || sig == SIGSYS) {
    struct sigaction dfl = {0};
    dfl.sa_handler = SIG_DFL;
    sigaction(sig, &dfl, NULL);
  }
}

/* set_catchable sets every signal but SIGKILL, SIGSTOP and SIGCHLD (init's own) to `sa`. */
static void set_catchable(const struct sigaction *sa) {
  for (int sig = 1; sig < NSIG; sig++) {
    if (sig == SIGKILL || sig == SIGSTOP || sig == SIGCHLD) continue;
    sigaction(sig, sa, NULL);
  }
}

/* set_catchable_handler installs `handler` (SA_SIGINFO, SA_RESTART) for every catchable signal. */
static void set_catchable_handler(void (*handler)(int, siginfo_t *, void *)) {
  struct sigaction sa = {0};
  sa.sa_sigaction = handler;
  sa.sa_flags = SA_SIGINFO | SA_RESTART;
  set_catchable(&sa);
}

static void on_sigchld(int sig) {
  (void)sig;
  int saved = errno;
  char c = 0;
  (void)!write(sigchld_pipe[1], &c, 1);
  errno = saved;
}

/* Create the working directory if missing, like a Dockerfile WORKDIR. */
int enter_dir(const char *dir) {
  if (chdir(dir) == 0) return 0;
  if (errno != ENOENT) return -1;
  char path[4096];
  size_t n = strnlen(dir, sizeof path);
  if (n >= sizeof path) { errno = ENAMETOOLONG; return -1; }
  memcpy(path, dir, n + 1);
  for (char *p = path + 1; *p; p++) {
    if (*p != '/') continue;
    *p = '\0';
    if (mkdir(path, 0755) != 0 && errno != EEXIST) return -1;
    *p = '/';
  }
  if (mkdir(path, 0755) != 0 && errno != EEXIST) return -1;
  return chdir(dir);
}

/* Resolve argv[0] against PATH from the workload env, like execvp would. */
void exec_workload(char **argv, char **envp) {
  if (strchr(argv[0], '/')) {
    execve(argv[0], argv, envp);
    return;
  }
  const char *path = "/usr/local/bin:/usr/bin:/bin";
  for (char **e = envp; *e; e++)
    if (strncmp(*e, "PATH=", 5) == 0) path = *e + 5;
  char buf[4096];
  int saved = ENOENT;
  const char *p = path;
  while (*p) {
    const char *end = strchr(p, ':');
    size_t dlen = end ? (size_t)(end - p) : strlen(p);
    if (dlen > 0 && dlen + strlen(argv[0]) + 2 < sizeof buf) {
      memcpy(buf, p, dlen);
      buf[dlen] = '/';
      strcpy(buf + dlen + 1, argv[0]);
      execve(buf, argv, envp);
      if (errno != ENOENT && errno != ENOTDIR) saved = errno;
    }
    if (!end) break;
    p = end + 1;
  }
  errno = saved;
}

/*
 * drop_bounding_set empties init's capability bounding set while the cell is still warm (it needs CAP_SETPCAP, still
 * effective before act_as_workload). Init never execs anything that should gain a capability, and every child inherits
 * the empty set, so the workload's child need not drop each capability itself (64 system calls) on the start path.
 */
static void drop_bounding_set(void) {
  for (int cap = 0; cap < 64; cap++)
    if (syscall(SYS_prctl, PR_CAPBSET_DROP, cap, 0, 0, 0) != 0 && errno != EINVAL) fail("PR_CAPBSET_DROP");
}

/*
 * Identity. Init is started as the cell's root (uid and gid 0 of the cell's user namespace, an unprivileged host
 * uid) holding only CAP_SETUID, CAP_SETGID and CAP_SETPCAP. It acts as the workload user at once (effective ids 1000,
 * so the files it places belong to the workload) but keeps real and saved uid 0: the workload, uid 1000 with no
 * capability, then cannot signal, trace or open init (kill and ptrace need a matching real or saved uid, or a
 * capability). Init empties its bounding set at once (drop_bounding_set); all of the workload's child's ids become
 * 1000 before execve, which clears every capability it had; init then gives up its own capabilities for good. Raw
 * syscalls: they act on this task only, which is what the vfork child needs.
 */
static void act_as_workload(void) {
  if (getuid() != 0) return; /* started as the workload user: nothing to separate */
  drop_bounding_set();
  if (syscall(SYS_setresgid, -1, workload_gid, -1) != 0 || syscall(SYS_setresuid, -1, workload_uid, -1) != 0) fail("setresuid");
}

int become_workload(void) {
  if (getuid() != 0) return 0;
  if (syscall(SYS_setresuid, -1, 0, -1) != 0) return -1; /* effective capabilities back, from the permitted set */
  if (syscall(SYS_setgroups, 0, NULL) != 0) return -1;
  if (syscall(SYS_setresgid, workload_gid, workload_gid, workload_gid) != 0) return -1;
  return (int)syscall(SYS_setresuid, workload_uid, workload_uid, workload_uid); /* clears every capability */
}

/*
 * A sandbox's supervisor gives up its capabilities before it serves anything (drop_for_sandbox): its bounding set is
 * empty, it has no supplementary group and no capability, but keeps real and saved uid 0 and effective uid
 * workload_uid. Each child it starts (a process, a file operation) then takes the workload's identity without any
 * capability: setresuid/setresgid to ids the caller already holds as effective ids need none.
 */
int become_workload_nocaps(void) {
  if (getuid() != 0) return 0;
  if (syscall(SYS_setresgid, workload_gid, workload_gid, workload_gid) != 0) return -1;
  return (int)syscall(SYS_setresuid, workload_uid, workload_uid, workload_uid);
}

static void drop_capabilities(void) {
  struct __user_cap_header_struct hdr = {_LINUX_CAPABILITY_VERSION_3, 0};
  struct __user_cap_data_struct data[2] = {{0, 0, 0}, {0, 0, 0}};
  if (syscall(SYS_capset, &hdr, data) != 0) fail("capset");
}

static void drop_for_sandbox(void) {
  if (getuid() != 0) return;
  if (syscall(SYS_setresuid, -1, 0, -1) != 0) fail("setresuid"); /* effective capabilities back, for setgroups */
  if (syscall(SYS_setgroups, 0, NULL) != 0) fail("setgroups");
  if (syscall(SYS_setresuid, -1, workload_uid, -1) != 0) fail("setresuid");
  drop_capabilities();
  if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0) fail("prctl(PR_SET_DUMPABLE)"); /* an id change may have reset it */
}

/* parse_id reads an optional uid/gid argument: 1..65535 (0 would share init's real uid and void the model above). */
static unsigned parse_id(const char *s) {
  char *end;
  unsigned long v = strtoul(s, &end, 10);
  if (*s == '\0' || *end != '\0' || v == 0 || v > 65535) { errno = EINVAL; fail("workload uid/gid must be 1..65535"); }
  return (unsigned)v;
}

/* set_catchable_signals sets every catchable signal (see set_catchable) to `disposition`. */
void set_catchable_signals(void (*disposition)(int)) {
  struct sigaction sa = {0};
  sa.sa_handler = disposition;
  sa.sa_flags = SA_RESTART;
  set_catchable(&sa);
}

/*
 * file_op_main: `/.cr/init --file-op OP FLAGS MODE PATH TO`, started by the supervisor (supervisor.c start_op) with
 * the workload's identity and a socket at fd 3: runs one file operation (file-ops.c) and exits with its errno. A
 * workload may run this itself too; it gains nothing by it (it runs with the workload's own rights).
 */
static int file_op_main(int argc, char **argv) {
  prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
  if (argc != 7) return EINVAL;
  return run_file_op((uint32_t)strtoul(argv[2], NULL, 10), (uint32_t)strtoul(argv[3], NULL, 10), (uint32_t)strtoul(argv[4], NULL, 10), argv[5], argv[6], 3);
}

int main(int argc, char **argv) {
  if (argc >= 2 && strcmp(argv[1], "--file-op") == 0) return file_op_main(argc, argv);
  /* Init runs as the workload's uid, so without this the workload could open /proc/1/mem read-write, read init's
     environ and fds, or ptrace it: a non-dumpable process's /proc entries belong to root and ptrace access needs
     CAP_SYS_PTRACE, which no process of a cell has. (Signals from inside do not reach it either: its real and saved
     uid are 0, so the workload may send it only SIGCONT, and it ignores every catchable signal.) The workload gets its
     own flag back at execve. */
  if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0) fail("prctl(PR_SET_DUMPABLE)");
  /* The kernel drops signals sent to a pid namespace's init from inside it unless init handles them; gVisor delivers
     them, so init ignores every catchable signal itself (with a job, through a handler that does nothing: see
     ignore_signal; the workload gets default dispositions back at execve). */
  set_catchable_signals(SIG_IGN);
  if (argc >= 2) workload_uid = parse_id(argv[1]);
  workload_gid = argc >= 3 ? parse_id(argv[2]) : workload_uid;
  act_as_workload();
  /* fd 0 is the read end of a FIFO the agent holds; it may arrive non-blocking. */
  int fl = fcntl(0, F_GETFL);
  if (fl >= 0) fcntl(0, F_SETFL, fl & ~O_NONBLOCK);
  char magic[4];
  uint32_t len;
  char *payload;
  for (;;) {
    payload = read_message(magic, &len, MAX_ASSIGNMENT);
    if (!payload) return 0; /* pool drained: never assigned */
    if (memcmp(magic, "CRA1", 4) == 0) break;
    if (memcmp(magic, "CRB1", 4) == 0) {
      free(payload);
      for (;;) { /* files until "start", as for a job */
        char m[4];
        uint32_t flen;
        char *f = read_message(m, &flen, MAX_FILE);
        if (!f) return 0;
        int start = memcmp(m, "CRS1", 4) == 0;
        if (!start && memcmp(m, "CRF1", 4) != 0) { errno = EPROTO; fail("bad message before start"); }
        if (!start) place_file(f, flen);
        free(f);
        if (start) break;
      }
      drop_for_sandbox();
      supervise();
    }
    if (memcmp(magic, "CRF1", 4) != 0 || len > MAX_FILE) { errno = EPROTO; fail("bad message before assignment"); }
    place_file(payload, len);
    free(payload);
  }
  if (len < 9) { errno = EMSGSIZE; fail("bad assignment length"); }

  uint32_t wargc, envc;
  memcpy(&wargc, payload, 4);
  memcpy(&envc, payload + 4, 4);
  if (wargc == 0 || wargc > 65536 || envc > 65536) { errno = EINVAL; fail("bad counts"); }
  char **wargv = calloc(wargc + 1, sizeof *wargv);
  char **envp = calloc(envc + 1, sizeof *envp);
  if (!wargv || !envp) fail("calloc");
  char *p = payload + 8, *end = payload + len;
  char *cwd = p;
  p += strnlen(p, (size_t)(end - p)) + 1;
  for (uint32_t i = 0; i < wargc; i++) {
    if (p >= end) { errno = EINVAL; fail("truncated argv"); }
    wargv[i] = p;
    p += strnlen(p, (size_t)(end - p)) + 1;
  }
  for (uint32_t i = 0; i < envc; i++) {
    if (p >= end) { errno = EINVAL; fail("truncated env"); }
    envp[i] = p;
    p += strnlen(p, (size_t)(end - p)) + 1;
  }

  /* Every catchable signal gets a handler that does nothing in place of SIG_IGN, now, while the agent attaches the
     network: init still ignores them (with SA_RESTART), and execve resets handled signals to their defaults by itself,
     so the workload's child need not reset each ignored one (some 60 system calls) after the start frame. */
  set_catchable_handler(ignore_signal);
  int out[2], err[2];
  if (pipe2(sigchld_pipe, O_CLOEXEC | O_NONBLOCK) || pipe2(out, O_CLOEXEC) ||
      pipe2(err, O_CLOEXEC))
    fail("pipe");
  struct sigaction sa = {0};
  sa.sa_handler = on_sigchld;
  sa.sa_flags = SA_RESTART | SA_NOCLDSTOP;
  sigaction(SIGCHLD, &sa, NULL);

  /* Files (a refreshed token) may still come; the workload starts on "start". */
  for (;;) {
    char m[4];
    uint32_t flen;
    char *f = read_message(m, &flen, MAX_FILE);
    if (!f) return 0; /* the agent gave up on this cell before starting it */
    int start = memcmp(m, "CRS1", 4) == 0;
    if (!start && memcmp(m, "CRF1", 4) != 0) { errno = EPROTO; fail("bad message before start"); }
    if (!start) place_file(f, flen);
    free(f);
    if (start) break;
  }

  /* vfork: the child borrows init's memory until execve, so no page tables are copied and no copy-on-write faults
     follow; on these VMs that halves the time from assignment to the workload running (fork+exec is slow here).
     Until execve or _exit the child never returns from main and changes no memory the parent relies on (init is
     single-threaded, so no lock can be held). */
  pid_t child = vfork();
  if (child < 0) fail("fork");
  if (child == 0) {
    int devnull = open("/dev/null", O_RDONLY);
    if (devnull > 0) {
      dup2(devnull, 0);
      close(devnull);
    }
    dup2(out[1], 1);
    dup2(err[1], 2);
    /* No signal is ignored here (see ignore_signal): execve gives the workload every default disposition. */
    if (become_workload() != 0) {
      dprintf(2, "cleanroom: cannot take the workload's identity: %s\n", strerror(errno));
      _exit(126);
    }
    if (enter_dir(cwd) != 0) {
      dprintf(2, "cleanroom: cannot use working directory %s: %s\n", cwd, strerror(errno));
      _exit(126);
    }
    exec_workload(wargv, envp);
    int e = errno;
    const char *what = (e == ENOENT) ? "command not found" : strerror(e);
    dprintf(2, "cleanroom: cannot run %s: %s\n", wargv[0], what);
    _exit(e == ENOENT ? 127 : 126);
  }
  if (getuid() == 0) drop_capabilities(); /* the only use of them was the child's change of identity */
  close(out[1]);
  close(err[1]);
  char started[32];
  send_frame('s', started, (uint32_t)snprintf(started, sizeof started, "%d", child));

  /* fd 0 stays open for file updates (a refreshed token) until the agent closes it. */
  struct pollfd fds[4] = {{out[0], POLLIN, 0}, {err[0], POLLIN, 0}, {sigchld_pipe[0], POLLIN, 0}, {0, POLLIN, 0}};
  char buf[65536];
  int status = 0, exited = 0, drains = 0;
  while ((!exited || fds[0].fd >= 0 || fds[1].fd >= 0) && drains < 256) {
    if (exited) drains++;
    /* After the workload exits, drain what is already buffered, then stop:
       a daemonised grandchild holding the pipe open must not keep us alive. */
    fds[3].revents = 0; /* not polled once the workload exited: never act on a stale event */
    int r = poll(fds, exited ? 3 : 4, exited ? 0 : -1);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0 && exited) break;
    for (int i = 0; i < 2; i++) {
      if (fds[i].fd < 0 || !(fds[i].revents & (POLLIN | POLLHUP | POLLERR))) continue;
      ssize_t n = read(fds[i].fd, buf, sizeof buf);
      if (n > 0) send_frame(i == 0 ? 'o' : 'e', buf, (uint32_t)n);
      else if (n == 0 || errno != EINTR) { close(fds[i].fd); fds[i].fd = -1; }
    }
    if (!exited && fds[3].fd >= 0 && (fds[3].revents & (POLLIN | POLLHUP | POLLERR))) {
      char m[4];
      uint32_t flen;
      char *f = read_message(m, &flen, MAX_FILE);
      if (!f) fds[3].fd = -1;
      else {
        if (memcmp(m, "CRF1", 4) == 0) place_file(f, flen);
        free(f);
      }
    }
    if (fds[2].revents & POLLIN) {
      while (read(sigchld_pipe[0], buf, sizeof buf) > 0) {}
      int st;
      pid_t w;
      while ((w = waitpid(-1, &st, WNOHANG)) > 0)
        if (w == child) {
          status = st;
          exited = 1;
          /* Handled, SIGCONT (which any process of the session may send) would interrupt every poll of the drain
             below; ignored again, the kernel drops it (pid namespace init), as before the job. Other signals from
             inside fail the permission check (init's real and saved uid are 0). */
          signal(SIGCONT, SIG_IGN);
        }
    }
  }
  char msg[32];
  int n = WIFSIGNALED(status) ? snprintf(msg, sizeof msg, "signal %d", WTERMSIG(status))
                              : snprintf(msg, sizeof msg, "code %d", WEXITSTATUS(status));
  send_frame('x', msg, (uint32_t)n);
  return 0;
}
