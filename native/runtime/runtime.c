// runtime.c: N-API addon with the host calls the agent's cell runtime makes in-process:
//   spawn(file, argv, fds)  starts a helper (runc, mkfs.ext4) with posix_spawn, which clones with CLONE_VM|CLONE_VFORK:
//                           no copy of the agent's page tables and no copy-on-write faults afterwards. Node's own
//                           spawn forks the whole agent (~70 MB) and blocked its event loop 5-20 ms per helper here.
//   spawnAsync(...)         the same from a thread-pool thread (the vfork wait until the child's exec is not the
//                           agent's thread's);
//   reap(pid), pipe(), closeFd(fd)   the rest of a child's life: exit status (non-blocking), stdio pipes;
//   mkfifo(path, mode)      the cell's control FIFO;
//   sealedCopy(path) -> fd  a sealed, in-memory copy of an executable (memfd with every write seal), held open by the
//                           agent and run as /proc/<agent>/fd/<fd>. runc recognises a fully sealed memfd as its own
//                           protected copy (the CVE-2019-5736 defence) and skips making one per container, which
//                           costs a read-only bind mount and a second execve of the 8.7 MB binary each time; this is
//                           upstream's memfd-bind approach, for one process instead of a bind mount over the binary.
// Failures throw an Error whose `code` is the errno name.
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <node_api.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/sendfile.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

#define PATH_LEN 4096
#define SEALS (F_SEAL_SEAL | F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE)

// Throws an Error for errno `err` with code/errno/syscall/path properties; returns NULL.
static napi_value throw_errno(napi_env env, int err, const char *syscall, const char *path) {
  const char *name = strerrorname_np(err);
  char msg[PATH_LEN + 256];
  snprintf(msg, sizeof msg, "%s %s: %s %s", name ? name : "EUNKNOWN", syscall, strerror(err), path);
  napi_value code, message, error, num, sc;
  napi_create_string_utf8(env, name ? name : "EUNKNOWN", NAPI_AUTO_LENGTH, &code);
  napi_create_string_utf8(env, msg, NAPI_AUTO_LENGTH, &message);
  napi_create_error(env, code, message, &error);
  napi_create_int32(env, -err, &num);
  napi_set_named_property(env, error, "errno", num);
  napi_create_string_utf8(env, syscall, NAPI_AUTO_LENGTH, &sc);
  napi_set_named_property(env, error, "syscall", sc);
  napi_throw(env, error);
  return NULL;
}

// Reads `want` arguments; the first must be a non-empty path string (copied into path). Returns 0 on success.
static int get_path_args(napi_env env, napi_callback_info info, size_t want, napi_value *argv, char *path) {
  size_t argc = 2, len = 0;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < want ||
      napi_get_value_string_utf8(env, argv[0], path, PATH_LEN, &len) != napi_ok || len == 0 || len >= PATH_LEN - 1) {
    napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", "expected a path");
    return -1;
  }
  return 0;
}

// mkfifo(path, mode): creates a FIFO with exactly `mode` (the umask does not apply).
static napi_value do_mkfifo(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  char path[PATH_LEN];
  uint32_t mode;
  if (get_path_args(env, info, 2, argv, path) != 0) return NULL;
  if (napi_get_value_uint32(env, argv[1], &mode) != napi_ok) {
    napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", "expected a mode");
    return NULL;
  }
  if (mkfifo(path, (mode_t)(mode & 0777)) != 0) return throw_errno(env, errno, "mkfifo", path);
  if (chmod(path, (mode_t)(mode & 0777)) != 0) return throw_errno(env, errno, "chmod", path);
  return NULL;
}

// sealedCopy(path) -> fd: a close-on-exec memfd holding the file's bytes, sealed against any change.
static napi_value sealed_copy(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  char path[PATH_LEN];
  if (get_path_args(env, info, 1, argv, path) != 0) return NULL;
  int src = open(path, O_RDONLY | O_CLOEXEC);
  if (src < 0) return throw_errno(env, errno, "open", path);
  struct stat st;
  if (fstat(src, &st) != 0) {
    int err = errno;
    close(src);
    return throw_errno(env, err, "fstat", path);
  }
  int fd = memfd_create("cleanroom-sealed-runtime", MFD_CLOEXEC | MFD_ALLOW_SEALING);
  if (fd < 0) {
    int err = errno;
    close(src);
    return throw_errno(env, err, "memfd_create", path);
  }
  off_t sent = 0;
  while (sent < st.st_size) {
    ssize_t n = sendfile(fd, src, NULL, (size_t)(st.st_size - sent));
    if (n <= 0) {
      int err = n < 0 ? errno : EIO;
      close(src);
      close(fd);
      return throw_errno(env, err, "sendfile", path);
    }
    sent += n;
  }
  close(src);
  if (fchmod(fd, 0555) != 0 || fcntl(fd, F_ADD_SEALS, SEALS) != 0) {
    int err = errno;
    close(fd);
    return throw_errno(env, err, "seal", path);
  }
  napi_value out;
  napi_create_int32(env, fd, &out);
  return out;
}

