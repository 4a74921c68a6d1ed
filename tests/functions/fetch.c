/* fetch: a test function for instance networking (docs/network.md). Static, so the same
 * binary runs as a process function and in a container rootfs. Per request:
 *
 *   ?url=http://A.B.C.D[:PORT]/PATH   GET it (HTTP/1.0, IPv4 literal) and answer with the
 *                                     upstream's body, its status in X-Upstream-Status;
 *                                     502 {"error": "connect: ECONNREFUSED"} and the like when
 *                                     it cannot (connect and read give up after ?timeout_ms,
 *                                     default 2000)
 *   ?mode=addr                        this instance's IPv4 addresses, "NAME ADDR" per line
 *   ?mode=resolv                      /etc/resolv.conf as the function sees it
 *   ?mode=conns&n=K&url=http://A.B.C.D:PORT/   opens K connections at once, holds them
 *                                     until all are up or ?timeout_ms passes, answers
 *                                     "connected C of K"
 *
 * Every instance also serves "fetch-listener" on 0.0.0.0:8080 (a child forked at init): a
 * second instance reaching for it tells whether instances can reach each other. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <ifaddrs.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "faasvisor/function.h"

#define MAX_BODY (4u * 1024u * 1024u)

static char g_buf[MAX_BODY + 65536];
static char g_err[512];
static char g_status[16];

static void serve_listener(int fd) {
  static const char reply[] = "HTTP/1.0 200 OK\r\nContent-Length: 15\r\n\r\nfetch-listener\n";
  for (;;) {
    int c = accept4(fd, NULL, NULL, SOCK_CLOEXEC);
    if (c < 0) continue;
    char req[1024];
    (void)read(c, req, sizeof req);
    (void)write(c, reply, sizeof reply - 1);
    close(c);
  }
}

int fv_init(void) {
  /* Listening before READY: the first request may already reach for it. */
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons(8080), .sin_addr.s_addr = htonl(INADDR_ANY)};
  if (fd < 0 || bind(fd, (struct sockaddr *)&addr, sizeof addr) < 0 || listen(fd, 16) < 0) return 1;
  pid_t pid = fork();
  if (pid == 0) {
    /* Not the protocol's streams: the listener must not hold them open. */
    int null = open("/dev/null", O_RDWR);
    if (null >= 0) {
      dup2(null, 0);
      dup2(null, 1);
    }
    serve_listener(fd);
  }
  close(fd);
  return pid < 0 ? 1 : 0;
}

static int fail(struct fv_response *resp, int status, const char *what, int err) {
  snprintf(g_err, sizeof g_err, "{\"error\":\"%s: %s\"}", what, err ? strerrorname_np(err) : "invalid");
  resp->status = status;
  fv_response_set_header(resp, "Content-Type", "application/json");
  resp->body = g_err;
  resp->body_len = strlen(g_err);
  return 0;
}

static long long now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Waits for `events` on fd until the deadline; 0 or -errno. */
static int wait_for(int fd, short events, long long deadline_ms) {
  for (;;) {
    long long left = deadline_ms - now_ms();
    if (left <= 0) return -ETIMEDOUT;
    struct pollfd p = {fd, events, 0};
    int n = poll(&p, 1, (int)left);
    if (n > 0) return 0;
    if (n < 0 && errno != EINTR) return -errno;
  }
}

static int fetch(const char *url, size_t url_len, int timeout_ms, struct fv_response *resp) {
  char text[1024];
  if (url_len >= sizeof text || url_len < 7 || memcmp(url, "http://", 7) != 0) return fail(resp, 400, "url", 0);
  memcpy(text, url + 7, url_len - 7);
  text[url_len - 7] = '\0';
  char *path = strchr(text, '/');
  char path_buf[900] = "/";
  if (path) {
    snprintf(path_buf, sizeof path_buf, "%s", path);
    *path = '\0';
  }
  int port = 80;
  char *colon = strchr(text, ':');
  if (colon) {
    *colon = '\0';
    port = atoi(colon + 1);
  }
  struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
  if (inet_pton(AF_INET, text, &addr.sin_addr) != 1) return fail(resp, 400, "url host (an IPv4 address)", 0);
  long long deadline = now_ms() + timeout_ms;
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return fail(resp, 502, "socket", errno);
  if (connect(fd, (struct sockaddr *)&addr, sizeof addr) < 0 && errno != EINPROGRESS) {
    int err = errno;
    close(fd);
    return fail(resp, 502, "connect", err);
  }
  int rc = wait_for(fd, POLLOUT, deadline);
  int err = 0;
  socklen_t len = sizeof err;
  if (rc == 0) getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len);
  if (rc < 0 || err != 0) {
    close(fd);
    return fail(resp, 502, "connect", rc < 0 ? -rc : err);
  }
  char request[1200];
  int n = snprintf(request, sizeof request, "GET %s HTTP/1.0\r\nHost: %s\r\nConnection: close\r\n\r\n", path_buf, text);
  if (send(fd, request, (size_t)n, MSG_NOSIGNAL) != n) {
    err = errno;
    close(fd);
    return fail(resp, 502, "send", err);
  }
  size_t got = 0;
  for (;;) {
    if (got == sizeof g_buf) break;
    ssize_t r = recv(fd, g_buf + got, sizeof g_buf - got, 0);
    if (r > 0) {
      got += (size_t)r;
      continue;
    }
    if (r == 0) break;
    if (errno == EAGAIN) {
      if ((rc = wait_for(fd, POLLIN, deadline)) < 0) {
        close(fd);
        return fail(resp, 502, "read", -rc);
      }
      continue;
    }
    if (errno == EINTR) continue;
    err = errno;
    close(fd);
    return fail(resp, 502, "read", err);
  }
  close(fd);
  char *body = memmem(g_buf, got, "\r\n\r\n", 4);
  if (got < 12 || memcmp(g_buf, "HTTP/", 5) != 0 || body == NULL) return fail(resp, 502, "upstream response", 0);
  snprintf(g_status, sizeof g_status, "%.3s", g_buf + 9);
  fv_response_set_header(resp, "X-Upstream-Status", g_status);
  resp->body = body + 4;
  resp->body_len = got - (size_t)(body + 4 - g_buf);
  return 0;
}

