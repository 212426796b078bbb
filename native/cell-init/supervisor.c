/*
 * supervisor.c: cell init as a sandbox's supervisor. After "start" it reports ready and serves the agent's requests
 * from fd 0 until the agent closes it (then it exits, and with it, as PID 1, every process of the cell). It holds no
 * capability (cell-init.c: drop_for_sandbox); each process and each file operation runs in a child that takes the
 * workload's identity, so init itself never opens a path on anyone's behalf.
 *
 * Requests (agent -> init, fd 0): magic(4) len(u32) payload; ids are the agent's u32 handles, integers little-endian.
 *   "CRF1" a file for /run/cleanroom (a refreshed token), as before the start
 *   "CRP1" start a process: id flags(1 pty, 2 stdin) cols(u16) rows(u16) argc envc cwd\0 argv..\0 env..\0
 *   "CRI1" stdin bytes: id data          "CRC1" close stdin: id (a PTY gets ^D)
 *   "CRK1" signal: id sig (to the process's group; each process leads its own session)
 *   "CRZ1" resize a PTY: id cols(u16) rows(u16)
 *   "CRW1" output flow: id paused(u32): while paused, init does not read the process's pipe or PTY, so it blocks
 *   "CRO1" file operation: id op flags(1 recursive) mode credit path\0 to\0 (op: file-ops.c FOP_*)
 *   "CRD1" write data: id data           "CRE1" end of write data: id
 *   "CRG1" read credit: id bytes (init forwards at most the granted bytes of a read)
 *   "CRX1" cancel a file operation: id (its child is killed; its result still follows)
 * Frames (init -> agent, fd 1): type(u8) len(u32) data
 *   'R' ready; 'P' started: id pid; 'F' start failed: id errno stage(0 exec, 1 cwd, 2 identity, 3 resources, 4 open tty, 5 controlling tty)
 *   'O' output: id stream(u8: 1 stdout, 2 stderr, 3 pty) bytes (at most IO_CHUNK)
 *   'X' exited: id kind(0 code, 1 signal) value — after the process's output up to its exit has been sent
 *   'W' stdin taken: id bytes closed(1: the process's stdin is gone; pending bytes were dropped)
 *   'D' file data: id bytes; 'A' write data taken: id bytes; 'r' file result: id errno (0 ok), after its data
 * The agent keeps at most IO_CHUNK of stdin and IO_CHUNK of write data in flight per process / operation (more is a
 * protocol violation: init ends). Every buffer here has a fixed size; nothing grows with what a client sends.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>
#include "cell-init.h"

struct proc {
  uint32_t id;
  pid_t pid; /* 0: free slot */
  int out, err, in; /* init's ends; -1 when closed. A PTY: out = in = the master, err = -1 */
  int pty, paused, exited, status;
  char *inbuf; /* stdin not yet taken by the process: at most IO_CHUNK */
  uint32_t inlen;
  int close_in; /* close stdin once inbuf is written */
};

struct op {
  uint32_t id;
  pid_t pid; /* 0: free slot */
  int sock;
  int reading; /* its output is credit-limited (a read) */
  uint32_t credit;
  char *buf; /* write data not yet taken by the child: at most IO_CHUNK */
  uint32_t len;
  int end, exited, status, eof;
};

static struct proc procs[MAX_PROCS];
static struct op ops[MAX_OPS];
static int chld[2];
static volatile int vfork_errno, vfork_stage;

static void on_chld(int sig) {
  (void)sig;
  int saved = errno;
  char c = 0;
  (void)!write(chld[1], &c, 1);
  errno = saved;
}

static void nonblock(int fd) {
  int fl = fcntl(fd, F_GETFL);
  if (fl >= 0) fcntl(fd, F_SETFL, fl | O_NONBLOCK);
}

static struct proc *find_proc(uint32_t id) {
  for (int i = 0; i < MAX_PROCS; i++)
    if (procs[i].pid && procs[i].id == id) return &procs[i];
  return NULL;
}

