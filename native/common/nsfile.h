/*
 * Opening a file that a config.json names as a namespace (linux.namespaces[].path), shared by the
 * addon (TypeScript's check) and the helper (the join). The path is opened O_PATH first and must be a
 * regular file on nsfs; only then is it really opened, through /proc/self/fd. A fifo, a device or a
 * socket named there is never opened for real: opening a fifo O_RDONLY blocks until a writer comes,
 * and opening a device can have side effects. The helper checks again because the path may have been
 * swapped between TypeScript's check and the join.
 */
#ifndef KATA_TS_NSFILE_H
#define KATA_TS_NSFILE_H

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <unistd.h>

#define KATA_NSFS_MAGIC 0x6e736673
#define KATA_NS_GET_NSTYPE _IO(0xb7, 0x3)

/* An O_RDONLY fd of the namespace file at path; -1 with errno on an open error; -2 when the file is
 * not a namespace (errno untouched). */
static inline int open_ns_file(const char *path) {
  int pfd = open(path, O_PATH | O_CLOEXEC);
  if (pfd < 0) return -1;
  struct statfs sfs;
  struct stat st;
  if (fstatfs(pfd, &sfs) < 0 || fstat(pfd, &st) < 0) {
    int e = errno;
    close(pfd);
    errno = e;
    return -1;
  }
  if (sfs.f_type != KATA_NSFS_MAGIC || !S_ISREG(st.st_mode)) {
    close(pfd);
    return -2;
  }
  char self[64];
  snprintf(self, sizeof self, "/proc/self/fd/%d", pfd);
  int fd = open(self, O_RDONLY | O_CLOEXEC);
  int e = errno;
  close(pfd);
  errno = e;
  return fd;
}

#endif
