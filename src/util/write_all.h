/* Writes all of a buffer to a descriptor, through short writes and EINTR: one copy for the
 * small C programs that run inside sandboxes and guests (faasvisor-adapter, faasvisor-vminit,
 * faasvisor-stem). They link statically and include nothing of the node, so this is a header
 * of its own, static inline, C and C++. Blocking descriptors only: a short write to an
 * O_NONBLOCK one that fills fails with EAGAIN rather than waiting. */
#ifndef FAASVISOR_UTIL_WRITE_ALL_H
#define FAASVISOR_UTIL_WRITE_ALL_H

#include <errno.h>
#include <stddef.h>
#include <unistd.h>

/* 0 when all `len` bytes were written; -1 with errno set (EIO for a write of 0 bytes). */
static inline int fv_write_all(int fd, const void *data, size_t len) {
  const char *p = (const char *)data;
  while (len > 0) {
    ssize_t n = write(fd, p, len);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return -1;
    if (n == 0) {
      errno = EIO;
      return -1;
    }
    p += n;
    len -= (size_t)n;
  }
  return 0;
}

#endif