static struct op *find_op(uint32_t id) {
  for (int i = 0; i < MAX_OPS; i++)
    if (ops[i].pid && ops[i].id == id) return &ops[i];
  return NULL;
}

static void start_failed(uint32_t id, int err, uint32_t stage) {
  uint32_t f[3] = {id, (uint32_t)err, stage};
  send_frame('F', f, sizeof f);
}

static void close_fd(int *fd) {
  if (*fd >= 0) close(*fd);
  *fd = -1;
}

/* start_proc runs one process: vfork (init's memory is borrowed until execve; see cell-init.c) as in job mode. */
static void start_proc(const char *p, uint32_t len) {
  if (len < 20) { errno = EPROTO; fail("short process request"); }
  uint32_t id, flags, argc, envc;
  uint16_t cols, rows;
  memcpy(&id, p, 4);
  memcpy(&flags, p + 4, 4);
  memcpy(&cols, p + 8, 2);
  memcpy(&rows, p + 10, 2);
  memcpy(&argc, p + 12, 4);
  memcpy(&envc, p + 16, 4);
  if (argc == 0 || argc > 65536 || envc > 65536) { errno = EPROTO; fail("bad process counts"); }
  struct proc *slot = NULL;
  for (int i = 0; i < MAX_PROCS && !slot; i++)
    if (!procs[i].pid) slot = &procs[i];
  if (!slot || find_proc(id)) return start_failed(id, slot ? EEXIST : EAGAIN, 3);
  char **argv = calloc(argc + 1, sizeof *argv), **envp = calloc(envc + 1, sizeof *envp);
  if (!argv || !envp) {
    free(argv);
    free(envp);
    return start_failed(id, ENOMEM, 3);
  }
  const char *q = p + 20, *end = p + len;
  const char *cwd = q;
  q += strnlen(q, (size_t)(end - q)) + 1;
  for (uint32_t i = 0; i < argc + envc; i++) {
    if (q >= end) { errno = EPROTO; fail("truncated process request"); }
    if (i < argc) argv[i] = (char *)q;
    else envp[i - argc] = (char *)q;
    q += strnlen(q, (size_t)(end - q)) + 1;
  }
  int pty = flags & 1, want_in = flags & 2;
  int out[2] = {-1, -1}, err[2] = {-1, -1}, in[2] = {-1, -1}, master = -1;
  char slave_name[64] = "";
  int ok = 1;
  if (pty) {
    master = open("/dev/pts/ptmx", O_RDWR | O_NOCTTY | O_CLOEXEC);
    if (master < 0) master = open("/dev/ptmx", O_RDWR | O_NOCTTY | O_CLOEXEC);
    int unlock = 0;
    unsigned ptn = 0;
    /* TIOCGPTN, not ptsname_r: glibc's checks the device numbers, which gVisor's devpts does not share. */
    ok = master >= 0 && ioctl(master, TIOCSPTLCK, &unlock) == 0 && ioctl(master, TIOCGPTN, &ptn) == 0;
    if (ok) snprintf(slave_name, sizeof slave_name, "/dev/pts/%u", ptn);
    if (ok) {
      struct winsize ws = {rows ? rows : 24, cols ? cols : 80, 0, 0};
      ioctl(master, TIOCSWINSZ, &ws);
    }
  } else {
    ok = pipe2(out, O_CLOEXEC) == 0 && pipe2(err, O_CLOEXEC) == 0 && (!want_in || pipe2(in, O_CLOEXEC) == 0);
  }
  if (!ok) {
    int e = errno;
    int fds[] = {out[0], out[1], err[0], err[1], in[0], in[1], master};
    for (unsigned i = 0; i < sizeof fds / sizeof fds[0]; i++)
      if (fds[i] >= 0) close(fds[i]);
    free(argv);
    free(envp);
    return start_failed(id, e, 3);
  }
  vfork_errno = 0;
  vfork_stage = 0;
  pid_t child = vfork();
  if (child == 0) {
    set_catchable_signals(SIG_DFL);
    signal(SIGCHLD, SIG_DFL);
    if (setsid() < 0) { vfork_errno = errno; vfork_stage = 2; _exit(126); }
    if (pty) {
      int s = open(slave_name, O_RDWR);
      if (s < 0) { vfork_errno = errno; vfork_stage = 4; _exit(126); }
      /* Opening the terminal as a session leader without O_NOCTTY already made it the controlling one (gVisor then
         refuses TIOCSCTTY with EINVAL); elsewhere the ioctl makes sure. */
      if (ioctl(s, TIOCSCTTY, 0) != 0 && errno != EINVAL) { vfork_errno = errno; vfork_stage = 5; _exit(126); }
      dup2(s, 0);
      dup2(s, 1);
      dup2(s, 2);
      if (s > 2) close(s);
    } else {
      if (want_in) dup2(in[0], 0);
      else {
        int dn = open("/dev/null", O_RDONLY);
        if (dn >= 0 && dn != 0) { dup2(dn, 0); close(dn); }
      }
      dup2(out[1], 1);
      dup2(err[1], 2);
    }
    if (become_workload_nocaps() != 0) { vfork_errno = errno; vfork_stage = 2; _exit(126); }
    if (enter_dir(cwd) != 0) { vfork_errno = errno; vfork_stage = 1; _exit(126); }
    exec_workload(argv, envp);
    vfork_errno = errno ? errno : ENOENT;
    vfork_stage = 0;
    _exit(127);
  }
  int e = errno;
  free(argv);
  free(envp);
  if (pty) {
    slot->out = slot->in = master;
    slot->err = -1;
  } else {
    close(out[1]);
    close(err[1]);
    if (in[0] >= 0) close(in[0]);
    slot->out = out[0];
    slot->err = err[0];
    slot->in = in[1];
  }
  if (child < 0 || vfork_errno) {
    /* The child has exited (or never was): reap it here so that no exit frame follows a failed start. */
    int st;
    if (child > 0) waitpid(child, &st, 0);
    int fds[] = {slot->out, slot->err, pty ? -1 : slot->in};
    for (int i = 0; i < 3; i++)
      if (fds[i] >= 0) close(fds[i]);
    return start_failed(id, child < 0 ? e : vfork_errno, child < 0 ? 3 : (uint32_t)vfork_stage);
  }
  slot->id = id;
  slot->pid = child;
  slot->pty = pty;
  slot->paused = slot->exited = slot->status = slot->close_in = 0;
  slot->inbuf = NULL;
  slot->inlen = 0;
  nonblock(slot->out);
  if (slot->err >= 0) nonblock(slot->err);
  if (slot->in >= 0 && !pty) nonblock(slot->in);
  uint32_t f[2] = {id, (uint32_t)child};
  send_frame('P', f, sizeof f);
}

