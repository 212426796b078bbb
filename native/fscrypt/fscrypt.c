// fscrypt.c: N-API addon for the agent's per-cell encrypted volumes. It calls the
// kernel's fscrypt, loop, mount and discard interfaces in-process so that preparing
// and wiping a volume spawns no helper processes (mkfs.ext4 aside). Short calls are
// synchronous; removeKey, umount and discardDevice (whose cost grows with the volume's
// contents), loopAttach and mountAsync (which wait on the block layer) return Promises. Failures throw/reject with an Error whose `code` is the
// errno name (e.g. "EBUSY") and whose `syscall` names the failed call.
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <linux/fscrypt.h>
#include <linux/loop.h>
#include <node_api.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#define MAX_ARGS 6
#define PATH_MAX_LEN 4096
#define MAX_KEY_SIZE 64

// Throws an Error for errno `err` with code/errno/syscall/path properties; returns NULL.
static napi_value throw_errno(napi_env env, int err, const char *syscall, const char *path) {
  const char *name = strerrorname_np(err);
  char msg[PATH_MAX_LEN + 256];
  snprintf(msg, sizeof msg, "%s %s: %s%s%s", name ? name : "EUNKNOWN", syscall, strerror(err),
           path ? " " : "", path ? path : "");
  napi_value code, message, error, num, sc;
  napi_create_string_utf8(env, name ? name : "EUNKNOWN", NAPI_AUTO_LENGTH, &code);
  napi_create_string_utf8(env, msg, NAPI_AUTO_LENGTH, &message);
  napi_create_error(env, code, message, &error);
  napi_create_int32(env, -err, &num);
  napi_set_named_property(env, error, "errno", num);
  napi_create_string_utf8(env, syscall, NAPI_AUTO_LENGTH, &sc);
  napi_set_named_property(env, error, "syscall", sc);
  if (path) {
    napi_value p;
    napi_create_string_utf8(env, path, NAPI_AUTO_LENGTH, &p);
    napi_set_named_property(env, error, "path", p);
  }
  napi_throw(env, error);
  return NULL;
}

// Throws a TypeError with `msg`; returns NULL.
static napi_value throw_type(napi_env env, const char *msg) {
  napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", msg);
  return NULL;
}

// Reads `want` arguments into argv; returns 0 on success (a TypeError is pending otherwise).
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

// Reads a uint32 argument; returns 0 on success.
static int get_u32(napi_env env, napi_value v, uint32_t *out) {
  if (napi_get_value_uint32(env, v, out) != napi_ok) {
    throw_type(env, "expected a number argument");
    return -1;
  }
  return 0;
}

// Reads a Buffer argument of exactly `size` bytes (or 1..size if exact is 0).
static int get_buffer(napi_env env, napi_value v, size_t size, int exact, uint8_t **data, size_t *len) {
  bool is_buf = false;
  if (napi_is_buffer(env, v, &is_buf) != napi_ok || !is_buf ||
      napi_get_buffer_info(env, v, (void **)data, len) != napi_ok ||
      (exact ? *len != size : (*len == 0 || *len > size))) {
    throw_type(env, "expected a Buffer of the right size");
    return -1;
  }
  return 0;
}

// Opens a directory (or any file) read-only for an fscrypt ioctl; returns fd or -1 (thrown).
static int open_for_ioctl(napi_env env, const char *path) {
  int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
  if (fd < 0) throw_errno(env, errno, "open", path);
  return fd;
}

// Creates a Buffer holding a copy of `len` bytes.
static napi_value make_buffer(napi_env env, const void *data, size_t len) {
  napi_value out;
  void *copy;
  napi_create_buffer_copy(env, len, data, &copy, &out);
  return out;
}

