/* Small helpers the C benchmarks share: a monotonic clock in nanoseconds and whole-buffer
 * reads on a blocking descriptor. Header-only: each benchmark is one translation unit. */
#ifndef FAASVISOR_BENCH_IO_H
#define FAASVISOR_BENCH_IO_H

#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>
#include <unistd.h>

static inline uint64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* Returns 0 when all len bytes arrived, -1 on end of file or error. */
static inline int read_exact(int fd, void *buf, size_t len) {
  char *p = (char *)buf;
  while (len > 0) {
    ssize_t n = read(fd, p, len);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return -1;
    p += n;
    len -= (size_t)n;
  }
  return 0;
}

#endif