static void stdin_report(struct proc *pr, uint32_t taken, uint32_t closed) {
  uint32_t f[3] = {pr->id, taken, closed};
  send_frame('W', f, sizeof f);
}

/* flush_stdin writes what the process's stdin takes now; reports it; closes stdin once asked and empty. */
static void flush_stdin(struct proc *pr) {
  uint32_t taken = 0;
  while (pr->inlen > 0 && pr->in >= 0) {
    ssize_t n = write(pr->in, pr->inbuf + taken, pr->inlen);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno == EAGAIN) break;
    if (n <= 0) { /* the process closed its stdin (EPIPE) or is gone */
      free(pr->inbuf);
      pr->inbuf = NULL;
      pr->inlen = 0;
      if (!pr->pty) close_fd(&pr->in);
      stdin_report(pr, taken, 1);
      return;
    }
    taken += (uint32_t)n;
    pr->inlen -= (uint32_t)n;
  }
  if (pr->inlen > 0) memmove(pr->inbuf, pr->inbuf + taken, pr->inlen);
  else {
    free(pr->inbuf);
    pr->inbuf = NULL;
  }
  if (pr->inlen == 0 && pr->close_in && pr->in >= 0) {
    if (pr->pty) {
      char eot = 4;
      (void)!write(pr->in, &eot, 1);
    } else close_fd(&pr->in);
    pr->close_in = 0;
  }
  if (taken) stdin_report(pr, taken, 0);
}

