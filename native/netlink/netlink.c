// netlink.c: N-API addon that gives the agent raw netlink sockets (rtnetlink, nfnetlink), optionally bound to another
// network namespace, and sysctl writes inside network namespaces. The messages themselves are built and parsed in
// TypeScript (src/agent/network/netlink/); this file only moves bytes, so attaching a cell's network costs a few
// syscalls instead of waking a helper process. Background exchanges (a cell's prepare and wipe) run on the libuv thread
// pool (talkAsync): rtnetlink requests wait in the kernel for the RTNL lock, which other cells' netns and veth work
// holds for milliseconds. An assignment's exchanges stay on the agent's thread (talk).
//
// Namespace switching: a netlink socket belongs to the network namespace its creator was in when it was created, and
// /proc/sys/net resolves against the opener's namespace. open enters the target namespace on the calling (main) thread
// with setns(2), makes the socket, and returns to the thread's original namespace before returning to JavaScript, so no
// JavaScript ever runs in a cell's namespace; writeSysctlsAsync does the same on a thread-pool thread.
// Failures throw (or reject with) an Error whose `code` is the errno name.
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/netlink.h>
#include <node_api.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#define MAX_ARGS 4
#define PATH_LEN 512
#define VALUE_LEN 256
#define RECV_BUF (64 * 1024)
#define MAX_REPLY (1024 * 1024)

// Throws an Error for errno `err` with code/errno/syscall properties; returns NULL.
static napi_value errno_error(napi_env env, int err, const char *syscall, const char *what) {
  const char *name = strerrorname_np(err);
  char msg[PATH_LEN + 256];
  snprintf(msg, sizeof msg, "%s %s: %s%s%s", name ? name : "EUNKNOWN", syscall, strerror(err), what ? " " : "", what ? what : "");
  napi_value code, message, error, num, sc;
  napi_create_string_utf8(env, name ? name : "EUNKNOWN", NAPI_AUTO_LENGTH, &code);
  napi_create_string_utf8(env, msg, NAPI_AUTO_LENGTH, &message);
  napi_create_error(env, code, message, &error);
  napi_create_int32(env, -err, &num);
  napi_set_named_property(env, error, "errno", num);
  napi_create_string_utf8(env, syscall, NAPI_AUTO_LENGTH, &sc);
  napi_set_named_property(env, error, "syscall", sc);
  return error;
}

// Throws errno_error's Error; returns NULL.
static napi_value throw_errno(napi_env env, int err, const char *syscall, const char *what) {
  napi_throw(env, errno_error(env, err, syscall, what));
  return NULL;
}

// Throws a TypeError with `msg`; returns NULL.
static napi_value throw_type(napi_env env, const char *msg) {
  napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", msg);
  return NULL;
}

// Reads at least `want` arguments into argv (missing ones are undefined); returns 0 on success.
static int get_args(napi_env env, napi_callback_info info, size_t want, napi_value *argv) {
  size_t argc = MAX_ARGS;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < want) {
    throw_type(env, "missing arguments");
    return -1;
  }
  return 0;
}

// Copies a string argument into buf; returns 0 on success.
static int get_string(napi_env env, napi_value v, char *buf, size_t size) {
  size_t len = 0;
  if (napi_get_value_string_utf8(env, v, buf, size, &len) != napi_ok || len == 0 || len >= size - 1) {
    throw_type(env, "expected a non-empty string argument");
    return -1;
  }
  return 0;
}

// Whether v is null or undefined.
static int is_nullish(napi_env env, napi_value v) {
  napi_valuetype t;
  return napi_typeof(env, v, &t) == napi_ok && (t == napi_null || t == napi_undefined);
}

// A saved network namespace of the calling thread, to return to after entering another one.
struct netns_switch {
  int self;
};

// Enters the network namespace at `path`; returns 0, or an errno with `*syscall` set (nothing to undo then).
static int netns_enter(struct netns_switch *sw, const char *path, const char **syscall) {
  sw->self = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
  if (sw->self < 0) return *syscall = "open", errno;
  int target = open(path, O_RDONLY | O_CLOEXEC);
  if (target < 0) {
    int err = errno;
    close(sw->self);
    return *syscall = "open", err;
  }
  int rc = setns(target, CLONE_NEWNET);
  int err = errno;
  close(target);
  if (rc < 0) {
    close(sw->self);
    return *syscall = "setns", err;
  }
  return 0;
}

