/* http_rtt: request latency at one connection, one request at a time, every one timed.
 *
 * The latency benchmark's client: a keep-alive connection sends the same small POST over and
 * over for DURATION seconds (after a warm-up) and records each round trip, so the percentiles
 * come from every request rather than from a load generator's sampling.
 *
 *   http_rtt [-d DURATION_S] [-w WARMUP_REQUESTS] [-b BODY] HOST PORT PATH
 * Output (one line):
 *   http_rtt requests=N errors=E p50_us=.. p90_us=.. p99_us=.. p999_us=.. mean_us=.. max_us=..
 * A non-2xx status counts as an error; a broken connection ends the run (exit status 1). */
#define _GNU_SOURCE
#include <errno.h>

#include "http_client.h"

enum { kBufferBytes = 64 * 1024 };

/* Sends one request and reads its response; returns the status, or 0 on a broken connection. */
static int round_trip(int fd, const char *request, size_t request_len, char *buf) {
  if (write(fd, request, request_len) != (ssize_t)request_len) return 0;
  size_t have = 0;
  struct http_response resp;
  while (!parse_response(buf, have, &resp)) {
    if (have == kBufferBytes) return 0;
    ssize_t n = read(fd, buf + have, kBufferBytes - have);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return 0;
    have += (size_t)n;
  }
  /* One request in flight, so nothing may follow the response. */
  return have == resp.total_bytes ? resp.status : 0;
}

static int usage(void) {
  fprintf(stderr, "usage: http_rtt [-d DURATION_S] [-w WARMUP_REQUESTS] [-b BODY] HOST PORT PATH\n");
  return 2;
}

int main(int argc, char **argv) {
  long duration_s = 5, warmup = 2000;
  const char *body = "hello, faasvisor";
  int opt;
  while ((opt = getopt(argc, argv, "d:w:b:")) != -1) {
    switch (opt) {
      case 'd': duration_s = parse_arg("http_rtt", optarg, 1, 3600, "duration"); break;
      case 'w': warmup = parse_arg("http_rtt", optarg, 0, 10000000, "warm-up"); break;
      case 'b': body = optarg; break;
      default: return usage();
    }
  }
  if (argc - optind != 3) return usage();
  struct sockaddr_in addr;
  parse_address("http_rtt", argv[optind], argv[optind + 1], &addr);
  char request[4096];
  size_t request_len = format_request(request, sizeof request, argv[optind], argv[optind + 2], body);
  if (request_len == 0) {
    fprintf(stderr, "http_rtt: request too large\n");
    return 2;
  }
  int fd = open_connection(&addr);
  if (fd < 0) {
    perror("http_rtt: connect");
    return 1;
  }
  static char buf[kBufferBytes];
  for (long i = 0; i < warmup; ++i) {
    if (round_trip(fd, request, request_len, buf) == 0) {
      fprintf(stderr, "http_rtt: connection broken during warm-up\n");
      return 1;
    }
  }

  size_t cap = 1 << 20, n = 0;
  uint64_t *rtt_ns = malloc(cap * sizeof *rtt_ns);
  long errors = 0;
  int broken = 0;
  uint64_t end_ns = now_ns() + (uint64_t)duration_s * 1000000000ull;
  for (uint64_t start_ns = now_ns(); start_ns < end_ns && rtt_ns != NULL; start_ns = now_ns()) {
    int status = round_trip(fd, request, request_len, buf);
    uint64_t done_ns = now_ns();
    if (status == 0) {
      broken = 1;
      break;
    }
    if (status / 100 != 2) ++errors;
    if (n == cap) {
      cap *= 2;
      uint64_t *grown = realloc(rtt_ns, cap * sizeof *rtt_ns);
      if (grown == NULL) break;
      rtt_ns = grown;
    }
    rtt_ns[n++] = done_ns - start_ns;
  }
  close(fd);
  if (rtt_ns == NULL || n == 0) {
    fprintf(stderr, "http_rtt: no request completed%s\n", broken ? " (connection broken)" : "");
    return 1;
  }
  double sum_ns = 0;
  for (size_t i = 0; i < n; ++i) sum_ns += (double)rtt_ns[i];
  qsort(rtt_ns, n, sizeof *rtt_ns, cmp_u64);
  printf("http_rtt requests=%zu errors=%ld p50_us=%.1f p90_us=%.1f p99_us=%.1f p999_us=%.1f "
         "mean_us=%.1f max_us=%.1f\n",
         n, errors, (double)percentile_sorted(rtt_ns, n, 50) / 1e3,
         (double)percentile_sorted(rtt_ns, n, 90) / 1e3,
         (double)percentile_sorted(rtt_ns, n, 99) / 1e3,
         (double)percentile_sorted(rtt_ns, n, 99.9) / 1e3, sum_ns / (double)n / 1e3,
         (double)rtt_ns[n - 1] / 1e3);
  free(rtt_ns);
  if (broken) fprintf(stderr, "http_rtt: connection broken after %zu requests\n", n);
  return broken;
}
