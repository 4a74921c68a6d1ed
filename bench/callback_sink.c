/* callback_sink: the callback receiver of bench/async. An epoll HTTP/1.1 server on
 * 127.0.0.1 that answers every request "200, Connection: close" and notes, per request, the
 * X-Call-Id header and the CLOCK_MONOTONIC time its whole body had arrived. The benchmark
 * reads those against its own send times (the same clock) for end-to-end latency.
 *
 *   callback_sink [-n MAX_RECORDS]
 * Prints "port N" once listening; on SIGTERM or SIGINT prints one "CALL_ID NS" line per
 * request received (up to MAX_RECORDS, default 4,000,000) and exits. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_REQUEST (8u << 20)
#define MAX_ID 128

struct conn {
  int fd;
  char *buf;
  size_t len, cap;
};

struct record {
  char id[MAX_ID];
  unsigned long long ns;
};

static struct record *records;
static size_t n_records, max_records = 4000000;

static unsigned long long now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (unsigned long long)ts.tv_sec * 1000000000ull + (unsigned long long)ts.tv_nsec;
}

/* The value of header `name` in a request head, copied into out (empty if absent). */
static void header_value(const char *head, size_t head_len, const char *name, char *out, size_t out_len) {
  size_t name_len = strlen(name);
  out[0] = '\0';
  for (const char *p = head; p < head + head_len;) {
    const char *eol = memmem(p, (size_t)(head + head_len - p), "\r\n", 2);
    if (eol == NULL) break;
    if ((size_t)(eol - p) > name_len && strncasecmp(p, name, name_len) == 0 && p[name_len] == ':') {
      const char *v = p + name_len + 1;
      while (v < eol && (*v == ' ' || *v == '\t')) ++v;
      size_t n = (size_t)(eol - v) < out_len - 1 ? (size_t)(eol - v) : out_len - 1;
      memcpy(out, v, n);
      out[n] = '\0';
      return;
    }
    p = eol + 2;
  }
}

/* 1: a whole request is in (recorded and answered); 0: need more; -1: drop the connection. */
static int handle(struct conn *c) {
  char *end = memmem(c->buf, c->len, "\r\n\r\n", 4);
  if (end == NULL) return c->len >= MAX_REQUEST ? -1 : 0;
  size_t head_len = (size_t)(end - c->buf) + 2;
  char length[32];
  header_value(c->buf, head_len, "Content-Length", length, sizeof length);
  size_t body = (size_t)strtoull(length, NULL, 10);
  if (c->len < head_len + 2 + body) return c->len >= MAX_REQUEST ? -1 : 0;
  unsigned long long t = now_ns();
  if (n_records < max_records) {
    header_value(c->buf, head_len, "X-Call-Id", records[n_records].id, MAX_ID);
    records[n_records++].ns = t;
  }
  static const char reply[] = "HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
  ssize_t w = send(c->fd, reply, sizeof reply - 1, MSG_NOSIGNAL | MSG_DONTWAIT);
  (void)w;  /* a fresh socket's send buffer takes it; the peer closes after reading */
  return 1;
}

int main(int argc, char **argv) {
  for (int i = 1; i < argc; ++i) {
    if (strcmp(argv[i], "-n") == 0 && i + 1 < argc) max_records = strtoull(argv[++i], NULL, 10);
    else {
      fprintf(stderr, "usage: callback_sink [-n MAX_RECORDS]\n");
      return 2;
    }
  }
  records = calloc(max_records ? max_records : 1, sizeof *records);
  int lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  int one = 1;
  setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  struct sockaddr_in addr = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  socklen_t alen = sizeof addr;
  if (records == NULL || bind(lfd, (struct sockaddr *)&addr, sizeof addr) != 0 || listen(lfd, 4096) != 0 ||
      getsockname(lfd, (struct sockaddr *)&addr, &alen) != 0) {
    perror("callback_sink");
    return 1;
  }
  sigset_t mask;
  sigemptyset(&mask);
  sigaddset(&mask, SIGTERM);
  sigaddset(&mask, SIGINT);
  sigprocmask(SIG_BLOCK, &mask, NULL);
  int sfd = signalfd(-1, &mask, SFD_CLOEXEC);
  int ep = epoll_create1(EPOLL_CLOEXEC);
  struct epoll_event ev = {.events = EPOLLIN, .data.ptr = NULL};
  epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &ev);
  struct conn sig_marker;
  ev.data.ptr = &sig_marker;
  epoll_ctl(ep, EPOLL_CTL_ADD, sfd, &ev);
  printf("port %d\n", ntohs(addr.sin_port));
  fflush(stdout);

  struct epoll_event events[256];
  for (;;) {
    int n = epoll_wait(ep, events, 256, -1);
    if (n < 0 && errno == EINTR) continue;
    for (int i = 0; i < n; ++i) {
      struct conn *c = events[i].data.ptr;
      if (c == &sig_marker) {
        for (size_t r = 0; r < n_records; ++r) printf("%s %llu\n", records[r].id[0] ? records[r].id : "-", records[r].ns);
        fflush(stdout);
        return 0;
      }
      if (c == NULL) {
        int fd;
        while ((fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC)) >= 0) {
          struct conn *nc = calloc(1, sizeof *nc);
          nc->fd = fd;
          struct epoll_event cev = {.events = EPOLLIN, .data.ptr = nc};
          epoll_ctl(ep, EPOLL_CTL_ADD, fd, &cev);
        }
        continue;
      }
      int verdict = 0;
      for (;;) {
        if (c->cap - c->len < 4096) {
          c->cap = c->cap ? c->cap * 2 : 8192;
          c->buf = realloc(c->buf, c->cap);
        }
        ssize_t got = recv(c->fd, c->buf + c->len, c->cap - c->len, 0);
        if (got > 0) {
          c->len += (size_t)got;
          continue;
        }
        if (got < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
        verdict = handle(c) == 1 ? 1 : -1;  /* closed or failed: what came whole counts */
        break;
      }
      if (verdict == 0) verdict = handle(c);
      if (verdict != 0) {
        close(c->fd);  /* epoll forgets a closed fd */
        free(c->buf);
        free(c);
      }
    }
  }
}