// Returns to the saved namespace. Failing to would leave the agent's main thread in a cell's namespace: abort instead.
static void netns_leave(struct netns_switch *sw) {
  if (setns(sw->self, CLONE_NEWNET) < 0) {
    perror("netlink addon: cannot return to the agent's network namespace");
    abort();
  }
  close(sw->self);
}

// open(protocol, netnsPath | null) -> fd: a bound netlink socket, in the namespace at netnsPath if given.
static napi_value nl_open(napi_env env, napi_callback_info info) {
  napi_value argv[MAX_ARGS];
  if (get_args(env, info, 1, argv) != 0) return NULL;
  int32_t protocol;
  if (napi_get_value_int32(env, argv[0], &protocol) != napi_ok) return throw_type(env, "protocol must be a number");
  char path[PATH_LEN] = "";
  if (!is_nullish(env, argv[1]) && get_string(env, argv[1], path, sizeof path) != 0) return NULL;
  struct netns_switch sw;
  const char *syscall = NULL;
  if (path[0]) {
    int err = netns_enter(&sw, path, &syscall);
    if (err) return throw_errno(env, err, syscall, path);
  }
  int fd = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, protocol);
  int err = errno;
  if (path[0]) netns_leave(&sw);
  if (fd < 0) return throw_errno(env, err, "socket", path[0] ? path : NULL);
  struct sockaddr_nl local = {.nl_family = AF_NETLINK};
  int one = 1;
  struct timeval timeout = {.tv_sec = 5};
  if (bind(fd, (struct sockaddr *)&local, sizeof local) < 0 ||
      setsockopt(fd, SOL_NETLINK, NETLINK_CAP_ACK, &one, sizeof one) < 0 ||
      setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout) < 0) {
    err = errno;
    close(fd);
    return throw_errno(env, err, "bind", NULL);
  }
  napi_value out;
  napi_create_int32(env, fd, &out);
  return out;
}

// Whether buf[0..len) holds an NLMSG_ERROR or NLMSG_DONE answering sequence number `seq`.
static int has_answer(const char *buf, size_t len, uint32_t seq) {
  for (const struct nlmsghdr *h = (const struct nlmsghdr *)buf; NLMSG_OK(h, len); h = NLMSG_NEXT(h, len)) {
    if ((h->nlmsg_type == NLMSG_ERROR || h->nlmsg_type == NLMSG_DONE) && h->nlmsg_seq == seq) return 1;
  }
  return 0;
}

// One request/answer exchange on a netlink socket: the request's bytes, and once done the answer's or an error.
struct talk_job {
  int fd;
  uint32_t last_seq;
  void *req;
  size_t req_len;
  char *reply;
  size_t used;
  // The outcome: an errno, the failed call and what it was about (a static string).
  int err;
  const char *syscall;
  const char *what;
  napi_async_work work;
  napi_deferred deferred;
};

static void talk_job_free(struct talk_job *job) {
  free(job->req);
  free(job->reply);
  free(job);
}

// Sends the request, then receives every message up to and including the answer (ack or error) to last_seq, plus
// whatever else is already queued. Touches no JavaScript value, so it runs on the agent's thread or a pool thread.
static void talk_job_run(struct talk_job *job) {
  struct sockaddr_nl kernel = {.nl_family = AF_NETLINK};
  ssize_t sent;
  do sent = sendto(job->fd, job->req, job->req_len, 0, (struct sockaddr *)&kernel, sizeof kernel);
  while (sent < 0 && errno == EINTR);
  if (sent < 0) {
    job->err = errno, job->syscall = "sendto";
    return;
  }
  job->reply = malloc(MAX_REPLY);
  if (!job->reply) {
    job->err = ENOMEM, job->syscall = "malloc";
    return;
  }
  int answered = 0;
  for (;;) {
    if (MAX_REPLY - job->used < RECV_BUF) {
      job->err = EMSGSIZE, job->syscall = "recv", job->what = "reply larger than 1 MiB";
      return;
    }
    ssize_t n = recv(job->fd, job->reply + job->used, RECV_BUF, answered ? MSG_DONTWAIT : 0);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && answered && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
    if (n < 0) {
      job->err = errno, job->syscall = "recv";
      if (job->err == EAGAIN) job->what = "no answer from the kernel within 5 s";
      return;
    }
    if (!answered) answered = has_answer(job->reply + job->used, (size_t)n, job->last_seq);
    job->used += (size_t)n;
  }
}