static void on_stdin(const char *p, uint32_t len, int close_it) {
  uint32_t id;
  memcpy(&id, p, 4);
  struct proc *pr = find_proc(id);
  if (!pr) return; /* ended meanwhile: the agent knows from its exit */
  if (pr->in < 0 || pr->exited) {
    if (!close_it) stdin_report(pr, 0, 1);
    return;
  }
  if (close_it) {
    pr->close_in = 1;
    flush_stdin(pr);
    return;
  }
  uint32_t n = len - 4;
  if (pr->inlen + n > IO_CHUNK) { errno = EPROTO; fail("stdin window exceeded"); }
  if (!pr->inbuf && !(pr->inbuf = malloc(IO_CHUNK))) fail("malloc");
  memcpy(pr->inbuf + pr->inlen, p + 4, n);
  pr->inlen += n;
  flush_stdin(pr);
}

/* read_output forwards at most one chunk from fd; returns 0 at EOF or error (then fd is closed), 1 otherwise. */
static int read_output(struct proc *pr, int *fd, uint8_t stream, char *buf) {
  ssize_t n;
  while ((n = read(*fd, buf, IO_CHUNK)) < 0 && errno == EINTR) {}
  if (n > 0) {
    unsigned char head[5];
    memcpy(head, &pr->id, 4);
    head[4] = stream;
    send_frame2('O', head, 5, buf, (uint32_t)n);
    return 1;
  }
  if (n < 0 && errno == EAGAIN) return 2;
  if (pr->pty && fd == &pr->out) pr->in = -1; /* the master is both */
  close_fd(fd);
  return 0;
}

/*
 * finish_proc reports an exited process once its output is drained (EOF, or nothing more buffered), paused or not:
 * what an exited process left in its pipe is bounded (the pipe's size, and at most 16 more chunks from a background
 * child still holding it), and its exit must not wait for a client that stopped reading.
 */
static void finish_proc(struct proc *pr, char *buf) {
  if (!pr->exited) return;
  for (int i = 0; i < 16 && (pr->out >= 0 || pr->err >= 0); i++) {
    int more = 0;
    if (pr->out >= 0) more |= read_output(pr, &pr->out, pr->pty ? 3 : 1, buf) == 1;
    if (pr->err >= 0) more |= read_output(pr, &pr->err, 2, buf) == 1;
    if (!more) break; /* drained: a background child holding the pipe open must not keep the report back */
  }
  close_fd(&pr->out);
  close_fd(&pr->err);
  if (!pr->pty) close_fd(&pr->in);
  free(pr->inbuf);
  uint32_t f[3] = {pr->id, WIFSIGNALED(pr->status) ? 1u : 0u,
                   WIFSIGNALED(pr->status) ? (uint32_t)WTERMSIG(pr->status) : (uint32_t)WEXITSTATUS(pr->status)};
  send_frame('X', f, sizeof f);
  memset(pr, 0, sizeof *pr);
}