// Copies a JS array of strings into a NULL-terminated, malloc'd vector; returns NULL (TypeError pending) on bad input.
static char **string_vector(napi_env env, napi_value array) {
  uint32_t n;
  if (napi_get_array_length(env, array, &n) != napi_ok || n == 0 || n > 4096) {
    napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", "expected a non-empty array of strings");
    return NULL;
  }
  char **v = calloc(n + 1, sizeof *v);
  for (uint32_t i = 0; v && i < n; i++) {
    napi_value e;
    size_t len = 0;
    if (napi_get_element(env, array, i, &e) != napi_ok || napi_get_value_string_utf8(env, e, NULL, 0, &len) != napi_ok ||
        !(v[i] = malloc(len + 1)) || napi_get_value_string_utf8(env, e, v[i], len + 1, &len) != napi_ok) {
      for (uint32_t j = 0; j <= i; j++) free(v[j]);
      free(v);
      napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", "expected an array of strings");
      return NULL;
    }
  }
  return v;
}

static void free_vector(char **v) {
  for (char **p = v; p && *p; p++) free(*p);
  free(v);
}

// A helper to start: its file, argv and stdio fds, and once started its pid or the error.
struct spawn_job {
  char file[PATH_LEN];
  char **args;
  int fds[3];
  pid_t pid;
  int err;
  napi_async_work work;
  napi_deferred deferred;
};

static void spawn_job_free(struct spawn_job *job) {
  free_vector(job->args);
  free(job);
}

// Reads (file, argv, [stdin, stdout, stderr]) into a job; returns NULL with an exception pending on bad input.
static struct spawn_job *spawn_job_new(napi_env env, napi_callback_info info) {
  napi_value argv[3];
  size_t argc = 3;
  size_t len = 0;
  struct spawn_job *job = calloc(1, sizeof *job);
  if (!job) return throw_errno(env, ENOMEM, "calloc", ""), NULL;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 3 ||
      napi_get_value_string_utf8(env, argv[0], job->file, sizeof job->file, &len) != napi_ok || len == 0 || job->file[0] != '/') {
    free(job);
    napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", "spawn(file: absolute path, argv, fds)");
    return NULL;
  }
  for (uint32_t i = 0; i < 3; i++) {
    napi_value e;
    if (napi_get_element(env, argv[2], i, &e) != napi_ok || napi_get_value_int32(env, e, &job->fds[i]) != napi_ok) {
      free(job);
      napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", "fds must be three numbers");
      return NULL;
    }
  }
  job->args = string_vector(env, argv[1]);
  if (!job->args) return free(job), NULL;
  return job;
}

// Starts the job's helper: each fd becomes 0/1/2 in the child (-1: /dev/null); every other descriptor of the agent is
// close-on-exec. Signals start unblocked and at their defaults (Node ignores SIGPIPE). Touches no JavaScript value.
static void spawn_job_run(struct spawn_job *job) {
  posix_spawn_file_actions_t actions;
  posix_spawnattr_t attr;
  sigset_t none, all;
  sigemptyset(&none);
  sigfillset(&all);
  posix_spawn_file_actions_init(&actions);
  posix_spawnattr_init(&attr);
  posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
  posix_spawnattr_setsigmask(&attr, &none);
  posix_spawnattr_setsigdefault(&attr, &all);
  for (int i = 0; i < 3; i++) {
    if (job->fds[i] >= 0) posix_spawn_file_actions_adddup2(&actions, job->fds[i], i);
    else posix_spawn_file_actions_addopen(&actions, i, "/dev/null", i == 0 ? O_RDONLY : O_WRONLY, 0);
  }
  job->err = posix_spawn(&job->pid, job->file, &actions, &attr, job->args, environ);
  posix_spawn_file_actions_destroy(&actions);
  posix_spawnattr_destroy(&attr);
}

// spawn(file, argv, [stdin, stdout, stderr]) -> pid: starts the helper on the calling thread (see spawn_job_run).
static napi_value do_spawn(napi_env env, napi_callback_info info) {
  struct spawn_job *job = spawn_job_new(env, info);
  if (!job) return NULL;
  spawn_job_run(job);
  napi_value out = NULL;
  if (job->err != 0) throw_errno(env, job->err, "posix_spawn", job->file);
  else napi_create_int32(env, job->pid, &out);
  spawn_job_free(job);
  return out;
}

static void spawn_job_execute(napi_env env, void *data) {
  (void)env;
  spawn_job_run(data);
}