// Reads (fd, request: Buffer, lastSeq) into a job (the request copied); returns NULL with an exception pending on failure.
static struct talk_job *talk_job_new(napi_env env, napi_callback_info info) {
  napi_value argv[MAX_ARGS];
  if (get_args(env, info, 3, argv) != 0) return NULL;
  int32_t fd;
  uint32_t last_seq;
  void *req;
  size_t req_len;
  if (napi_get_value_int32(env, argv[0], &fd) != napi_ok) return throw_type(env, "fd must be a number"), NULL;
  if (napi_get_buffer_info(env, argv[1], &req, &req_len) != napi_ok || req_len == 0) return throw_type(env, "request must be a non-empty Buffer"), NULL;
  if (napi_get_value_uint32(env, argv[2], &last_seq) != napi_ok) return throw_type(env, "lastSeq must be a number"), NULL;
  struct talk_job *job = calloc(1, sizeof *job);
  if (job) job->req = malloc(req_len);
  if (!job || !job->req) return free(job), throw_errno(env, ENOMEM, "calloc", NULL), NULL;
  memcpy(job->req, req, req_len);
  job->fd = fd, job->req_len = req_len, job->last_seq = last_seq;
  return job;
}

// talk(fd, request: Buffer, lastSeq) -> Buffer: one exchange on the calling thread, for the assignment's short
// requests, where a thread-pool round trip (two wake-ups) costs more than the exchange on a busy host.
static napi_value nl_talk(napi_env env, napi_callback_info info) {
  struct talk_job *job = talk_job_new(env, info);
  if (!job) return NULL;
  talk_job_run(job);
  napi_value out = NULL;
  void *data;
  if (job->err) throw_errno(env, job->err, job->syscall, job->what);
  else if (napi_create_buffer_copy(env, job->used, job->reply, &data, &out) != napi_ok) out = throw_errno(env, ENOMEM, "napi_create_buffer_copy", NULL);
  talk_job_free(job);
  return out;
}

static void talk_job_execute(napi_env env, void *data) {
  (void)env;
  talk_job_run(data);
}

static void talk_job_complete(napi_env env, napi_status status, void *data) {
  struct talk_job *job = data;
  if (status != napi_ok && job->err == 0) job->err = ECANCELED, job->syscall = "queue";
  if (job->err) {
    napi_reject_deferred(env, job->deferred, errno_error(env, job->err, job->syscall, job->what));
  } else {
    napi_value out;
    void *copy;
    if (napi_create_buffer_copy(env, job->used, job->reply, &copy, &out) == napi_ok) napi_resolve_deferred(env, job->deferred, out);
    else napi_reject_deferred(env, job->deferred, errno_error(env, ENOMEM, "napi_create_buffer_copy", NULL));
  }
  napi_delete_async_work(env, job->work);
  talk_job_free(job);
}

