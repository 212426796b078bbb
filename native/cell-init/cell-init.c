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
 * Wire format (all integers little-endian u32):
 *   assignment (agent -> init, fd 0): "CRA1" len payload
 *     payload = argc envc cwd\0 argv[0]\0 ... env[0]\0 ...
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
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define MAX_ASSIGNMENT (1u << 20)

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

static void send_frame(char type, const void *data, uint32_t len) {
  unsigned char hdr[5];
  hdr[0] = (unsigned char)type;
  memcpy(hdr + 1, &len, 4);
  write_all(1, hdr, 5);
  if (len) write_all(1, data, len);
}

static void fail(const char *what) {
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

static void on_sigchld(int sig) {
  (void)sig;
  int saved = errno;
  char c = 0;
  (void)!write(sigchld_pipe[1], &c, 1);
  errno = saved;
}

/* Create the working directory if missing, like a Dockerfile WORKDIR. */
static int enter_dir(const char *dir) {
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
static void exec_workload(char **argv, char **envp) {
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

int main(void) {
  /* fd 0 is the read end of a FIFO the agent holds; it may arrive non-blocking. */
  int fl = fcntl(0, F_GETFL);
  if (fl >= 0) fcntl(0, F_SETFL, fl & ~O_NONBLOCK);
  unsigned char hdr[8];
  if (read_exact(0, hdr, 8) != 0) return 0; /* pool drained: never assigned */
  if (memcmp(hdr, "CRA1", 4) != 0) { errno = EPROTO; fail("bad assignment magic"); }
  uint32_t len;
  memcpy(&len, hdr + 4, 4);
  if (len < 9 || len > MAX_ASSIGNMENT) { errno = EMSGSIZE; fail("bad assignment length"); }
  char *payload = malloc(len + 1);
  if (!payload) fail("malloc");
  if (read_exact(0, payload, len) != 0) { errno = EPIPE; fail("short assignment"); }
  payload[len] = '\0';

  uint32_t argc, envc;
  memcpy(&argc, payload, 4);
  memcpy(&envc, payload + 4, 4);
  if (argc == 0 || argc > 65536 || envc > 65536) { errno = EINVAL; fail("bad counts"); }
  char **argv = calloc(argc + 1, sizeof *argv);
  char **envp = calloc(envc + 1, sizeof *envp);
  if (!argv || !envp) fail("calloc");
  char *p = payload + 8, *end = payload + len;
  char *cwd = p;
  p += strnlen(p, (size_t)(end - p)) + 1;
  for (uint32_t i = 0; i < argc; i++) {
    if (p >= end) { errno = EINVAL; fail("truncated argv"); }
    argv[i] = p;
    p += strnlen(p, (size_t)(end - p)) + 1;
  }
  for (uint32_t i = 0; i < envc; i++) {
    if (p >= end) { errno = EINVAL; fail("truncated env"); }
    envp[i] = p;
    p += strnlen(p, (size_t)(end - p)) + 1;
  }

  int out[2], err[2];
  if (pipe2(sigchld_pipe, O_CLOEXEC | O_NONBLOCK) || pipe2(out, O_CLOEXEC) ||
      pipe2(err, O_CLOEXEC))
    fail("pipe");
  struct sigaction sa = {0};
  sa.sa_handler = on_sigchld;
  sa.sa_flags = SA_RESTART | SA_NOCLDSTOP;
  sigaction(SIGCHLD, &sa, NULL);

  pid_t child = fork();
  if (child < 0) fail("fork");
  if (child == 0) {
    int devnull = open("/dev/null", O_RDONLY);
    if (devnull > 0) {
      dup2(devnull, 0);
      close(devnull);
    }
    dup2(out[1], 1);
    dup2(err[1], 2);
    signal(SIGCHLD, SIG_DFL);
    if (enter_dir(cwd) != 0) {
      dprintf(2, "cleanroom: cannot use working directory %s: %s\n", cwd, strerror(errno));
      _exit(126);
    }
    exec_workload(argv, envp);
    int e = errno;
    const char *what = (e == ENOENT) ? "command not found" : strerror(e);
    dprintf(2, "cleanroom: cannot run %s: %s\n", argv[0], what);
    _exit(e == ENOENT ? 127 : 126);
  }
  close(out[1]);
  close(err[1]);
  close(0);
  char started[32];
  send_frame('s', started, (uint32_t)snprintf(started, sizeof started, "%d", child));

  struct pollfd fds[3] = {{out[0], POLLIN, 0}, {err[0], POLLIN, 0}, {sigchld_pipe[0], POLLIN, 0}};
  char buf[65536];
  int status = 0, exited = 0, drains = 0;
  while ((!exited || fds[0].fd >= 0 || fds[1].fd >= 0) && drains < 256) {
    if (exited) drains++;
    /* After the workload exits, drain what is already buffered, then stop:
       a daemonised grandchild holding the pipe open must not keep us alive. */
    int r = poll(fds, 3, exited ? 0 : -1);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0 && exited) break;
    for (int i = 0; i < 2; i++) {
      if (fds[i].fd < 0 || !(fds[i].revents & (POLLIN | POLLHUP | POLLERR))) continue;
      ssize_t n = read(fds[i].fd, buf, sizeof buf);
      if (n > 0) send_frame(i == 0 ? 'o' : 'e', buf, (uint32_t)n);
      else if (n == 0 || errno != EINTR) { close(fds[i].fd); fds[i].fd = -1; }
    }
    if (fds[2].revents & POLLIN) {
      while (read(sigchld_pipe[0], buf, sizeof buf) > 0) {}
      int st;
      pid_t w;
      while ((w = waitpid(-1, &st, WNOHANG)) > 0)
        if (w == child) { status = st; exited = 1; }
    }
  }
  char msg[32];
  int n = WIFSIGNALED(status) ? snprintf(msg, sizeof msg, "signal %d", WTERMSIG(status))
                              : snprintf(msg, sizeof msg, "code %d", WEXITSTATUS(status));
  send_frame('x', msg, (uint32_t)n);
  return 0;
}
