// mounts.c: N-API addon with the mount and file calls a cell whose root is an OCI image needs (Node has none of them):
//   cellRoot(layersSrc, layersDst, rootDst, lowerNames, fromUid, toUid, lockFlags)
//       makes a user namespace whose uid_map and gid_map are `fromUid toUid 65536` (a short-lived child of this
//       process in a new user namespace, whose maps root writes; its ns fd outlives it), a detached clone of
//       layersSrc (open_tree OPEN_TREE_CLONE|AT_RECURSIVE) made idmapped through it, read-only, nosuid, nodev
//       (mount_setattr), attached at layersDst (move_mount), then a read-only nosuid nodev overlay at rootDst whose
//       lower layers are layersDst/<name> for each name, first = top (fsopen/fsconfig "lowerdir+"/fsmount). One call,
//       no process started beyond the clone; on failure nothing stays mounted. lockFlags false leaves the overlay
//       without nosuid/nodev (it stays read-only): runsc's gofer remounts the root read-only from inside a user
//       namespace, which fails (EPERM) on a mount whose nosuid/nodev it does not repeat.
//   unmount(path) -> bool  detaches a mount (MNT_DETACH, never following a symlink); false if nothing was mounted.
//   whiteout(path)         an overlay whiteout: a character device 0:0.
//   setOpaque(path)        the overlay opaque-directory xattr (trusted.overlay.opaque=y);
//   isOpaque(path) -> bool whether a directory (never followed) carries it.
// Failures throw an Error whose `code` is the errno name.
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/mount.h>
#include <node_api.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <sys/xattr.h>
#include <unistd.h>

#define PATH_LEN 4096
#define MAX_LOWER 256
#define RANGE 65536
#define CHILD_STACK (64 * 1024)

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

static int get_string(napi_env env, napi_value v, char *out) {
  size_t len = 0;
  if (napi_get_value_string_utf8(env, v, out, PATH_LEN, &len) != napi_ok || len == 0 || len >= PATH_LEN - 1) return -1;
  return 0;
}

static napi_value one_path(napi_env env, napi_callback_info info, char *path) {
  napi_value argv[1];
  size_t argc = 1;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 1 || get_string(env, argv[0], path) != 0) {
    napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", "expected a path");
    return NULL;
  }
  return argv[0];
}

static napi_value do_whiteout(napi_env env, napi_callback_info info) {
  char path[PATH_LEN];
  if (!one_path(env, info, path)) return NULL;
  if (mknod(path, S_IFCHR | 0, makedev(0, 0)) != 0) return throw_errno(env, errno, "mknod", path);
  return NULL;
}

static napi_value do_set_opaque(napi_env env, napi_callback_info info) {
  char path[PATH_LEN];
  if (!one_path(env, info, path)) return NULL;
  if (lsetxattr(path, "trusted.overlay.opaque", "y", 1, 0) != 0) return throw_errno(env, errno, "lsetxattr", path);
  return NULL;
}

static napi_value do_is_opaque(napi_env env, napi_callback_info info) {
  char path[PATH_LEN], value[8];
  if (!one_path(env, info, path)) return NULL;
  ssize_t n = lgetxattr(path, "trusted.overlay.opaque", value, sizeof value);
  if (n < 0 && errno != ENODATA && errno != ENOTSUP && errno != ENOENT) return throw_errno(env, errno, "lgetxattr", path);
  napi_value out;
  napi_get_boolean(env, n == 1 && value[0] == 'y', &out);
  return out;
}

static napi_value do_unmount(napi_env env, napi_callback_info info) {
  char path[PATH_LEN];
  if (!one_path(env, info, path)) return NULL;
  napi_value out;
  if (umount2(path, MNT_DETACH | UMOUNT_NOFOLLOW) != 0) {
    if (errno != EINVAL && errno != ENOENT) return throw_errno(env, errno, "umount2", path);
    napi_get_boolean(env, false, &out);
    return out;
  }
  napi_get_boolean(env, true, &out);
  return out;
}

// The user-namespace child: it shares our memory (CLONE_VM, its own stack) and only waits for EOF on its pipe.
static int userns_child(void *arg) {
  int *p = arg;
  syscall(SYS_close, p[1]);
  char c;
  syscall(SYS_read, p[0], &c, 1);
  syscall(SYS_exit, 0);
  return 0;
}

static int write_file(const char *path, const char *text) {
  int fd = open(path, O_WRONLY | O_CLOEXEC);
  if (fd < 0) return -1;
  ssize_t n = write(fd, text, strlen(text));
  int err = errno;
  close(fd);
  if (n != (ssize_t)strlen(text)) {
    errno = n < 0 ? err : EIO;
    return -1;
  }
  return 0;
}

// Returns a user namespace fd mapping [from, from+RANGE) to [to, to+RANGE), or -1 with errno and *what set.
static int make_userns(unsigned from, unsigned to, const char **what) {
  int p[2];
  if (pipe2(p, O_CLOEXEC) != 0) return *what = "pipe2", -1;
  char *stack = malloc(CHILD_STACK);
  if (!stack) return close(p[0]), close(p[1]), errno = ENOMEM, *what = "malloc", -1;
  pid_t pid = clone(userns_child, stack + CHILD_STACK, CLONE_NEWUSER | CLONE_VM, p);
  if (pid < 0) {
    int err = errno;
    close(p[0]), close(p[1]), free(stack);
    return errno = err, *what = "clone", -1;
  }
  char path[64], map[64];
  int fd = -1, err = 0;
  snprintf(map, sizeof map, "%u %u %u\n", from, to, RANGE);
  snprintf(path, sizeof path, "/proc/%d/uid_map", pid);
  if (write_file(path, map) != 0) err = errno, *what = "write uid_map";
  snprintf(path, sizeof path, "/proc/%d/gid_map", pid);
  if (!err && write_file(path, map) != 0) err = errno, *what = "write gid_map";
  snprintf(path, sizeof path, "/proc/%d/ns/user", pid);
  if (!err && (fd = open(path, O_RDONLY | O_CLOEXEC)) < 0) err = errno, *what = "open ns/user";
  close(p[1]);  // the child reads EOF and exits
  close(p[0]);
  while (waitpid(pid, NULL, __WALL) < 0 && errno == EINTR) {
  }
  free(stack);
  if (err) return errno = err, -1;
  return fd;
}