// Queues a job on the libuv thread pool and returns its promise (`deferred` and `work` are the job's own fields). Never a
// promise left unsettled, which a caller waiting on it (the RTNL lane) would wait on for ever: if the work cannot be
// created or queued, `release` frees the job and the promise rejects (or the call throws, before there is a promise).
static napi_value queue_job(napi_env env, const char *label, void *job, napi_deferred *deferred, napi_async_work *work,
                            napi_async_execute_callback execute, napi_async_complete_callback complete, void (*release)(void *)) {
  napi_value promise, name;
  if (napi_create_promise(env, deferred, &promise) != napi_ok) return release(job), throw_errno(env, ENOMEM, "napi_create_promise", NULL);
  napi_create_string_utf8(env, label, NAPI_AUTO_LENGTH, &name);
  const char *failed = NULL;
  if (napi_create_async_work(env, NULL, name, execute, complete, job, work) != napi_ok) {
    failed = "napi_create_async_work";
  } else if (napi_queue_async_work(env, *work) != napi_ok) {
    failed = "napi_queue_async_work";
    napi_delete_async_work(env, *work);
  }
  if (failed) {
    napi_reject_deferred(env, *deferred, errno_error(env, ENOMEM, failed, NULL));
    release(job);
  }
  return promise;
}

static void talk_job_release(void *job) {
  talk_job_free(job);
}

// talkAsync(fd, request: Buffer, lastSeq) -> Promise<Buffer>: one exchange (talk_job_run) on the libuv thread pool. An rtnetlink request that changes
// or reads links, addresses or routes waits in the kernel for the RTNL lock, which netns and veth creation and deletion
// (ours, for other cells) hold for milliseconds: on the agent's thread that wait stalled every other cell's start. The
// caller must not use the socket for anything else until the promise settles (answers would interleave).
static napi_value nl_talk_async(napi_env env, napi_callback_info info) {
  struct talk_job *job = talk_job_new(env, info);
  if (!job) return NULL;
  return queue_job(env, "netlink-talk", job, &job->deferred, &job->work, talk_job_execute, talk_job_complete, talk_job_release);
}

// close(fd): closes a socket made by open.
static napi_value nl_close(napi_env env, napi_callback_info info) {
  napi_value argv[MAX_ARGS];
  if (get_args(env, info, 1, argv) != 0) return NULL;
  int32_t fd;
  if (napi_get_value_int32(env, argv[0], &fd) != napi_ok) return throw_type(env, "fd must be a number");
  if (close(fd) < 0) return throw_errno(env, errno, "close", NULL);
  return NULL;
}

// A batch of sysctl writes: /proc/sys/net paths and values, each inside the namespace at its `ns` (empty: the caller's).
struct sysctl_job {
  uint32_t count;
  char (*nss)[PATH_LEN];
  char (*paths)[PATH_LEN];
  char (*values)[VALUE_LEN];
  // The outcome: an errno, the failed call and what it was about.
  int err;
  const char *syscall;
  char what[PATH_LEN];
  napi_async_work work;
  napi_deferred deferred;
};

static void sysctl_job_free(struct sysctl_job *job) {
  free(job->nss);
  free(job->paths);
  free(job->values);
  free(job);
}

// Reads ([[netnsPath | null, relativePath, value], ...]) into a job; returns NULL with an exception pending on failure.
static struct sysctl_job *sysctl_job_new(napi_env env, napi_callback_info info) {
  napi_value argv[MAX_ARGS];
  if (get_args(env, info, 1, argv) != 0) return NULL;
  struct sysctl_job *job = calloc(1, sizeof *job);
  if (!job) return throw_errno(env, ENOMEM, "calloc", NULL), NULL;
  if (napi_get_array_length(env, argv[0], &job->count) != napi_ok) return free(job), throw_type(env, "expected an array of [netns, path, value]"), NULL;
  size_t n = job->count ? job->count : 1;
  job->nss = calloc(n, PATH_LEN);
  job->paths = calloc(n, PATH_LEN);
  job->values = calloc(n, VALUE_LEN);
  if (!job->nss || !job->paths || !job->values) return sysctl_job_free(job), throw_errno(env, ENOMEM, "calloc", NULL), NULL;
  for (uint32_t i = 0; i < job->count; i++) {
    napi_value triple, ns, p, v;
    char rel[PATH_LEN - 32] = "";
    int ok = napi_get_element(env, argv[0], i, &triple) == napi_ok && napi_get_element(env, triple, 0, &ns) == napi_ok &&
             napi_get_element(env, triple, 1, &p) == napi_ok && napi_get_element(env, triple, 2, &v) == napi_ok &&
             (is_nullish(env, ns) || get_string(env, ns, job->nss[i], PATH_LEN) == 0) && get_string(env, p, rel, sizeof rel) == 0 &&
             get_string(env, v, job->values[i], sizeof job->values[i]) == 0;
    if (!ok || strstr(rel, "..") != NULL) {
      sysctl_job_free(job);
      if (ok) throw_type(env, "sysctl path must not contain ..");
      return NULL;
    }
    snprintf(job->paths[i], PATH_LEN, "/proc/sys/net/%s", rel);
  }
  return job;
}

