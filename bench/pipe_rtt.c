/* pipe_rtt: the round trip of a small message between two processes over a pair of pipes.
 *
 * A warm invocation crosses two pipes (node -> instance, instance -> node) and wakes two
 * processes, so this is the floor under the node's own cost: the latency benchmark prints it
 * beside the echo function's. The parent writes SIZE bytes, the child reads them and writes
 * them back; each round trip is timed alone and p50/p99 are printed in microseconds.
 *
 *   pipe_rtt [-n ROUNDS] [-s SIZE_BYTES] [-w WARMUP_ROUNDS]
 * Output (one line): pipe_rtt rounds=N size=B p50_us=X p99_us=Y mean_us=Z max_us=W */
#define _GNU_SOURCE
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "bench_io.h"

enum { kMaxSizeBytes = 65536 };

static int write_all(int fd, const char *buf, size_t len) {
  while (len > 0) {
    ssize_t n = write(fd, buf, len);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return -1;
    buf += n;
    len -= (size_t)n;
  }
  return 0;
}

/* The child echoes until the parent closes its end. */
static void echo_loop(int in_fd, int out_fd, size_t size_bytes) {
  char buf[kMaxSizeBytes];
  while (read_exact(in_fd, buf, size_bytes) == 0) {
    if (write_all(out_fd, buf, size_bytes) < 0) break;
  }
  _exit(0);
}

static int cmp_u64(const void *a, const void *b) {
  uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
  return x < y ? -1 : x > y;
}

/* Nearest-rank percentile of a sorted array. */
static uint64_t percentile(const uint64_t *sorted, size_t n, double p) {
  size_t rank = (size_t)(p / 100.0 * (double)n + 0.999999);
  if (rank < 1) rank = 1;
  if (rank > n) rank = n;
  return sorted[rank - 1];
}

static long parse_arg(const char *s, long min, long max, const char *what) {
  char *end = NULL;
  long v = strtol(s, &end, 10);
  if (end == s || *end != '\0' || v < min || v > max) {
    fprintf(stderr, "pipe_rtt: bad %s '%s' (%ld..%ld)\n", what, s, min, max);
    exit(2);
  }
  return v;
}

int main(int argc, char **argv) {
  long rounds = 100000, size_bytes = 64, warmup_rounds = 2000;
  int opt;
  while ((opt = getopt(argc, argv, "n:s:w:")) != -1) {
    switch (opt) {
      case 'n': rounds = parse_arg(optarg, 1, 100000000, "rounds"); break;
      case 's': size_bytes = parse_arg(optarg, 1, kMaxSizeBytes, "size"); break;
      case 'w': warmup_rounds = parse_arg(optarg, 0, 100000000, "warmup"); break;
      default:
        fprintf(stderr, "usage: pipe_rtt [-n ROUNDS] [-s SIZE_BYTES] [-w WARMUP_ROUNDS]\n");
        return 2;
    }
  }
  int to_child[2], from_child[2];
  if (pipe(to_child) < 0 || pipe(from_child) < 0) {
    perror("pipe_rtt: pipe");
    return 1;
  }
  pid_t pid = fork();
  if (pid < 0) {
    perror("pipe_rtt: fork");
    return 1;
  }
  if (pid == 0) {
    close(to_child[1]);
    close(from_child[0]);
    echo_loop(to_child[0], from_child[1], (size_t)size_bytes);
  }
  close(to_child[0]);
  close(from_child[1]);

  uint64_t *rtt_ns = malloc((size_t)rounds * sizeof *rtt_ns);
  if (rtt_ns == NULL) {
    perror("pipe_rtt: malloc");
    return 1;
  }
  char buf[kMaxSizeBytes];
  memset(buf, 'x', (size_t)size_bytes);
  for (long i = -warmup_rounds; i < rounds; ++i) {
    uint64_t start_ns = now_ns();
    if (write_all(to_child[1], buf, (size_t)size_bytes) < 0 ||
        read_exact(from_child[0], buf, (size_t)size_bytes) < 0) {
      fprintf(stderr, "pipe_rtt: the echo child went away\n");
      return 1;
    }
    if (i >= 0) rtt_ns[i] = now_ns() - start_ns;
  }
  close(to_child[1]);
  waitpid(pid, NULL, 0);

  double sum_ns = 0;
  for (long i = 0; i < rounds; ++i) sum_ns += (double)rtt_ns[i];
  qsort(rtt_ns, (size_t)rounds, sizeof *rtt_ns, cmp_u64);
  printf("pipe_rtt rounds=%ld size=%ld p50_us=%.2f p99_us=%.2f mean_us=%.2f max_us=%.2f\n", rounds,
         size_bytes, (double)percentile(rtt_ns, (size_t)rounds, 50) / 1e3,
         (double)percentile(rtt_ns, (size_t)rounds, 99) / 1e3, sum_ns / (double)rounds / 1e3,
         (double)rtt_ns[rounds - 1] / 1e3);
  free(rtt_ns);
  return 0;
}
