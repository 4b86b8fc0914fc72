// kata-ts-memro.so: preloaded into a template clone's QEMU (LD_PRELOAD) so that QEMU opens the
// template's memory file read-only.
//
// A clone maps the template's memory file privately (`memory-backend-file,share=off`): its writes go
// to copy-on-write pages of its own, so it never needs to write the file. But QEMU before 8.2 opens
// `mem-path` O_RDWR whatever `share` says (QEMU 8.2 added `readonly=on,rom=off` for exactly this), so
// the jail had to bind the file read-write, and a compromised clone QEMU could have written the pages
// every other clone of the template reads. With this library the jail binds the file read-only and
// QEMU's open of that one path (KATA_TS_MEMRO_PATH) is made O_RDONLY; a private mapping of a read-only
// descriptor may still be writable, which is all QEMU does with it (no truncate: the file has its
// size; no hole punching: clones have no balloon).
//
// QEMU 7.2 (Debian 12) imports open64, __open64_2 (the _FORTIFY_SOURCE form) and openat64; the other
// names are covered for other builds. glibc only: QEMU is linked against it.
#include <dlfcn.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>

static int readonly_flags(const char *path, int flags) {
  static const char *ro_path;
  static int looked_up;
  if (!looked_up) {
    ro_path = getenv("KATA_TS_MEMRO_PATH");
    looked_up = 1;
  }
  if (ro_path && path && strcmp(path, ro_path) == 0 && (flags & O_ACCMODE) == O_RDWR)
    return (flags & ~O_ACCMODE) | O_RDONLY;
  return flags;
}

static mode_t mode_arg(int flags, va_list ap) {
  return (flags & O_CREAT) || (flags & O_TMPFILE) == O_TMPFILE ? va_arg(ap, mode_t) : 0;
}

#define REAL(name, type)                                                                            \
  static type real_##name;                                                                          \
  if (!real_##name) real_##name = (type)dlsym(RTLD_NEXT, #name)

typedef int (*open_fn)(const char *, int, ...);
typedef int (*openat_fn)(int, const char *, int, ...);
typedef int (*open2_fn)(const char *, int);
typedef int (*openat2_fn)(int, const char *, int);

#define DEFINE_OPEN(name)                                                                           \
  int name(const char *path, int flags, ...) {                                                      \
    va_list ap;                                                                                     \
    va_start(ap, flags);                                                                            \
    mode_t mode = mode_arg(flags, ap);                                                              \
    va_end(ap);                                                                                     \
    REAL(name, open_fn);                                                                            \
    return real_##name(path, readonly_flags(path, flags), mode);                                    \
  }
#define DEFINE_OPENAT(name)                                                                         \
  int name(int dirfd, const char *path, int flags, ...) {                                           \
    va_list ap;                                                                                     \
    va_start(ap, flags);                                                                            \
    mode_t mode = mode_arg(flags, ap);                                                              \
    va_end(ap);                                                                                     \
    REAL(name, openat_fn);                                                                          \
    return real_##name(dirfd, path, readonly_flags(path, flags), mode);                             \
  }

DEFINE_OPEN(open)
DEFINE_OPEN(open64)
DEFINE_OPENAT(openat)
DEFINE_OPENAT(openat64)

int __open_2(const char *path, int flags) {
  REAL(__open_2, open2_fn);
  return real___open_2(path, readonly_flags(path, flags));
}
int __open64_2(const char *path, int flags) {
  REAL(__open64_2, open2_fn);
  return real___open64_2(path, readonly_flags(path, flags));
}
int __openat_2(int dirfd, const char *path, int flags) {
  REAL(__openat_2, openat2_fn);
  return real___openat_2(dirfd, path, readonly_flags(path, flags));
}
int __openat64_2(int dirfd, const char *path, int flags) {
  REAL(__openat64_2, openat2_fn);
  return real___openat64_2(dirfd, path, readonly_flags(path, flags));
}