// cellRoot(layersSrc, layersDst, rootDst, lowerNames[], fromUid, toUid)
static napi_value do_cell_root(napi_env env, napi_callback_info info) {
  napi_value argv[7];
  size_t argc = 7;
  char src[PATH_LEN], layers[PATH_LEN], root[PATH_LEN], lower[PATH_LEN];
  uint32_t from, to, n = 0;
  bool is_array = false, lock = true;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 6 || get_string(env, argv[0], src) ||
      get_string(env, argv[1], layers) || get_string(env, argv[2], root) || napi_is_array(env, argv[3], &is_array) != napi_ok ||
      !is_array || napi_get_array_length(env, argv[3], &n) != napi_ok || n < 1 || n > MAX_LOWER ||
      napi_get_value_uint32(env, argv[4], &from) != napi_ok || napi_get_value_uint32(env, argv[5], &to) != napi_ok ||
      napi_get_value_bool(env, argv[6], &lock) != napi_ok) {
    napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", "cellRoot(layersSrc, layersDst, rootDst, lowerNames, fromUid, toUid, lockFlags)");
    return NULL;
  }
  const char *what = "";
  int ns = make_userns(from, to, &what);
  if (ns < 0) return throw_errno(env, errno, what, src);
  int tree = (int)syscall(SYS_open_tree, AT_FDCWD, src, OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_RECURSIVE);
  if (tree < 0) {
    int err = errno;
    close(ns);
    return throw_errno(env, err, "open_tree", src);
  }
  struct mount_attr attr = {.attr_set = MOUNT_ATTR_IDMAP | MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV, .userns_fd = (uint64_t)ns};
  int rc = (int)syscall(SYS_mount_setattr, tree, "", AT_EMPTY_PATH | AT_RECURSIVE, &attr, sizeof attr);
  int err = errno;
  close(ns);
  if (rc != 0) return close(tree), throw_errno(env, err, "mount_setattr", src);
  rc = (int)syscall(SYS_move_mount, tree, "", AT_FDCWD, layers, MOVE_MOUNT_F_EMPTY_PATH);
  err = errno;
  close(tree);
  if (rc != 0) return throw_errno(env, err, "move_mount", layers);

  // The overlay: every lower layer added by its own "lowerdir+" (no option-string length limit, no escaping).
  int fs = (int)syscall(SYS_fsopen, "overlay", FSOPEN_CLOEXEC);
  if (fs < 0) {
    err = errno;
    what = "fsopen overlay";
    goto undo_layers;
  }
  if (syscall(SYS_fsconfig, fs, FSCONFIG_SET_STRING, "source", "cleanroom-image", 0) != 0) {
    err = errno, what = "fsconfig source";
    goto undo_fs;
  }
  for (uint32_t i = 0; i < n; i++) {
    napi_value v;
    char name[PATH_LEN];
    if (napi_get_element(env, argv[3], i, &v) != napi_ok || get_string(env, v, name) || strchr(name, '/') ||
        snprintf(lower, sizeof lower, "%s/%s", layers, name) >= (int)sizeof lower) {
      err = EINVAL, what = "lower layer name";
      goto undo_fs;
    }
    if (syscall(SYS_fsconfig, fs, FSCONFIG_SET_STRING, "lowerdir+", lower, 0) != 0) {
      err = errno, what = "fsconfig lowerdir+";
      goto undo_fs;
    }
  }
  if (syscall(SYS_fsconfig, fs, FSCONFIG_CMD_CREATE, NULL, NULL, 0) != 0) {
    err = errno, what = "fsconfig create overlay";
    goto undo_fs;
  }
  int mnt = (int)syscall(SYS_fsmount, fs, FSMOUNT_CLOEXEC, MOUNT_ATTR_RDONLY | (lock ? MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV : 0));
  if (mnt < 0) {
    err = errno, what = "fsmount overlay";
    goto undo_fs;
  }
  rc = (int)syscall(SYS_move_mount, mnt, "", AT_FDCWD, root, MOVE_MOUNT_F_EMPTY_PATH);
  err = errno;
  close(mnt);
  if (rc != 0) {
    what = "move_mount overlay";
    goto undo_fs;
  }
  close(fs);
  return NULL;
undo_fs:
  close(fs);
undo_layers:
  umount2(layers, MNT_DETACH | UMOUNT_NOFOLLOW);
  return throw_errno(env, err, what, root);
}

static napi_value init(napi_env env, napi_value exports) {
  struct {
    const char *name;
    napi_callback fn;
  } fns[] = {{"cellRoot", do_cell_root}, {"unmount", do_unmount}, {"whiteout", do_whiteout}, {"setOpaque", do_set_opaque}, {"isOpaque", do_is_opaque}};
  for (size_t i = 0; i < sizeof fns / sizeof fns[0]; i++) {
    napi_value f;
    napi_create_function(env, fns[i].name, NAPI_AUTO_LENGTH, fns[i].fn, NULL, &f);
    napi_set_named_property(env, exports, fns[i].name, f);
  }
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