static void spawn_job_complete(napi_env env, napi_status status, void *data) {
  struct spawn_job *job = data;
  if (status != napi_ok && job->err == 0 && job->pid <= 0) job->err = ECANCELED;
  if (job->err != 0) {
    // throw_errno throws; take the pending exception back and reject with it.
    napi_value error;
    throw_errno(env, job->err, "posix_spawn", job->file);
    napi_get_and_clear_last_exception(env, &error);
    napi_reject_deferred(env, job->deferred, error);
  } else {
    napi_value out;
    napi_create_int32(env, job->pid, &out);
    napi_resolve_deferred(env, job->deferred, out);
  }
  napi_delete_async_work(env, job->work);
  spawn_job_free(job);
}

// spawnAsync(file, argv, fds) -> Promise<pid>: spawn on the libuv thread pool. posix_spawn's CLONE_VFORK suspends the
// calling thread until the child has exec'd, which on these VMs (a loaded host, a runtime binary to map) is a millisecond
// or more per helper: a pool thread waits for it instead of the agent's. The fds must stay open until the promise settles.
static napi_value do_spawn_async(napi_env env, napi_callback_info info) {
  struct spawn_job *job = spawn_job_new(env, info);
  if (!job) return NULL;
  napi_value promise, name;
  if (napi_create_promise(env, &job->deferred, &promise) != napi_ok) return spawn_job_free(job), throw_errno(env, ENOMEM, "napi_create_promise", "");
  napi_create_string_utf8(env, "runtime-spawn", NAPI_AUTO_LENGTH, &name);
  int queued = napi_create_async_work(env, NULL, name, spawn_job_execute, spawn_job_complete, job, &job->work) == napi_ok;
  if (queued && napi_queue_async_work(env, job->work) != napi_ok) napi_delete_async_work(env, job->work), queued = 0;
  if (!queued) {
    // Never a promise left unsettled: throw_errno throws; take the exception back and reject with it.
    napi_value error;
    throw_errno(env, ENOMEM, "napi_queue_async_work", job->file);
    napi_get_and_clear_last_exception(env, &error);
    napi_reject_deferred(env, job->deferred, error);
    spawn_job_free(job);
  }
  return promise;
}

// reap(pid) -> null while it runs, else { code, signal } (one of them null). Only ever waits for the pid it is given.
static napi_value do_reap(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  size_t argc = 1;
  int32_t pid;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 1 || napi_get_value_int32(env, argv[0], &pid) != napi_ok || pid <= 0) {
    napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", "reap(pid)");
    return NULL;
  }
  int status;
  pid_t r;
  do r = waitpid(pid, &status, WNOHANG);
  while (r < 0 && errno == EINTR);
  napi_value out, code, sig, nul;
  napi_get_null(env, &nul);
  if (r == 0) return nul;
  if (r < 0) return throw_errno(env, errno, "waitpid", "");
  napi_create_object(env, &out);
  if (WIFEXITED(status)) napi_create_int32(env, WEXITSTATUS(status), &code);
  else code = nul;
  if (WIFSIGNALED(status)) napi_create_int32(env, WTERMSIG(status), &sig);
  else sig = nul;
  napi_set_named_property(env, out, "code", code);
  napi_set_named_property(env, out, "signal", sig);
  return out;
}

// pipe() -> [readFd, writeFd], both close-on-exec.
static napi_value do_pipe(napi_env env, napi_callback_info info) {
  (void)info;
  int p[2];
  if (pipe2(p, O_CLOEXEC) != 0) return throw_errno(env, errno, "pipe2", "");
  napi_value out, a, b;
  napi_create_array_with_length(env, 2, &out);
  napi_create_int32(env, p[0], &a);
  napi_create_int32(env, p[1], &b);
  napi_set_element(env, out, 0, a);
  napi_set_element(env, out, 1, b);
  return out;
}

// closeFd(fd): closes a descriptor made by pipe().
static napi_value do_close(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  size_t argc = 1;
  int32_t fd;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 1 || napi_get_value_int32(env, argv[0], &fd) != napi_ok) {
    napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", "closeFd(fd)");
    return NULL;
  }
  if (close(fd) != 0) return throw_errno(env, errno, "close", "");
  return NULL;
}

static napi_value init(napi_env env, napi_value exports) {
  struct {
    const char *name;
    napi_callback fn;
  } fns[] = {{"spawn", do_spawn}, {"spawnAsync", do_spawn_async}, {"reap", do_reap}, {"pipe", do_pipe}, {"closeFd", do_close}, {"mkfifo", do_mkfifo}, {"sealedCopy", sealed_copy}};
  for (size_t i = 0; i < sizeof fns / sizeof fns[0]; i++) {
    napi_value f;
    napi_create_function(env, fns[i].name, NAPI_AUTO_LENGTH, fns[i].fn, NULL, &f);
    napi_set_named_property(env, exports, fns[i].name, f);
  }
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