// Performs a job's writes (arguments were read before, so nothing can throw inside a cell's namespace), entering each
// write's namespace and returning to the thread's own before the next namespace and at the end.
static void sysctl_job_run(struct sysctl_job *job) {
  struct netns_switch sw;
  const char *inside = NULL; // the namespace the thread is in now, if not its own
  for (uint32_t i = 0; i < job->count && !job->err; i++) {
    const char *ns = job->nss[i][0] ? job->nss[i] : NULL;
    if (inside && (!ns || strcmp(inside, ns) != 0)) netns_leave(&sw), inside = NULL;
    if (ns && !inside) {
      job->err = netns_enter(&sw, ns, &job->syscall);
      if (job->err) {
        snprintf(job->what, sizeof job->what, "%s", ns);
        return;
      }
      inside = ns;
    }
    int fd = open(job->paths[i], O_WRONLY | O_CLOEXEC);
    size_t len = strlen(job->values[i]);
    ssize_t written = fd < 0 ? -1 : write(fd, job->values[i], len);
    if (written != (ssize_t)len) {
      // A short write sets no errno: it is reported as EIO rather than as whatever errno held before.
      job->err = written < 0 ? errno : EIO;
      job->syscall = fd < 0 ? "open" : "write";
      snprintf(job->what, sizeof job->what, "%s", job->paths[i]);
    }
    if (fd >= 0) close(fd);
  }
  if (inside) netns_leave(&sw);
}

static void sysctl_job_execute(napi_env env, void *data) {
  (void)env;
  sysctl_job_run(data);
}

static void sysctl_job_complete(napi_env env, napi_status status, void *data) {
  struct sysctl_job *job = data;
  if (status != napi_ok && job->err == 0) job->err = ECANCELED, job->syscall = "queue";
  if (job->err) {
    napi_reject_deferred(env, job->deferred, errno_error(env, job->err, job->syscall, job->what));
  } else {
    napi_value undefined;
    napi_get_undefined(env, &undefined);
    napi_resolve_deferred(env, job->deferred, undefined);
  }
  napi_delete_async_work(env, job->work);
  sysctl_job_free(job);
}

static void sysctl_job_release(void *job) {
  sysctl_job_free(job);
}

// writeSysctlsAsync([[netnsPath | null, relativePath, value], ...]) -> Promise: writes /proc/sys/net/<relativePath>
// inside each namespace (null: the agent's own), in order, on the libuv thread pool. A write such as a device's `forwarding` or `disable_ipv6` waits for the RTNL lock, which netns and veth
// creation and deletion on the host hold for milliseconds: on the agent's thread that stalled every start. The pool
// thread enters the namespace and returns to its own before it takes any other work (or the process aborts).
static napi_value write_sysctls_async(napi_env env, napi_callback_info info) {
  struct sysctl_job *job = sysctl_job_new(env, info);
  if (!job) return NULL;
  return queue_job(env, "netlink-sysctls", job, &job->deferred, &job->work, sysctl_job_execute, sysctl_job_complete, sysctl_job_release);
}

static napi_value init(napi_env env, napi_value exports) {
  struct {
    const char *name;
    napi_callback fn;
  } fns[] = {{"open", nl_open}, {"talk", nl_talk}, {"talkAsync", nl_talk_async}, {"close", nl_close}, {"writeSysctlsAsync", write_sysctls_async}};
  for (size_t i = 0; i < sizeof fns / sizeof fns[0]; i++) {
    napi_value f;
    napi_create_function(env, fns[i].name, NAPI_AUTO_LENGTH, fns[i].fn, NULL, &f);
    napi_set_named_property(env, exports, fns[i].name, f);
  }
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
