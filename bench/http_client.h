/* The little HTTP/1.1 client the C benchmark helpers share (http_burst, http_rtt).
 *
 * Enough for timing a node and nginx on loopback: IPv4, one POST shape, responses with a
 * Content-Length (both servers always send one). Header-only, functions are static: each
 * helper is one translation unit. */
#ifndef FAASVISOR_BENCH_HTTP_CLIENT_H
#define FAASVISOR_BENCH_HTTP_CLIENT_H

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

struct http_response {
  int status;           /* from the status line; 0 if it is not HTTP/1.x */
  size_t total_bytes;   /* head + body */
  char start[8];        /* X-Faasvisor-Start value, "" when absent */
};

static inline uint64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static inline long parse_arg(const char *prog, const char *s, long min, long max, const char *what) {
  char *end = NULL;
  long v = strtol(s, &end, 10);
  if (end == s || *end != '\0' || v < min || v > max) {
    fprintf(stderr, "%s: bad %s '%s' (%ld..%ld)\n", prog, what, s, min, max);
    exit(2);
  }
  return v;
}

/* Fills addr from HOST and PORT arguments; exits on bad input. */
static inline void parse_address(const char *prog, const char *host, const char *port,
                                 struct sockaddr_in *addr) {
  memset(addr, 0, sizeof *addr);
  addr->sin_family = AF_INET;
  addr->sin_port = htons((uint16_t)parse_arg(prog, port, 1, 65535, "port"));
  if (inet_pton(AF_INET, host, &addr->sin_addr) != 1) {
    fprintf(stderr, "%s: HOST must be an IPv4 address\n", prog);
    exit(2);
  }
}

/* A blocking, connected socket with Nagle off (requests are single small writes), or -1. */
static inline int open_connection(const struct sockaddr_in *addr) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  if (connect(fd, (const struct sockaddr *)addr, sizeof *addr) < 0) {
    close(fd);
    return -1;
  }
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  return fd;
}

/* Writes the POST request into out; returns its length, or 0 if it does not fit. */
static inline size_t format_request(char *out, size_t cap, const char *host, const char *path,
                                    const char *body) {
  int n = snprintf(out, cap,
                   "POST %s HTTP/1.1\r\nHost: %s\r\nContent-Type: text/plain\r\n"
                   "Content-Length: %zu\r\n\r\n%s",
                   path, host, strlen(body), body);
  return n > 0 && (size_t)n < cap ? (size_t)n : 0;
}

/* Value of header NAME in the header block [head, head_end), or NULL. Sets *len. */
static inline const char *find_header(const char *head, const char *head_end, const char *name,
                                      size_t *len) {
  size_t name_len = strlen(name);
  const char *line = memchr(head, '\n', (size_t)(head_end - head)); /* skip the status line */
  while (line != NULL && line + 1 < head_end) {
    line += 1;
    const char *eol = memchr(line, '\r', (size_t)(head_end - line));
    if (eol == NULL) eol = head_end;
    if ((size_t)(eol - line) > name_len && line[name_len] == ':' &&
        strncasecmp(line, name, name_len) == 0) {
      const char *v = line + name_len + 1;
      while (v < eol && (*v == ' ' || *v == '\t')) ++v;
      *len = (size_t)(eol - v);
      return v;
    }
    line = memchr(eol, '\n', (size_t)(head_end - eol));
  }
  return NULL;
}

/* Returns 1 and fills *out when buf holds a whole response, 0 when more bytes are needed. */
static inline int parse_response(const char *buf, size_t have, struct http_response *out) {
  const char *head_end = memmem(buf, have, "\r\n\r\n", 4);
  if (head_end == NULL) return 0;
  size_t head_bytes = (size_t)(head_end - buf) + 4;
  size_t len = 0;
  const char *cl = find_header(buf, head_end, "Content-Length", &len);
  size_t body_bytes = cl != NULL ? (size_t)strtoull(cl, NULL, 10) : 0;
  if (have < head_bytes + body_bytes) return 0;
  out->total_bytes = head_bytes + body_bytes;
  out->status = (have > 12 && memcmp(buf, "HTTP/1.", 7) == 0) ? atoi(buf + 9) : 0;
  out->start[0] = '\0';
  const char *start = find_header(buf, head_end, "X-Faasvisor-Start", &len);
  if (start != NULL && len < sizeof out->start) {
    memcpy(out->start, start, len);
    out->start[len] = '\0';
  }
  return 1;
}

static inline int cmp_u64(const void *a, const void *b) {
  uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
  return x < y ? -1 : x > y;
}

/* Nearest-rank percentile (p in 0..100) of a sorted array of n > 0 values. */
static inline uint64_t percentile_sorted(const uint64_t *sorted, size_t n, double p) {
  size_t rank = (size_t)(p / 100.0 * (double)n + 0.999999);
  if (rank < 1) rank = 1;
  if (rank > n) rank = n;
  return sorted[rank - 1];
}

#endif