// addKey(path, key: Buffer) -> Buffer(16) key identifier. The kernel-side copy is
// zeroed before returning; the caller must zero its own Buffer.
static napi_value add_key(napi_env env, napi_callback_info info) {
  napi_value argv[MAX_ARGS];
  char path[PATH_MAX_LEN];
  uint8_t *key;
  size_t key_len;
  if (get_args(env, info, 2, argv) || get_string(env, argv[0], path, sizeof path) ||
      get_buffer(env, argv[1], MAX_KEY_SIZE, 0, &key, &key_len))
    return NULL;
  int fd = open_for_ioctl(env, path);
  if (fd < 0) return NULL;
  size_t arg_size = sizeof(struct fscrypt_add_key_arg) + MAX_KEY_SIZE;
  struct fscrypt_add_key_arg *arg = calloc(1, arg_size);
  if (!arg) {
    close(fd);
    return throw_errno(env, ENOMEM, "calloc", NULL);
  }
  arg->key_spec.type = FSCRYPT_KEY_SPEC_TYPE_IDENTIFIER;
  arg->raw_size = (uint32_t)key_len;
  memcpy(arg->raw, key, key_len);
  int rc = ioctl(fd, FS_IOC_ADD_ENCRYPTION_KEY, arg);
  int err = errno;
  uint8_t id[FSCRYPT_KEY_IDENTIFIER_SIZE];
  memcpy(id, arg->key_spec.u.identifier, sizeof id);
  explicit_bzero(arg, arg_size);
  free(arg);
  close(fd);
  if (rc != 0) return throw_errno(env, err, "ioctl(FS_IOC_ADD_ENCRYPTION_KEY)", path);
  return make_buffer(env, id, sizeof id);
}

// setPolicyV2(dir, identifier: Buffer(16), contentsMode, filenamesMode, flags) -> undefined.
static napi_value set_policy_v2(napi_env env, napi_callback_info info) {
  napi_value argv[MAX_ARGS];
  char path[PATH_MAX_LEN];
  uint8_t *id;
  size_t id_len;
  uint32_t contents, filenames, flags;
  if (get_args(env, info, 5, argv) || get_string(env, argv[0], path, sizeof path) ||
      get_buffer(env, argv[1], FSCRYPT_KEY_IDENTIFIER_SIZE, 1, &id, &id_len) ||
      get_u32(env, argv[2], &contents) || get_u32(env, argv[3], &filenames) || get_u32(env, argv[4], &flags))
    return NULL;
  struct fscrypt_policy_v2 policy;
  memset(&policy, 0, sizeof policy);
  policy.version = FSCRYPT_POLICY_V2;
  policy.contents_encryption_mode = (uint8_t)contents;
  policy.filenames_encryption_mode = (uint8_t)filenames;
  policy.flags = (uint8_t)flags;
  memcpy(policy.master_key_identifier, id, FSCRYPT_KEY_IDENTIFIER_SIZE);
  int fd = open_for_ioctl(env, path);
  if (fd < 0) return NULL;
  int rc = ioctl(fd, FS_IOC_SET_ENCRYPTION_POLICY, &policy);
  int err = errno;
  close(fd);
  if (rc != 0) return throw_errno(env, err, "ioctl(FS_IOC_SET_ENCRYPTION_POLICY)", path);
  return NULL;
}

// Sets obj[name] = n.
static void set_u32(napi_env env, napi_value obj, const char *name, uint32_t n) {
  napi_value v;
  napi_create_uint32(env, n, &v);
  napi_set_named_property(env, obj, name, v);
}

