/*
 * file-ops.c: one file operation of a sandbox, run in a child of the supervisor that already holds the workload's
 * identity (all uids and gids the workload's, no capability, non-dumpable). Paths resolve in the cell's own mount
 * namespace with the workload's rights: a symlink the workload planted leads only where the workload could go itself.
 * The child talks to init over one socket (fd `sock`): a read streams the file's bytes, a write takes them until EOF,
 * stat and list send entries. Its exit status is the errno of the failure, 0 on success.
 *
 * Entry encoding (stat, list): type(u8: 1 file, 2 directory, 3 symlink, 4 other) mode(u32) size(u64) mtime_ms(u64)
 * name_len(u16) name. A list longer than MAX_LIST ends with one entry of type 0xff (truncated).
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>
#include "cell-init.h"

/* FOP_* are the operations (src/agent/sandbox/init-codec.ts FILE_OPS). */
enum { FOP_STAT = 1, FOP_LIST = 2, FOP_MKDIR = 3, FOP_REMOVE = 4, FOP_READ = 5, FOP_WRITE = 6, FOP_RENAME = 7 };

static int send_all(int sock, const void *buf, size_t len) {
  const char *p = buf;
  while (len > 0) {
    ssize_t n = send(sock, p, len, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return -1;
    p += n;
    len -= (size_t)n;
  }
  return 0;
}

static int send_entry(int sock, const char *name, const struct stat *st) {
  unsigned char e[23];
  e[0] = S_ISREG(st->st_mode) ? 1 : S_ISDIR(st->st_mode) ? 2 : S_ISLNK(st->st_mode) ? 3 : 4;
  uint32_t mode = st->st_mode & 07777;
  uint64_t size = (uint64_t)st->st_size;
  uint64_t mtime = (uint64_t)st->st_mtim.tv_sec * 1000 + (uint64_t)st->st_mtim.tv_nsec / 1000000;
  size_t nl = strnlen(name, 1024);
  uint16_t nlen = (uint16_t)nl;
  memcpy(e + 1, &mode, 4);
  memcpy(e + 5, &size, 8);
  memcpy(e + 13, &mtime, 8);
  memcpy(e + 21, &nlen, 2);
  return send_all(sock, e, sizeof e) == 0 && send_all(sock, name, nl) == 0 ? 0 : -1;
}

static const char *base_name(const char *path) {
  const char *s = strrchr(path, '/');
  return s && s[1] ? s + 1 : path;
}

static int op_list(const char *path, int sock) {
  DIR *d = opendir(path);
  if (!d) return errno;
  int n = 0;
  struct dirent *de;
  errno = 0;
  while ((de = readdir(d))) {
    if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0) continue;
    if (n == MAX_LIST) {
      unsigned char t = 0xff;
      send_all(sock, &t, 1);
      break;
    }
    struct stat st;
    if (fstatat(dirfd(d), de->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0) continue; /* removed meanwhile */
    if (send_entry(sock, de->d_name, &st) != 0) return EPIPE;
    n++;
  }
  closedir(d);
  return 0;
}

static int op_mkdir(char *path, mode_t mode) {
  struct stat st;
  if (stat(path, &st) == 0) return S_ISDIR(st.st_mode) ? 0 : EEXIST;
  for (char *p = path + 1; *p; p++) {
    if (*p != '/') continue;
    *p = '\0';
    int r = mkdir(path, 0755);
    int e = errno;
    *p = '/';
    if (r != 0 && e != EEXIST) return e;
  }
  if (mkdir(path, mode) != 0 && errno != EEXIST) return errno;
  if (stat(path, &st) != 0) return errno;
  return S_ISDIR(st.st_mode) ? 0 : EEXIST;
}

static int remove_one(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
  (void)st;
  (void)ftw;
  int r = flag == FTW_DP ? rmdir(path) : unlink(path);
  return r == 0 ? 0 : errno;
}

static int op_remove(const char *path, int recursive) {
  struct stat st;
  if (lstat(path, &st) != 0) return errno;
  if (!S_ISDIR(st.st_mode)) return unlink(path) == 0 ? 0 : errno;
  if (!recursive) return rmdir(path) == 0 ? 0 : errno;
  /* FTW_PHYS: a symlink is removed, never followed; FTW_MOUNT: never into another filesystem. */
  int r = nftw(path, remove_one, 32, FTW_DEPTH | FTW_PHYS | FTW_MOUNT);
  return r < 0 ? errno : r;
}

static int op_read(const char *path, int sock) {
  /* O_NONBLOCK: a FIFO planted at the path must not hang the operation; anything but a regular file is refused. */
  int fd = open(path, O_RDONLY | O_NOCTTY | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0) return errno;
  struct stat st;
  if (fstat(fd, &st) != 0) return errno;
  if (S_ISDIR(st.st_mode)) return EISDIR;
  if (!S_ISREG(st.st_mode)) return EINVAL;
  fcntl(fd, F_SETFL, 0);
  static char buf[IO_CHUNK];
  for (;;) {
    ssize_t n = read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return errno;
    if (n == 0) return 0;
    if (send_all(sock, buf, (size_t)n) != 0) return EPIPE;
  }
}

static int op_write(const char *path, mode_t mode, int sock) {
  int fd = open(path, O_WRONLY | O_CREAT | O_NOCTTY | O_NONBLOCK | O_CLOEXEC, mode);
  if (fd < 0) return errno == ENXIO ? EINVAL : errno; /* ENXIO: a FIFO without a reader */
  struct stat st;
  if (fstat(fd, &st) != 0) return errno;
  if (S_ISDIR(st.st_mode)) return EISDIR;
  if (!S_ISREG(st.st_mode)) return EINVAL;
  if (ftruncate(fd, 0) != 0) return errno;
  fcntl(fd, F_SETFL, 0);
  static char buf[IO_CHUNK];
  for (;;) {
    ssize_t n = recv(sock, buf, sizeof buf, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return errno;
    if (n == 0) break;
    for (ssize_t off = 0; off < n;) {
      ssize_t w = write(fd, buf + off, (size_t)(n - off));
      if (w < 0 && errno == EINTR) continue;
      if (w < 0) return errno; /* ENOSPC, EDQUOT, EFBIG…: the result says, and init drops the rest */
      off += w;
    }
  }
  return close(fd) == 0 ? 0 : errno;
}

int run_file_op(uint32_t op, uint32_t flags, uint32_t mode, const char *path, const char *to, int sock) {
  static char pathbuf[4097];
  if (path[0] != '/' || strlen(path) >= sizeof pathbuf) return EINVAL;
  strcpy(pathbuf, path);
  struct stat st;
  switch (op) {
    case FOP_STAT:
      if (lstat(path, &st) != 0) return errno;
      return send_entry(sock, base_name(path), &st) == 0 ? 0 : EPIPE;
    case FOP_LIST:
      return op_list(path, sock);
    case FOP_MKDIR:
      return op_mkdir(pathbuf, mode ? mode & 0777 : 0755);
    case FOP_REMOVE:
      return op_remove(path, flags & 1);
    case FOP_READ:
      return op_read(path, sock);
    case FOP_WRITE:
      return op_write(path, mode ? mode & 0777 : 0644, sock);
    case FOP_RENAME:
      if (to[0] != '/') return EINVAL;
      return rename(path, to) == 0 ? 0 : errno;
    default:
      return EINVAL;
  }
}