/* start_op forks a child that takes the workload's identity and runs one file operation (file-ops.c). */
static void start_op(const char *p, uint32_t len) {
  if (len < 20) { errno = EPROTO; fail("short file request"); }
  uint32_t id, op, flags, mode, credit;
  memcpy(&id, p, 4);
  memcpy(&op, p + 4, 4);
  memcpy(&flags, p + 8, 4);
  memcpy(&mode, p + 12, 4);
  memcpy(&credit, p + 16, 4);
  const char *path = p + 20, *end = p + len;
  size_t plen = strnlen(path, (size_t)(end - path));
  const char *to = path + plen + 1;
  if (to >= end) to = "";
  struct op *slot = NULL;
  for (int i = 0; i < MAX_OPS && !slot; i++)
    if (!ops[i].pid) slot = &ops[i];
  uint32_t r[2] = {id, EAGAIN};
  if (!slot || find_op(id)) return send_frame('r', r, sizeof r);
  int sv[2];
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) {
    r[1] = (uint32_t)errno;
    return send_frame('r', r, sizeof r);
  }
  /* vfork + execve of a fresh init image in file-op mode, not fork: a fork copies init's address space, which takes
     ~1.7 s under gVisor's ptrace platform; this costs what any process start costs. Nothing of init's stays open in
     it (every fd of init is close-on-exec; 0-2 become /dev/null, the socket fd 3), and it holds none of init's memory. */
  char opbuf[3][16];
  snprintf(opbuf[0], 16, "%u", op);
  snprintf(opbuf[1], 16, "%u", flags);
  snprintf(opbuf[2], 16, "%u", mode);
  char *args[] = {"/.cr/init", "--file-op", opbuf[0], opbuf[1], opbuf[2], (char *)path, (char *)to, NULL};
  char *noenv[] = {NULL};
  int dn = open("/dev/null", O_RDWR | O_CLOEXEC);
  vfork_errno = 0;
  pid_t child = vfork();
  if (child == 0) {
    if (dn < 0) _exit(EMFILE);
    dup2(dn, 0);
    dup2(dn, 1);
    dup2(dn, 2);
    dup2(sv[1], 3);
    set_catchable_signals(SIG_DFL);
    signal(SIGCHLD, SIG_DFL);
    if (become_workload_nocaps() != 0) _exit(EPERM);
    execve("/.cr/init", args, noenv);
    vfork_errno = errno;
    _exit(ENOEXEC);
  }
  if (dn >= 0) close(dn);
  close(sv[1]);
  if (child < 0) {
    close(sv[0]);
    r[1] = (uint32_t)errno;
    return send_frame('r', r, sizeof r);
  }
  memset(slot, 0, sizeof *slot);
  slot->id = id;
  slot->pid = child;
  slot->sock = sv[0];
  slot->reading = op == 5; /* FOP_READ */
  slot->credit = credit;
  nonblock(sv[0]);
}

/* flush_op writes pending write data to the child; reports what it took; ends the data once asked. */
static void flush_op(struct op *o) {
  uint32_t taken = 0;
  while (o->len > 0 && o->sock >= 0) {
    ssize_t n = send(o->sock, o->buf + taken, o->len, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno == EAGAIN) break;
    if (n <= 0) { /* the child stopped reading: it failed, and its result will say why */
      o->len = 0;
      break;
    }
    taken += (uint32_t)n;
    o->len -= (uint32_t)n;
  }
  if (o->len > 0) memmove(o->buf, o->buf + taken, o->len);
  else {
    free(o->buf);
    o->buf = NULL;
  }
  if (taken) {
    uint32_t f[2] = {o->id, taken};
    send_frame('A', f, sizeof f);
  }
  if (o->len == 0 && o->end == 1 && o->sock >= 0) {
    shutdown(o->sock, SHUT_WR);
    o->end = 2;
  }
}

static void on_op_data(const char *p, uint32_t len, int end) {
  uint32_t id;
  memcpy(&id, p, 4);
  struct op *o = find_op(id);
  if (!o || o->exited) return; /* failed meanwhile: its result is on its way */
  if (end) {
    if (!o->end) o->end = 1;
  } else {
    uint32_t n = len - 4;
    if (o->len + n > IO_CHUNK) { errno = EPROTO; fail("write window exceeded"); }
    if (!o->buf && !(o->buf = malloc(IO_CHUNK))) fail("malloc");
    memcpy(o->buf + o->len, p + 4, n);
    o->len += n;
  }
  flush_op(o);
}