/* "http://A.B.C.D[:PORT]..." into addr; 0, or -1 if it is not one. */
static int parse_target(const char *url, size_t url_len, struct sockaddr_in *addr) {
  char text[64];
  if (url_len < 8 || memcmp(url, "http://", 7) != 0) return -1;
  size_t n = strcspn(url + 7, "/");
  if (n > url_len - 7) n = url_len - 7;
  if (n >= sizeof text) return -1;
  memcpy(text, url + 7, n);
  text[n] = '\0';
  char *colon = strchr(text, ':');
  addr->sin_family = AF_INET;
  addr->sin_port = htons(80);
  if (colon) {
    *colon = '\0';
    addr->sin_port = htons((uint16_t)atoi(colon + 1));
  }
  return inet_pton(AF_INET, text, &addr->sin_addr) == 1 ? 0 : -1;
}

static int connections(const char *url, size_t url_len, int count, int timeout_ms, struct fv_response *resp) {
  struct sockaddr_in addr = {0};
  if (parse_target(url, url_len, &addr) < 0 || count < 1 || count > 64) return fail(resp, 400, "url or n", 0);
  struct pollfd fds[64];
  for (int i = 0; i < count; ++i) {
    fds[i].fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    fds[i].events = POLLOUT;
    if (fds[i].fd < 0) {
      int err = errno;
      while (i-- > 0) close(fds[i].fd);
      return fail(resp, 500, "socket", err);
    }
    (void)connect(fds[i].fd, (struct sockaddr *)&addr, sizeof addr);
  }
  long long deadline = now_ms() + timeout_ms;
  int connected = 0, pending = count;
  while (pending > 0 && now_ms() < deadline) {
    if (poll(fds, (nfds_t)count, (int)(deadline - now_ms())) <= 0) break;
    for (int i = 0; i < count; ++i) {
      if (fds[i].fd < 0 || fds[i].revents == 0) continue;
      int err = 0;
      socklen_t len = sizeof err;
      getsockopt(fds[i].fd, SOL_SOCKET, SO_ERROR, &err, &len);
      if (err == 0) ++connected;
      fds[i].events = 0;
      fds[i].fd = -fds[i].fd - 1; /* done: poll skips negative fds */
      --pending;
    }
  }
  for (int i = 0; i < count; ++i) close(fds[i].fd < 0 ? -fds[i].fd - 1 : fds[i].fd);
  int n = snprintf(g_buf, sizeof g_buf, "connected %d of %d\n", connected, count);
  resp->body = g_buf;
  resp->body_len = (size_t)n;
  return 0;
}

static int addresses(struct fv_response *resp) {
  struct ifaddrs *list;
  if (getifaddrs(&list) < 0) return fail(resp, 500, "getifaddrs", errno);
  size_t n = 0;
  for (struct ifaddrs *i = list; i; i = i->ifa_next) {
    if (!i->ifa_addr || i->ifa_addr->sa_family != AF_INET) continue;
    char ip[INET_ADDRSTRLEN];
    inet_ntop(AF_INET, &((struct sockaddr_in *)i->ifa_addr)->sin_addr, ip, sizeof ip);
    n += (size_t)snprintf(g_buf + n, sizeof g_buf - n, "%s %s\n", i->ifa_name, ip);
  }
  freeifaddrs(list);
  resp->body = g_buf;
  resp->body_len = n;
  return 0;
}

static int read_resolv(struct fv_response *resp) {
  int fd = open("/etc/resolv.conf", O_RDONLY | O_CLOEXEC);
  if (fd < 0) return fail(resp, 404, "open /etc/resolv.conf", errno);
  ssize_t n = read(fd, g_buf, 65536);
  close(fd);
  if (n < 0) return fail(resp, 500, "read /etc/resolv.conf", errno);
  resp->body = g_buf;
  resp->body_len = (size_t)n;
  return 0;
}

int handle(const struct fv_request *req, struct fv_response *resp) {
  if (fv_query_is(req, "mode", "addr")) return addresses(resp);
  if (fv_query_is(req, "mode", "resolv")) return read_resolv(resp);
  size_t len = 0;
  const char *url = fv_query_get(req, "url", &len);
  if (url == NULL) return fail(resp, 400, "url", 0);
  int timeout_ms = 2000;
  size_t tlen = 0;
  const char *t = fv_query_get(req, "timeout_ms", &tlen);
  if (t != NULL && tlen > 0 && tlen < 8) {
    char tbuf[8];
    memcpy(tbuf, t, tlen);
    tbuf[tlen] = '\0';
    timeout_ms = atoi(tbuf);
  }
  size_t nlen = 0;
  const char *n = fv_query_get(req, "n", &nlen);
  if (fv_query_is(req, "mode", "conns")) return connections(url, len, n && nlen < 3 ? atoi(n) : 1, timeout_ms, resp);
  return fetch(url, len, timeout_ms, resp);
}