// getPolicy(path) -> { version, contentsMode, filenamesMode, flags, identifier: Buffer }
// or null when the path has no encryption policy (ENODATA).
static napi_value get_policy(napi_env env, napi_callback_info info) {
  napi_value argv[MAX_ARGS];
  char path[PATH_MAX_LEN];
  if (get_args(env, info, 1, argv) || get_string(env, argv[0], path, sizeof path)) return NULL;
  int fd = open_for_ioctl(env, path);
  if (fd < 0) return NULL;
  struct fscrypt_get_policy_ex_arg arg;
  memset(&arg, 0, sizeof arg);
  arg.policy_size = sizeof arg.policy;
  int rc = ioctl(fd, FS_IOC_GET_ENCRYPTION_POLICY_EX, &arg);
  int err = errno;
  close(fd);
  napi_value out;
  if (rc != 0) {
    if (err == ENODATA) {
      napi_get_null(env, &out);
      return out;
    }
    return throw_errno(env, err, "ioctl(FS_IOC_GET_ENCRYPTION_POLICY_EX)", path);
  }
  napi_create_object(env, &out);
  set_u32(env, out, "version", arg.policy.version);
  if (arg.policy.version == FSCRYPT_POLICY_V2) {
    set_u32(env, out, "contentsMode", arg.policy.v2.contents_encryption_mode);
    set_u32(env, out, "filenamesMode", arg.policy.v2.filenames_encryption_mode);
    set_u32(env, out, "flags", arg.policy.v2.flags);
    napi_set_named_property(env, out, "identifier",
                            make_buffer(env, arg.policy.v2.master_key_identifier, FSCRYPT_KEY_IDENTIFIER_SIZE));
  } else {
    set_u32(env, out, "contentsMode", arg.policy.v1.contents_encryption_mode);
    set_u32(env, out, "filenamesMode", arg.policy.v1.filenames_encryption_mode);
    set_u32(env, out, "flags", arg.policy.v1.flags);
    napi_set_named_property(env, out, "identifier",
                            make_buffer(env, arg.policy.v1.master_key_descriptor, FSCRYPT_KEY_DESCRIPTOR_SIZE));
  }
  return out;
}

// keyStatus(path, identifier: Buffer(16)) -> { status, statusFlags, userCount }.
static napi_value key_status(napi_env env, napi_callback_info info) {
  napi_value argv[MAX_ARGS];
  char path[PATH_MAX_LEN];
  uint8_t *id;
  size_t id_len;
  if (get_args(env, info, 2, argv) || get_string(env, argv[0], path, sizeof path) ||
      get_buffer(env, argv[1], FSCRYPT_KEY_IDENTIFIER_SIZE, 1, &id, &id_len))
    return NULL;
  struct fscrypt_get_key_status_arg arg;
  memset(&arg, 0, sizeof arg);
  arg.key_spec.type = FSCRYPT_KEY_SPEC_TYPE_IDENTIFIER;
  memcpy(arg.key_spec.u.identifier, id, FSCRYPT_KEY_IDENTIFIER_SIZE);
  int fd = open_for_ioctl(env, path);
  if (fd < 0) return NULL;
  int rc = ioctl(fd, FS_IOC_GET_ENCRYPTION_KEY_STATUS, &arg);
  int err = errno;
  close(fd);
  if (rc != 0) return throw_errno(env, err, "ioctl(FS_IOC_GET_ENCRYPTION_KEY_STATUS)", path);
  napi_value out;
  napi_create_object(env, &out);
  set_u32(env, out, "status", arg.status);
  set_u32(env, out, "statusFlags", arg.status_flags);
  set_u32(env, out, "userCount", arg.user_count);
  return out;
}