/* finish_op reports a file operation once its child exited and its output was read to the end. */
static void finish_op(struct op *o) {
  if (!o->exited || !o->eof) return;
  close_fd(&o->sock);
  free(o->buf);
  int st = o->status;
  uint32_t r[2] = {o->id, WIFEXITED(st) ? (uint32_t)WEXITSTATUS(st) : (uint32_t)EINTR};
  send_frame('r', r, sizeof r);
  memset(o, 0, sizeof *o);
}

static void read_op(struct op *o, char *buf) {
  uint32_t want = IO_CHUNK;
  if (o->reading && o->credit < want) want = o->credit;
  if (want == 0) return;
  ssize_t n;
  while ((n = read(o->sock, buf, want)) < 0 && errno == EINTR) {}
  if (n > 0) {
    if (o->reading) o->credit -= (uint32_t)n;
    send_frame2('D', &o->id, 4, buf, (uint32_t)n);
  } else if (n == 0 || errno != EAGAIN) {
    o->eof = 1;
  }
}

static void reap(void) {
  int st;
  pid_t w;
  while ((w = waitpid(-1, &st, WNOHANG)) > 0) {
    for (int i = 0; i < MAX_PROCS; i++)
      if (procs[i].pid == w) { procs[i].exited = 1; procs[i].status = st; }
    for (int i = 0; i < MAX_OPS; i++)
      if (ops[i].pid == w) { ops[i].exited = 1; ops[i].status = st; }
  }
}

static void on_request(const char *m, char *p, uint32_t len) {
  uint32_t id = 0, a = 0;
  if (len >= 4) memcpy(&id, p, 4);
  if (len >= 8) memcpy(&a, p + 4, 4);
  if (memcmp(m, "CRF1", 4) == 0) {
    if (len <= MAX_FILE) place_file(p, len);
    return;
  }
  if (memcmp(m, "CRP1", 4) == 0) return start_proc(p, len);
  if (memcmp(m, "CRO1", 4) == 0) return start_op(p, len);
  if (len < 4) { errno = EPROTO; fail("short request"); }
  if (memcmp(m, "CRI1", 4) == 0) return on_stdin(p, len, 0);
  if (memcmp(m, "CRC1", 4) == 0) return on_stdin(p, len, 1);
  if (memcmp(m, "CRD1", 4) == 0) return on_op_data(p, len, 0);
  if (memcmp(m, "CRE1", 4) == 0) return on_op_data(p, len, 1);
  if (memcmp(m, "CRX1", 4) == 0) {
    struct op *o = find_op(id);
    if (o && !o->exited) kill(o->pid, SIGKILL);
    return;
  }
  if (len < 8) { errno = EPROTO; fail("short request"); }
  struct proc *pr = find_proc(id);
  if (memcmp(m, "CRK1", 4) == 0) {
    if (pr && !pr->exited && a > 0 && a < 65 && kill(-pr->pid, (int)a) != 0) kill(pr->pid, (int)a);
  } else if (memcmp(m, "CRZ1", 4) == 0) {
    uint16_t cols, rows;
    memcpy(&cols, p + 4, 2);
    memcpy(&rows, p + 6, 2);
    struct winsize ws = {rows, cols, 0, 0};
    if (pr && pr->pty && pr->out >= 0) ioctl(pr->out, TIOCSWINSZ, &ws);
  } else if (memcmp(m, "CRW1", 4) == 0) {
    if (pr) pr->paused = a != 0;
  } else if (memcmp(m, "CRG1", 4) == 0) {
    struct op *o = find_op(id);
    if (o && o->credit + (uint64_t)a <= 0x7fffffff) o->credit += a;
  } else {
    errno = EPROTO;
    fail("unknown request");
  }
}

