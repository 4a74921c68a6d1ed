/* http_burst: fires CONNECTIONS identical POST requests at once and times each one.
 *
 * The cold-start benchmark needs arrival-to-response times of invocations that all arrive
 * together (and of a single one): the connections are opened first, untimed, so each figure
 * is the time from writing the request to having read the whole response, which is what a
 * client on a warm keep-alive connection sees. One line per request, in sending order:
 *   STATUS START LATENCY_US
 * where START is the X-Faasvisor-Start header ("cold", "warm", or "-" when absent) and
 * STATUS is 0 when the response never came (timeout, reset). Exit status 1 if any failed;
 * the body of each failed response goes to stderr.
 *
 *   http_burst [-c CONNECTIONS] [-t TIMEOUT_MS] [-b BODY] HOST PORT PATH */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <sys/epoll.h>

#include "http_client.h"

enum { kMaxConnections = 4096, kBufferBytes = 64 * 1024 };

struct conn {
  int fd;
  uint64_t sent_ns, done_ns;
  struct http_response resp; /* status 0 until a complete response was read */
  size_t have;     /* bytes in buf */
  char buf[kBufferBytes];
};

/* Reads what is available. Returns 1 when the connection is finished (complete or failed). */
static int on_readable(struct conn *c) {
  for (;;) {
    if (c->have == sizeof c->buf) return 1; /* response too large: count it as failed */
    ssize_t n = read(c->fd, c->buf + c->have, sizeof c->buf - c->have);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno == EAGAIN) return 0;
    if (n <= 0) return 1;
    c->have += (size_t)n;
    if (parse_response(c->buf, c->have, &c->resp)) {
      c->done_ns = now_ns();
      return 1;
    }
  }
}

/* Says on stderr why request i failed: the body of an error response names the cause. */
static void report_failure(long i, const struct conn *c) {
  if (c->resp.status == 0) {
    fprintf(stderr, "http_burst: request %ld: no complete response (%zu bytes read)\n", i, c->have);
    return;
  }
  const char *body = memmem(c->buf, c->have, "\r\n\r\n", 4);
  size_t len = body ? c->resp.total_bytes - (size_t)(body + 4 - c->buf) : 0;
  fprintf(stderr, "http_burst: request %ld: HTTP %d: %.*s\n", i, c->resp.status,
          (int)(len > 300 ? 300 : len), body ? body + 4 : "");
}

static int usage(void) {
  fprintf(stderr, "usage: http_burst [-c CONNECTIONS] [-t TIMEOUT_MS] [-b BODY] HOST PORT PATH\n");
  return 2;
}

int main(int argc, char **argv) {
  long connections = 1, timeout_ms = 30000;
  const char *body = "hello";
  int opt;
  while ((opt = getopt(argc, argv, "c:t:b:")) != -1) {
    switch (opt) {
      case 'c': connections = parse_arg("http_burst", optarg, 1, kMaxConnections, "connections"); break;
      case 't': timeout_ms = parse_arg("http_burst", optarg, 1, 3600000, "timeout"); break;
      case 'b': body = optarg; break;
      default: return usage();
    }
  }
  if (argc - optind != 3) return usage();
  struct sockaddr_in addr;
  parse_address("http_burst", argv[optind], argv[optind + 1], &addr);
  char request[4096];
  size_t request_len = format_request(request, sizeof request, argv[optind], argv[optind + 2], body);
  if (request_len == 0) {
    fprintf(stderr, "http_burst: request too large\n");
    return 2;
  }

  struct conn *conns = calloc((size_t)connections, sizeof *conns);
  int ep = epoll_create1(EPOLL_CLOEXEC);
  if (conns == NULL || ep < 0) {
    perror("http_burst: setup");
    return 1;
  }
  for (long i = 0; i < connections; ++i) {
    conns[i].fd = open_connection(&addr);
    if (conns[i].fd < 0) {
      perror("http_burst: connect");
      return 1;
    }
  }
  /* All connections exist before the first request goes out: only the requests are timed. */
  for (long i = 0; i < connections; ++i) {
    struct conn *c = &conns[i];
    c->sent_ns = now_ns();
    if (write(c->fd, request, request_len) != (ssize_t)request_len) {
      perror("http_burst: write");
      return 1;
    }
    fcntl(c->fd, F_SETFL, O_NONBLOCK);
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
    epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev);
  }

  long pending = connections;
  uint64_t deadline_ns = now_ns() + (uint64_t)timeout_ms * 1000000ull;
  struct epoll_event events[256];
  while (pending > 0) {
    uint64_t now = now_ns();
    if (now >= deadline_ns) break;
    int wait_ms = (int)((deadline_ns - now) / 1000000ull) + 1;
    int n = epoll_wait(ep, events, 256, wait_ms);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      perror("http_burst: epoll_wait");
      return 1;
    }
    for (int k = 0; k < n; ++k) {
      struct conn *c = events[k].data.ptr;
      if (on_readable(c)) {
        epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
        --pending;
      }
    }
  }

  int failed = 0;
  for (long i = 0; i < connections; ++i) {
    const struct conn *c = &conns[i];
    int status = c->resp.status;
    if (status == 0) failed = 1;
    double latency_us = status ? (double)(c->done_ns - c->sent_ns) / 1e3 : -1.0;
    printf("%d %s %.1f\n", status, c->resp.start[0] ? c->resp.start : "-", latency_us);
    if (status != 200) report_failure(i, c);
    close(c->fd);
  }
  free(conns);
  close(ep);
  return failed;
}