// Binds `path` to a free loop device: picks one with LOOP_CTL_GET_FREE and binds it atomically with LOOP_CONFIGURE,
// retrying when another process wins the race for the same device. Returns 0 and the device in `dev`, or an errno with
// the failed call in *syscall and what it was about in `what`. Runs on the thread pool: LOOP_CONFIGURE freezes the
// device's queue and waits for the block layer (milliseconds), which on the agent's thread stalled every start.
static int attach_loop(const char *path, uint32_t block_size, bool direct_io, char *dev, size_t dev_len,
                       const char **syscall, char *what, size_t what_len) {
  snprintf(what, what_len, "%s", path);
  int file_fd = open(path, O_RDWR | O_CLOEXEC | O_NOFOLLOW);
  if (file_fd < 0) return *syscall = "open", errno;
  int ctl = open("/dev/loop-control", O_RDWR | O_CLOEXEC);
  if (ctl < 0) {
    int err = errno;
    close(file_fd);
    snprintf(what, what_len, "/dev/loop-control");
    return *syscall = "open", err;
  }
  int err = EBUSY;
  *syscall = "ioctl(LOOP_CONFIGURE)";
  snprintf(what, what_len, "no free loop device after 16 attempts");
  for (int attempt = 0; attempt < 16; attempt++) {
    int n = ioctl(ctl, LOOP_CTL_GET_FREE);
    if (n < 0) {
      err = errno;
      *syscall = "ioctl(LOOP_CTL_GET_FREE)";
      what[0] = 0;
      break;
    }
    snprintf(dev, dev_len, "/dev/loop%d", n);
    int loop_fd = open(dev, O_RDWR | O_CLOEXEC);
    if (loop_fd < 0) {
      if (errno == ENOENT || errno == ENXIO) continue;
      err = errno;
      *syscall = "open";
      snprintf(what, what_len, "%s", dev);
      break;
    }
    struct loop_config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.fd = (uint32_t)file_fd;
    cfg.block_size = block_size;
    cfg.info.lo_flags = direct_io ? LO_FLAGS_DIRECT_IO : 0;
    int rc = ioctl(loop_fd, LOOP_CONFIGURE, &cfg);
    int e = errno;
    close(loop_fd);
    if (rc == 0) {
      err = 0;
      break;
    }
    if (e != EBUSY) {
      err = e;
      snprintf(what, what_len, "%s", dev);
      break;
    }
  }
  close(ctl);
  close(file_fd);
  return err;
}

// loopDetach(dev, deferIfBusy) -> boolean (true: detached now). Exclusive open first, so a device still mounted
// anywhere is refused (EBUSY) — unless deferIfBusy: then LOOP_CLR_FD on a shared open arms autoclear, and the kernel
// detaches the device when its last holder (a mount in another namespace) lets go; returns false.
static napi_value loop_detach(napi_env env, napi_callback_info info) {
  napi_value argv[MAX_ARGS];
  char dev[PATH_MAX_LEN];
  bool defer = false;
  if (get_args(env, info, 2, argv) || get_string(env, argv[0], dev, sizeof dev)) return NULL;
  if (napi_get_value_bool(env, argv[1], &defer) != napi_ok) return throw_type(env, "expected a boolean");
  int fd = open(dev, O_RDWR | O_CLOEXEC | O_EXCL);
  bool now = fd >= 0;
  if (fd < 0 && errno == EBUSY && defer) fd = open(dev, O_RDWR | O_CLOEXEC);
  if (fd < 0) return throw_errno(env, errno, "open(O_EXCL)", dev);
  int rc = ioctl(fd, LOOP_CLR_FD, 0);
  int err = errno;
  close(fd);
  if (rc != 0) return throw_errno(env, err, "ioctl(LOOP_CLR_FD)", dev);
  napi_value result;
  napi_get_boolean(env, now, &result);
  return result;
}

// mount(source, target, fstype, flags, data) -> undefined.
static napi_value do_mount(napi_env env, napi_callback_info info) {
  napi_value argv[MAX_ARGS];
  char source[PATH_MAX_LEN], target[PATH_MAX_LEN], fstype[64], data[1024];
  uint32_t flags;
  size_t data_len = 0;
  if (get_args(env, info, 5, argv) || get_string(env, argv[0], source, sizeof source) ||
      get_string(env, argv[1], target, sizeof target) || get_string(env, argv[2], fstype, sizeof fstype) ||
      get_u32(env, argv[3], &flags))
    return NULL;
  if (napi_get_value_string_utf8(env, argv[4], data, sizeof data, &data_len) != napi_ok)
    return throw_type(env, "expected a string for mount data");
  if (mount(source, target, fstype, flags, data_len ? data : NULL) != 0)
    return throw_errno(env, errno, "mount", target);
  return NULL;
}