void supervise(void) {
  if (pipe2(chld, O_CLOEXEC | O_NONBLOCK) != 0) fail("pipe");
  struct sigaction sa = {0};
  sa.sa_handler = on_chld;
  sa.sa_flags = SA_RESTART | SA_NOCLDSTOP;
  sigaction(SIGCHLD, &sa, NULL);
  static char buf[IO_CHUNK];
  /* One poll entry per fd: fd 0, the SIGCHLD pipe, then each process's out, err and stdin, each operation's socket. */
  static struct pollfd fds[2 + MAX_PROCS * 3 + MAX_OPS];
  static void *owner[2 + MAX_PROCS * 3 + MAX_OPS];
  send_frame('R', NULL, 0);
  for (;;) {
    int n = 0;
    fds[n++] = (struct pollfd){0, POLLIN, 0};
    fds[n++] = (struct pollfd){chld[0], POLLIN, 0};
    for (int i = 0; i < MAX_PROCS; i++) {
      struct proc *pr = &procs[i];
      if (!pr->pid) continue;
      short in_ev = pr->inlen > 0 ? POLLOUT : 0;
      if (pr->out >= 0 && (!pr->paused || (pr->pty && in_ev))) {
        owner[n] = pr;
        fds[n++] = (struct pollfd){pr->out, (short)((pr->paused ? 0 : POLLIN) | (pr->pty ? in_ev : 0)), 0};
      }
      if (pr->err >= 0 && !pr->paused) { owner[n] = pr; fds[n++] = (struct pollfd){pr->err, POLLIN, 0}; }
      if (!pr->pty && pr->in >= 0 && in_ev) { owner[n] = pr; fds[n++] = (struct pollfd){pr->in, POLLOUT, 0}; }
    }
    for (int i = 0; i < MAX_OPS; i++) {
      struct op *o = &ops[i];
      if (!o->pid || o->sock < 0) continue;
      short ev = (short)((!o->eof && (!o->reading || o->credit > 0) ? POLLIN : 0) | (o->len > 0 ? POLLOUT : 0));
      if (ev) { owner[n] = o; fds[n++] = (struct pollfd){o->sock, ev, 0}; }
    }
    int r = poll(fds, (nfds_t)n, -1);
    if (r < 0) {
      if (errno == EINTR) continue;
      fail("poll");
    }
    if (fds[1].revents & POLLIN) {
      while (read(chld[0], buf, sizeof buf) > 0) {}
      reap();
    }
    for (int i = 2; i < n; i++) {
      if (!fds[i].revents) continue;
      int fd = fds[i].fd;
      struct proc *pr = owner[i];
      if (pr >= procs && pr < procs + MAX_PROCS) {
        if (!pr->pid) continue;
        if (fd == pr->in && (fds[i].revents & (POLLOUT | POLLERR)) && pr->inlen) flush_stdin(pr);
        if (fd == pr->out && (fds[i].revents & (POLLIN | POLLHUP | POLLERR)) && !pr->paused) read_output(pr, &pr->out, pr->pty ? 3 : 1, buf);
        else if (fd == pr->err && (fds[i].revents & (POLLIN | POLLHUP | POLLERR))) read_output(pr, &pr->err, 2, buf);
      } else {
        struct op *o = owner[i];
        if (!o->pid || o->sock != fd) continue;
        if (fds[i].revents & (POLLOUT | POLLERR)) flush_op(o);
        if (fds[i].revents & (POLLIN | POLLHUP | POLLERR)) read_op(o, buf);
        if ((fds[i].revents & (POLLHUP | POLLERR)) && !(fds[i].revents & POLLIN)) o->eof = 1;
      }
    }
    for (int i = 0; i < MAX_PROCS; i++)
      if (procs[i].pid && procs[i].exited) finish_proc(&procs[i], buf);
    for (int i = 0; i < MAX_OPS; i++)
      if (ops[i].pid) finish_op(&ops[i]);
    if (fds[0].revents & (POLLIN | POLLHUP | POLLERR)) {
      char m[4];
      uint32_t len;
      char *p = read_message(m, &len, MAX_ASSIGNMENT + 64);
      if (!p) _exit(0); /* the agent closed the channel: the sandbox ends, and with init every process */
      on_request(m, p, len);
      free(p);
    }
  }
}
