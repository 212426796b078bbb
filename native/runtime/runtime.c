// runtime.c: N-API addon with the two host calls the agent's cell runtime needs without spawning a process:
//   mkfifo(path, mode)      the cell's control FIFO (a spawned `mkfifo` costs the agent a fork of itself);
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
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/sendfile.h>
#include <sys/stat.h>
#include <unistd.h>

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

static napi_value init(napi_env env, napi_value exports) {
  napi_value f;
  napi_create_function(env, "mkfifo", NAPI_AUTO_LENGTH, do_mkfifo, NULL, &f);
  napi_set_named_property(env, exports, "mkfifo", f);
  napi_create_function(env, "sealedCopy", NAPI_AUTO_LENGTH, sealed_copy, NULL, &f);
  napi_set_named_property(env, exports, "sealedCopy", f);
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