// loopFreeIndex() -> index LOOP_CTL_GET_FREE would hand out (probe for the doctor).
static napi_value loop_free_index(napi_env env, napi_callback_info info) {
  (void)info;
  int ctl = open("/dev/loop-control", O_RDWR | O_CLOEXEC);
  if (ctl < 0) return throw_errno(env, errno, "open", "/dev/loop-control");
  int n = ioctl(ctl, LOOP_CTL_GET_FREE);
  int err = errno;
  close(ctl);
  if (n < 0) return throw_errno(env, err, "ioctl(LOOP_CTL_GET_FREE)", NULL);
  napi_value out;
  napi_create_int32(env, n, &out);
  return out;
}

// The slow calls (their cost grows with the dirty data or blocks in the volume, or they wait on the block layer:
// loop attach, mount) run on the libuv thread pool and return Promises, so neither a prepare nor a wipe stalls the
// agent's event loop.
enum op_kind { OP_REMOVE_KEY, OP_UMOUNT, OP_DISCARD, OP_LOOP_ATTACH, OP_MOUNT };

struct op {
  napi_async_work work;
  napi_deferred deferred;
  enum op_kind kind;
  char path[PATH_MAX_LEN];
  uint8_t id[FSCRYPT_KEY_IDENTIFIER_SIZE];
  bool all_users;
  uint32_t flags;
  int err;
  const char *syscall;
  double result;
  // OP_LOOP_ATTACH: block size and direct I/O in, the device out (resolves to it); what failed, for the error.
  uint32_t block_size;
  bool direct_io;
  char dev[64];
  char what[PATH_MAX_LEN];
  // OP_MOUNT: path is the source.
  char target[PATH_MAX_LEN];
  char fstype[64];
  char data[1024];
};

// Runs an fscrypt ioctl that removes a key; sets op->result to the removal status flags.
static void exec_remove_key(struct op *op) {
  struct fscrypt_remove_key_arg arg;
  memset(&arg, 0, sizeof arg);
  arg.key_spec.type = FSCRYPT_KEY_SPEC_TYPE_IDENTIFIER;
  memcpy(arg.key_spec.u.identifier, op->id, FSCRYPT_KEY_IDENTIFIER_SIZE);
  op->syscall = op->all_users ? "ioctl(FS_IOC_REMOVE_ENCRYPTION_KEY_ALL_USERS)" : "ioctl(FS_IOC_REMOVE_ENCRYPTION_KEY)";
  int fd = open(op->path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
  if (fd < 0) {
    op->err = errno;
    op->syscall = "open";
    return;
  }
  if (ioctl(fd, op->all_users ? FS_IOC_REMOVE_ENCRYPTION_KEY_ALL_USERS : FS_IOC_REMOVE_ENCRYPTION_KEY, &arg) != 0)
    op->err = errno;
  else
    op->result = arg.removal_status_flags;
  close(fd);
}

// Discards every block of a device opened exclusively (EBUSY while mounted anywhere); result = bytes.
static void exec_discard(struct op *op) {
  int fd = open(op->path, O_RDWR | O_CLOEXEC | O_EXCL);
  if (fd < 0) {
    op->err = errno;
    op->syscall = "open(O_EXCL)";
    return;
  }
  uint64_t size = 0;
  op->syscall = "ioctl(BLKGETSIZE64)";
  if (ioctl(fd, BLKGETSIZE64, &size) != 0) {
    op->err = errno;
  } else {
    uint64_t range[2] = {0, size};
    op->syscall = "ioctl(BLKDISCARD)";
    if (ioctl(fd, BLKDISCARD, range) != 0) op->err = errno;
    else op->result = (double)size;
  }
  close(fd);
}

// Thread-pool side of an op: performs the blocking syscall(s), recording errno.
static void op_execute(napi_env env, void *data) {
  (void)env;
  struct op *op = data;
  switch (op->kind) {
    case OP_REMOVE_KEY:
      exec_remove_key(op);
      break;
    case OP_UMOUNT:
      op->syscall = "umount2";
      if (umount2(op->path, (int)op->flags | UMOUNT_NOFOLLOW) != 0) op->err = errno;
      break;
    case OP_DISCARD:
      exec_discard(op);
      break;
    case OP_LOOP_ATTACH:
      op->err = attach_loop(op->path, op->block_size, op->direct_io, op->dev, sizeof op->dev, &op->syscall, op->what, sizeof op->what);
      break;
    case OP_MOUNT:
      op->syscall = "mount";
      snprintf(op->what, sizeof op->what, "%s", op->target);
      if (mount(op->path, op->target, op->fstype, op->flags, op->data[0] ? op->data : NULL) != 0) op->err = errno;
      break;
  }
}

// Builds the Error for a failed op (same shape as throw_errno's).
static napi_value op_error(napi_env env, struct op *op) {
  const char *name = strerrorname_np(op->err);
  const char *path = op->what[0] ? op->what : op->path;
  char msg[2 * PATH_MAX_LEN + 256];
  snprintf(msg, sizeof msg, "%s %s: %s %s", name ? name : "EUNKNOWN", op->syscall, strerror(op->err), path);
  napi_value code, message, error, num, sc, p;
  napi_create_string_utf8(env, name ? name : "EUNKNOWN", NAPI_AUTO_LENGTH, &code);
  napi_create_string_utf8(env, msg, NAPI_AUTO_LENGTH, &message);
  napi_create_error(env, code, message, &error);
  napi_create_int32(env, -op->err, &num);
  napi_set_named_property(env, error, "errno", num);
  napi_create_string_utf8(env, op->syscall, NAPI_AUTO_LENGTH, &sc);
  napi_set_named_property(env, error, "syscall", sc);
  napi_create_string_utf8(env, path, NAPI_AUTO_LENGTH, &p);
  napi_set_named_property(env, error, "path", p);
  return error;
}

// Main-thread side of an op: settles its Promise and frees it.
static void op_complete(napi_env env, napi_status status, void *data) {
  struct op *op = data;
  if (status != napi_ok && op->err == 0) op->err = ECANCELED;
  if (op->err != 0) {
    napi_reject_deferred(env, op->deferred, op_error(env, op));
  } else {
    napi_value v;
    if (op->kind == OP_LOOP_ATTACH) napi_create_string_utf8(env, op->dev, NAPI_AUTO_LENGTH, &v);
    else napi_create_double(env, op->result, &v);
    napi_resolve_deferred(env, op->deferred, v);
  }
  napi_delete_async_work(env, op->work);
  free(op);
}

// Queues an op and returns its Promise (takes ownership of op).
static napi_value op_queue(napi_env env, struct op *op) {
  napi_value promise, name;
  napi_create_promise(env, &op->deferred, &promise);
  napi_create_string_utf8(env, "fscrypt-op", NAPI_AUTO_LENGTH, &name);
  napi_create_async_work(env, NULL, name, op_execute, op_complete, op, &op->work);
  napi_queue_async_work(env, op->work);
  return promise;
}

// Allocates an op for `path` (argument 0); returns NULL with an exception pending on failure.
static struct op *op_new(napi_env env, enum op_kind kind, napi_value path) {
  struct op *op = calloc(1, sizeof *op);
  if (!op) {
    throw_errno(env, ENOMEM, "calloc", NULL);
    return NULL;
  }
  op->kind = kind;
  if (get_string(env, path, op->path, sizeof op->path)) {
    free(op);
    return NULL;
  }
  return op;
}

// removeKey(path, identifier: Buffer(16), allUsers: boolean) -> Promise<removal status flags>.
static napi_value remove_key(napi_env env, napi_callback_info info) {
  napi_value argv[MAX_ARGS];
  uint8_t *id;
  size_t id_len;
  bool all_users = false;
  if (get_args(env, info, 3, argv) || get_buffer(env, argv[1], FSCRYPT_KEY_IDENTIFIER_SIZE, 1, &id, &id_len)) return NULL;
  if (napi_get_value_bool(env, argv[2], &all_users) != napi_ok) return throw_type(env, "expected a boolean");
  struct op *op = op_new(env, OP_REMOVE_KEY, argv[0]);
  if (!op) return NULL;
  memcpy(op->id, id, FSCRYPT_KEY_IDENTIFIER_SIZE);
  op->all_users = all_users;
  return op_queue(env, op);
}

// umount(target, flags) -> Promise<0>.
static napi_value do_umount(napi_env env, napi_callback_info info) {
  napi_value argv[MAX_ARGS];
  uint32_t flags;
  if (get_args(env, info, 2, argv) || get_u32(env, argv[1], &flags)) return NULL;
  struct op *op = op_new(env, OP_UMOUNT, argv[0]);
  if (!op) return NULL;
  op->flags = flags;
  return op_queue(env, op);
}

// discardDevice(dev) -> Promise<bytes discarded>. Opens the device exclusively (so it refuses
// while mounted anywhere) and discards every block; on a loop device this punches holes in
// the backing file.
static napi_value discard_device(napi_env env, napi_callback_info info) {
  napi_value argv[MAX_ARGS];
  if (get_args(env, info, 1, argv)) return NULL;
  struct op *op = op_new(env, OP_DISCARD, argv[0]);
  if (!op) return NULL;
  return op_queue(env, op);
}

// loopAttach(backingFile, blockSize, directIo) -> Promise<"/dev/loopN"> (see attach_loop).
static napi_value loop_attach(napi_env env, napi_callback_info info) {
  napi_value argv[MAX_ARGS];
  uint32_t block_size;
  bool direct_io = false;
  if (get_args(env, info, 3, argv) || get_u32(env, argv[1], &block_size)) return NULL;
  if (napi_get_value_bool(env, argv[2], &direct_io) != napi_ok) return throw_type(env, "expected a boolean");
  struct op *op = op_new(env, OP_LOOP_ATTACH, argv[0]);
  if (!op) return NULL;
  op->block_size = block_size;
  op->direct_io = direct_io;
  return op_queue(env, op);
}

// mountAsync(source, target, fstype, flags, data) -> Promise<0>: mount(2) on the thread pool (a filesystem's mount
// reads its metadata from the device).
static napi_value do_mount_async(napi_env env, napi_callback_info info) {
  napi_value argv[MAX_ARGS];
  uint32_t flags;
  size_t len = 0;
  if (get_args(env, info, 5, argv) || get_u32(env, argv[3], &flags)) return NULL;
  struct op *op = op_new(env, OP_MOUNT, argv[0]);
  if (!op) return NULL;
  op->flags = flags;
  if (get_string(env, argv[1], op->target, sizeof op->target) || get_string(env, argv[2], op->fstype, sizeof op->fstype) ||
      napi_get_value_string_utf8(env, argv[4], op->data, sizeof op->data, &len) != napi_ok) {
    free(op);
    return NULL;
  }
  return op_queue(env, op);
}

// readExtents(path) -> [{offset, data: Buffer}]: the data extents of a sparse file (SEEK_DATA/SEEK_HOLE), read whole.
// The agent reads a freshly made empty filesystem image once and writes only these bytes into every new volume's
// backing file: the holes between them read as zeros, as in the image.
static napi_value read_extents(napi_env env, napi_callback_info info) {
  napi_value argv[MAX_ARGS];
  char path[PATH_MAX_LEN];
  if (get_args(env, info, 1, argv) || get_string(env, argv[0], path, sizeof path)) return NULL;
  int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
  if (fd < 0) return throw_errno(env, errno, "open", path);
  struct stat st;
  if (fstat(fd, &st) != 0) {
    int err = errno;
    close(fd);
    return throw_errno(env, err, "fstat", path);
  }
  napi_value out;
  napi_create_array(env, &out);
  uint32_t n = 0;
  off_t pos = 0;
  size_t total = 0;
  while (pos < st.st_size) {
    off_t data = lseek(fd, pos, SEEK_DATA);
    if (data < 0) {
      if (errno == ENXIO) break;  // no data past pos
      int err = errno;
      close(fd);
      return throw_errno(env, err, "lseek(SEEK_DATA)", path);
    }
    off_t hole = lseek(fd, data, SEEK_HOLE);
    if (hole < 0) {
      int err = errno;
      close(fd);
      return throw_errno(env, err, "lseek(SEEK_HOLE)", path);
    }
    size_t len = (size_t)(hole - data);
    total += len;
    if (total > (64u << 20)) {
      close(fd);
      return throw_errno(env, EFBIG, "readExtents", path);
    }
    void *buf;
    napi_value b;
    if (napi_create_buffer(env, len, &buf, &b) != napi_ok) {
      close(fd);
      return throw_errno(env, ENOMEM, "readExtents", path);
    }
    size_t got = 0;
    while (got < len) {
      ssize_t r = pread(fd, (char *)buf + got, len - got, data + (off_t)got);
      if (r <= 0) {
        int err = r < 0 ? errno : EIO;
        close(fd);
        return throw_errno(env, err, "pread", path);
      }
      got += (size_t)r;
    }
    napi_value ext, off;
    napi_create_object(env, &ext);
    napi_create_double(env, (double)data, &off);
    napi_set_named_property(env, ext, "offset", off);
    napi_set_named_property(env, ext, "data", b);
    napi_set_element(env, out, n++, ext);
    pos = hole;
  }
  close(fd);
  return out;
}

// Registers the exported functions and the constants the TypeScript side needs.
static napi_value init(napi_env env, napi_value exports) {
  struct {
    const char *name;
    napi_callback fn;
  } fns[] = {
      {"addKey", add_key},           {"setPolicyV2", set_policy_v2},   {"getPolicy", get_policy},
      {"keyStatus", key_status},     {"removeKey", remove_key},         {"loopAttach", loop_attach},
      {"loopDetach", loop_detach},   {"discardDevice", discard_device}, {"mount", do_mount}, {"mountAsync", do_mount_async},
      {"umount", do_umount},         {"loopFreeIndex", loop_free_index}, {"readExtents", read_extents},
  };
  for (size_t i = 0; i < sizeof fns / sizeof fns[0]; i++) {
    napi_value f;
    napi_create_function(env, fns[i].name, NAPI_AUTO_LENGTH, fns[i].fn, NULL, &f);
    napi_set_named_property(env, exports, fns[i].name, f);
  }
  napi_value c;
  napi_create_object(env, &c);
  set_u32(env, c, "FSCRYPT_POLICY_V2", FSCRYPT_POLICY_V2);
  set_u32(env, c, "FSCRYPT_MODE_AES_256_XTS", FSCRYPT_MODE_AES_256_XTS);
  set_u32(env, c, "FSCRYPT_MODE_AES_256_CTS", FSCRYPT_MODE_AES_256_CTS);
  set_u32(env, c, "FSCRYPT_POLICY_FLAGS_PAD_32", FSCRYPT_POLICY_FLAGS_PAD_32);
  set_u32(env, c, "FSCRYPT_KEY_STATUS_ABSENT", FSCRYPT_KEY_STATUS_ABSENT);
  set_u32(env, c, "FSCRYPT_KEY_STATUS_PRESENT", FSCRYPT_KEY_STATUS_PRESENT);
  set_u32(env, c, "FSCRYPT_KEY_STATUS_INCOMPLETELY_REMOVED", FSCRYPT_KEY_STATUS_INCOMPLETELY_REMOVED);
  set_u32(env, c, "FSCRYPT_KEY_REMOVAL_STATUS_FLAG_FILES_BUSY", FSCRYPT_KEY_REMOVAL_STATUS_FLAG_FILES_BUSY);
  set_u32(env, c, "FSCRYPT_KEY_REMOVAL_STATUS_FLAG_OTHER_USERS", FSCRYPT_KEY_REMOVAL_STATUS_FLAG_OTHER_USERS);
  set_u32(env, c, "MS_NOSUID", MS_NOSUID);
  set_u32(env, c, "MS_NODEV", MS_NODEV);
  set_u32(env, c, "MS_NOATIME", MS_NOATIME);
  napi_set_named_property(env, exports, "constants", c);
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
