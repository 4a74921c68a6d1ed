/* faasvisor-adapter: runs a function that does not speak the instance protocol, so that
 * functions built for OpenFaaS run unchanged (docs/modes.md).
 *
 *   faasvisor-adapter http PORT READY_PATH -- COMMAND [ARG]...
 *     of-watchdog's "http" mode: COMMAND is a long-lived HTTP server on 127.0.0.1:PORT
 *     inside the sandbox. READY is written only once the port accepts a connection (and,
 *     when READY_PATH is not "-", once GET READY_PATH answers 2xx), so no invocation races
 *     the server's start. Each REQUEST frame becomes one HTTP/1.1 request on a kept-alive
 *     loopback connection, the response becomes the RESPONSE frame. The server's stdout and
 *     stderr are the instance's log. If the server exits, so does the adapter (with its
 *     status), as of-watchdog does.
 *   faasvisor-adapter stdio -- COMMAND [ARG]...
 *     the classic watchdog (and of-watchdog's serializing/streaming forks): COMMAND runs
 *     once per request with the body on stdin and the classic watchdog's Http_* variables
 *     in its environment; its stdout is the response body (200, or 500 with "exit status
 *     N" before the output when it exits non-zero), its stderr goes to the log.
 *
 * The adapter is the process the backend starts (the sandbox's function, a container's
 * pid 1); its stdin/stdout carry protocol frames, stderr is the log. It is linked
 * statically: a container image need not have a libc for it. One invocation at a time
 * (the node never sends a second REQUEST before the RESPONSE), so plain blocking I/O. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "faasvisor/frame.h"
#include "../util/write_all.h"

/* The node's frame limit (pool/scheduler.h max_frame_bytes): a response must fit in it. */
#define MAX_PAYLOAD (16u << 20)
#define MAX_HEAD_BYTES (64u << 10) /* an upstream's status line and headers */
#define READY_POLL_NS 2000000L     /* how often the port is tried while the server starts */

extern char **environ;

static pid_t g_server = -1;  /* http mode: the long-lived server */
static pid_t g_child = -1;   /* stdio mode: the run of the current request */

static void die(const char *fmt, ...) __attribute__((noreturn, format(printf, 1, 2)));
static void die(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fputs("faasvisor-adapter: ", stderr);
  vfprintf(stderr, fmt, ap);
  fputc('\n', stderr);
  va_end(ap);
  if (g_server > 0) kill(g_server, SIGKILL);
  if (g_child > 0) kill(g_child, SIGKILL);
  _exit(2);
}

/* ---- buffers ---- */

struct buf {
  char *data;
  size_t len, cap;
};

static void buf_reserve(struct buf *b, size_t extra) {
  if (b->len + extra <= b->cap) return;
  size_t cap = b->cap ? b->cap : 4096;
  while (cap < b->len + extra) cap *= 2;
  char *p = realloc(b->data, cap);
  if (p == NULL) die("out of memory (%zu bytes)", cap);
  b->data = p;
  b->cap = cap;
}

static void buf_add(struct buf *b, const void *data, size_t len) {
  buf_reserve(b, len);
  memcpy(b->data + b->len, data, len);
  b->len += len;
}

static void buf_addf(struct buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void buf_addf(struct buf *b, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(NULL, 0, fmt, ap);
  va_end(ap);
  buf_reserve(b, (size_t)n + 1);
  va_start(ap, fmt);
  vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
  va_end(ap);
  b->len += (size_t)n;
}

/* ---- the protocol side ---- */

static volatile sig_atomic_t g_terminating;

/* 1 read exactly, 0 end of stream before any byte (or SIGTERM while waiting for one), -1 cut
 * short or failed. */
static int read_exact(int fd, void *data, size_t len) {
  char *p = data;
  size_t got = 0;
  while (got < len) {
    ssize_t n = read(fd, p + got, len - got);
    if (n < 0 && errno == EINTR && g_terminating && got == 0) return 0;  /* stop, as at end of input */
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return -1;
    if (n == 0) return got == 0 ? 0 : -1;
    got += (size_t)n;
  }
  return 1;
}

static void send_ready(const char *text) {
  uint8_t frame[FV_FRAME_HEADER_SIZE + 64];
  size_t len = strlen(text);
  fv_frame_header_write(frame, FV_FRAME_READY, (uint32_t)len);
  memcpy(frame + FV_FRAME_HEADER_SIZE, text, len);
  if (fv_write_all(1, frame, FV_FRAME_HEADER_SIZE + len) != 0) die("writing READY: %s", strerror(errno));
}

static void send_response(struct fv_response_view *view) {
  static struct buf out;
  size_t size = FV_FRAME_HEADER_SIZE + fv_response_payload_size(view);
  out.len = 0;
  buf_reserve(&out, size);
  long n = fv_response_encode((uint8_t *)out.data, out.cap, view);
  if (n < 0) die("encoding RESPONSE: %s", fv_frame_strerror((int)n));
  if (fv_write_all(1, out.data, (size_t)n) != 0) die("writing RESPONSE: %s", strerror(errno));
}

static struct fv_str str_of(const char *s) { return (struct fv_str){s, (uint32_t)strlen(s)}; }

/* An answer the adapter makes itself, marked as of-watchdog marks its own. */
static void send_error(int status, const char *text) {
  static struct fv_response_view view;
  view.status = (uint16_t)status;
  view.header_count = 2;
  view.headers[0] = (struct fv_header){str_of("Content-Type"), str_of("text/plain; charset=utf-8")};
  view.headers[1] = (struct fv_header){str_of("X-OpenFaaS-Internal"), str_of("of-watchdog")};
  view.body = str_of(text);
  send_response(&view);
}

/* Reads one frame; returns its type with the payload in `in`, or 0 at end of stream. */
static int read_frame(struct buf *in) {
  uint8_t header[FV_FRAME_HEADER_SIZE];
  int rc = read_exact(0, header, sizeof header);
  if (rc == 0) return 0;
  if (rc < 0) die("reading a frame header: %s", errno ? strerror(errno) : "cut short");
  struct fv_frame_header h;
  int prc = fv_frame_header_parse(header, sizeof header, MAX_PAYLOAD, &h);
  if (prc != FV_OK) die("bad frame from the node: %s", fv_frame_strerror(prc));
  in->len = 0;
  buf_reserve(in, h.length ? h.length : 1);
  if (h.length && read_exact(0, in->data, h.length) != 1) die("frame payload cut short");
  in->len = h.length;
  return h.type;
}

/* ---- children ---- */

static void on_term(int signo) {
  g_terminating = 1;
  if (g_server > 0) kill(g_server, signo);
  if (g_child > 0) kill(g_child, signo);
}

static void exit_like(int status) __attribute__((noreturn));
static void exit_like(int status) {
  if (WIFEXITED(status)) _exit(WEXITSTATUS(status));
  _exit(128 + WTERMSIG(status));
}

/* Reaps what has exited (orphans too: in a container the adapter is pid 1). Returns 1 and
 * the status once `pid` has exited. */
static int reap(pid_t pid, int *status, int flags) {
  for (;;) {
    int st = 0;
    pid_t done = waitpid(-1, &st, flags);
    if (done < 0 && errno == EINTR) continue;
    if (done <= 0) return 0;
    if (done == pid) {
      *status = st;
      return 1;
    }
  }
}

/* Orphans a command left (no pid of ours matches -1). */
static void reap_orphans(void) {
  int ignored;
  reap(-1, &ignored, WNOHANG);
}

/* fork + exec of argv with stdin from in_fd, stdout to out_fd, stderr to the adapter's. */
static pid_t start(char **argv, char **envp, int in_fd, int out_fd, int close_fd[2]) {
  pid_t pid = fork();
  if (pid < 0) die("fork: %s", strerror(errno));
  if (pid > 0) return pid;
  sigset_t none;
  sigemptyset(&none);
  sigprocmask(SIG_SETMASK, &none, NULL);
  signal(SIGPIPE, SIG_DFL);
  signal(SIGTERM, SIG_DFL);
  signal(SIGINT, SIG_DFL);
  if (dup2(in_fd, 0) < 0 || dup2(out_fd, 1) < 0) _exit(127);
  for (int i = 0; i < 2; ++i)
    if (close_fd[i] > 2) close(close_fd[i]);
  execvpe(argv[0], argv, envp);
  fprintf(stderr, "faasvisor-adapter: exec %s: %s\n", argv[0], strerror(errno));
  _exit(127);
}

/* ---- http mode ---- */

static int g_port;
static int g_conn = -1;  /* kept-alive connection to the server */

static int connect_server(void) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) die("socket: %s", strerror(errno));
  struct sockaddr_in addr;
  memset(&addr, 0, sizeof addr);
  addr.sin_family = AF_INET;
  addr.sin_port = htons((uint16_t)g_port);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, (struct sockaddr *)&addr, sizeof addr) < 0) {
    close(fd);
    return -1;
  }
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  return fd;
}

struct http_response {
  int status;
  struct buf head;   /* the header block, NUL-separated "name\0value\0" pairs */
  uint32_t header_count;
  struct buf body;
};

/* Bytes read from the server beyond what a parse step consumed. */
static struct buf g_in;
static size_t g_in_at;

static int fill(int fd) {
  if (g_in_at == g_in.len) g_in.len = g_in_at = 0;
  buf_reserve(&g_in, 65536);
  ssize_t n;
  do {
    n = read(fd, g_in.data + g_in.len, g_in.cap - g_in.len);
  } while (n < 0 && errno == EINTR);
  if (n > 0) g_in.len += (size_t)n;
  return (int)(n > 0 ? n : n == 0 ? 0 : -1);
}

/* A line ending in CRLF (or LF) from the server, without its end; NULL at end of stream. */
static char *read_line(int fd, size_t limit) {
  for (;;) {
    char *start = g_in.data + g_in_at;
    char *nl = memchr(start, '\n', g_in.len - g_in_at);
    if (nl != NULL) {
      size_t len = (size_t)(nl - start);
      if (len > 0 && start[len - 1] == '\r') start[len - 1] = '\0';
      *nl = '\0';
      g_in_at += len + 1;
      return start;
    }
    if (g_in.len - g_in_at > limit) return NULL;
    if (g_in_at > 0) { /* keep the partial line at the front */
      memmove(g_in.data, g_in.data + g_in_at, g_in.len - g_in_at);
      g_in.len -= g_in_at;
      g_in_at = 0;
    }
    if (fill(fd) <= 0) return NULL;
  }
}

static int read_body_bytes(int fd, struct buf *body, uint64_t len) {
  if (body->len + len > MAX_PAYLOAD) return -2;
  while (len > 0) {
    if (g_in_at == g_in.len && fill(fd) <= 0) return -1;
    size_t have = g_in.len - g_in_at;
    size_t take = have < len ? have : (size_t)len;
    buf_add(body, g_in.data + g_in_at, take);
    g_in_at += take;
    len -= take;
  }
  return 0;
}

static int hop_by_hop(const char *name) {
  static const char *const names[] = {"Connection", "Keep-Alive", "Transfer-Encoding", "Content-Length",
                                      "Upgrade", "Proxy-Connection", "TE", "Trailer"};
  for (size_t i = 0; i < sizeof names / sizeof names[0]; ++i)
    if (strcasecmp(name, names[i]) == 0) return 1;
  return 0;
}

/* Reads one response. 0 ok, -1 the connection broke (before anything if *started is 0),
 * -2 the response is larger than a frame may carry, -3 it is not HTTP. */
static int read_response(int fd, int head_only, struct http_response *r, int *keep, int *started) {
  r->head.len = r->body.len = 0;
  r->header_count = 0;
  *started = 0;
  char *line = read_line(fd, MAX_HEAD_BYTES);
  if (line == NULL) return -1;
  *started = 1;
  int major = 0, minor = 0;
  if (sscanf(line, "HTTP/%d.%d %d", &major, &minor, &r->status) != 3 || r->status < 100 || r->status > 599)
    return -3;
  /* An interim answer (100 Continue, 103 Early Hints): its headers, then the real one. */
  while (r->status >= 100 && r->status < 200 && r->status != 101) {
    do {
      line = read_line(fd, MAX_HEAD_BYTES);
      if (line == NULL) return -1;
    } while (*line != '\0');
    line = read_line(fd, MAX_HEAD_BYTES);
    if (line == NULL) return -1;
    if (sscanf(line, "HTTP/%d.%d %d", &major, &minor, &r->status) != 3 || r->status < 100 || r->status > 599)
      return -3;
  }
  *keep = major == 1 && minor >= 1;
  int64_t length = -1;
  int chunked = 0;
  size_t head_bytes = 0;
  for (;;) {
    line = read_line(fd, MAX_HEAD_BYTES);
    if (line == NULL) return -1;
    if (*line == '\0') break;
    head_bytes += strlen(line);
    if (head_bytes > MAX_HEAD_BYTES) return -3;
    char *colon = strchr(line, ':');
    if (colon == NULL) return -3;
    *colon = '\0';
    char *value = colon + 1;
    while (*value == ' ' || *value == '\t') ++value;
    size_t vlen = strlen(value);
    while (vlen > 0 && (value[vlen - 1] == ' ' || value[vlen - 1] == '\t')) value[--vlen] = '\0';
    if (strcasecmp(line, "Content-Length") == 0) length = strtoll(value, NULL, 10);
    else if (strcasecmp(line, "Transfer-Encoding") == 0 && strcasestr(value, "chunked")) chunked = 1;
    else if (strcasecmp(line, "Connection") == 0 && strcasestr(value, "close")) *keep = 0;
    else if (strcasecmp(line, "Connection") == 0 && strcasestr(value, "keep-alive")) *keep = 1;
    if (hop_by_hop(line)) continue;
    if (r->header_count == FV_FRAME_MAX_HEADERS) return -3;
    buf_add(&r->head, line, strlen(line) + 1);
    buf_add(&r->head, value, vlen + 1);
    r->header_count++;
  }
  if (head_only || r->status == 204 || r->status == 304 || (r->status >= 100 && r->status < 200)) return 0;
  if (chunked) {
    for (;;) {
      line = read_line(fd, 1024);
      if (line == NULL) return -1;
      uint64_t size = strtoull(line, NULL, 16);
      if (size == 0) break;
      int rc = read_body_bytes(fd, &r->body, size);
      if (rc < 0) return rc;
      line = read_line(fd, 1024);
      if (line == NULL) return -1;
    }
    do { /* trailers, up to the empty line */
      line = read_line(fd, MAX_HEAD_BYTES);
      if (line == NULL) return -1;
    } while (*line != '\0');
    return 0;
  }
  if (length >= 0) return read_body_bytes(fd, &r->body, (uint64_t)length);
  /* No length: the body runs to the end of the connection. */
  *keep = 0;
  for (;;) {
    if (g_in_at < g_in.len) {
      if (r->body.len + (g_in.len - g_in_at) > MAX_PAYLOAD) return -2;
      buf_add(&r->body, g_in.data + g_in_at, g_in.len - g_in_at);
      g_in_at = g_in.len;
    }
    int n = fill(fd);
    if (n == 0) return 0;
    if (n < 0) return -1;
  }
}

static void drop_connection(void) {
  if (g_conn >= 0) close(g_conn);
  g_conn = -1;
  g_in.len = g_in_at = 0;
}

/* One exchange with the server. Returns read_response's result, or -1 if no connection. */
static int exchange(const struct buf *request, int head_only, struct http_response *r) {
  for (int attempt = 0; attempt < 2; ++attempt) {
    int reused = g_conn >= 0;
    if (g_conn < 0 && (g_conn = connect_server()) < 0) return -1;
    int keep = 0, started = 0, rc = -1;
    if (fv_write_all(g_conn, request->data, request->len) == 0) rc = read_response(g_conn, head_only, r, &keep, &started);
    if (rc == 0 && keep) return 0;
    drop_connection();
    if (rc == 0) return 0;
    /* A kept-alive connection the server had closed meanwhile: once more on a new one. */
    if (!(rc == -1 && !started && reused)) return rc;
  }
  return -1;
}

static void http_check_server(void) {
  int status = 0;
  if (reap(g_server, &status, WNOHANG)) {
    fprintf(stderr, "faasvisor-adapter: the function's server exited (%s %d)\n",
            WIFEXITED(status) ? "status" : "signal", WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status));
    exit_like(status);
  }
}

static void http_wait_ready(const char *ready_path) {
  struct buf probe = {0};
  if (strcmp(ready_path, "-") != 0)
    buf_addf(&probe, "GET %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nUser-Agent: faasvisor-adapter\r\n\r\n", ready_path, g_port);
  static struct http_response r;
  for (;;) {
    http_check_server();
    if (g_terminating) _exit(143);
    if (probe.len == 0) {
      int fd = connect_server();
      if (fd >= 0) {
        g_conn = fd;
        return;
      }
    } else if (exchange(&probe, 0, &r) == 0 && r.status >= 200 && r.status < 300) {
      free(probe.data);
      return;
    }
    struct timespec ts = {0, READY_POLL_NS};
    nanosleep(&ts, NULL);
  }
}

static void http_serve(const uint8_t *payload, uint32_t len) {
  static struct fv_request_view in;
  static struct fv_response_view out;
  static struct http_response r;
  static struct buf request;
  int rc = fv_request_decode(payload, len, &in);
  if (rc != FV_OK) die("bad REQUEST: %s", fv_frame_strerror(rc));
  request.len = 0;
  buf_addf(&request, "%.*s %.*s%s%.*s HTTP/1.1\r\n", (int)in.method.len, in.method.ptr, (int)in.path.len,
           in.path.ptr, in.query.len ? "?" : "", (int)in.query.len, in.query.ptr);
  int have_host = 0;
  for (uint32_t i = 0; i < in.header_count; ++i) {
    struct fv_header *h = &in.headers[i];
    char name[128];
    if (h->name.len >= sizeof name) continue;
    memcpy(name, h->name.ptr, h->name.len);
    name[h->name.len] = '\0';
    if (hop_by_hop(name) || strcasecmp(name, "Expect") == 0) continue;
    have_host |= strcasecmp(name, "Host") == 0;
    buf_addf(&request, "%s: %.*s\r\n", name, (int)h->value.len, h->value.ptr);
  }
  if (!have_host) buf_addf(&request, "Host: 127.0.0.1:%d\r\n", g_port);
  buf_addf(&request, "Content-Length: %u\r\n\r\n", in.body.len);
  buf_add(&request, in.body.ptr, in.body.len);

  int head_only = in.method.len == 4 && memcmp(in.method.ptr, "HEAD", 4) == 0;
  rc = exchange(&request, head_only, &r);
  if (rc == -2 || rc == -3) {
    send_error(500, rc == -2 ? "faasvisor-adapter: the function's response is larger than 16 MiB\n"
                             : "faasvisor-adapter: the function's answer is not HTTP/1.x\n");
    return;
  }
  if (rc != 0) {
    fprintf(stderr, "faasvisor-adapter: upstream HTTP request error: %s\n", errno ? strerror(errno) : "connection closed");
    /* A server that died mid-request ends the instance (the node answers 502 and starts
     * another), as of-watchdog ends with its function; give its exit a moment to land. */
    for (int i = 0; i < 50; ++i) {
      http_check_server();
      struct timespec ts = {0, 2000000L};
      nanosleep(&ts, NULL);
    }
    send_error(500, "");
    return;
  }
  out.status = (uint16_t)r.status;
  out.header_count = r.header_count;
  const char *p = r.head.data;
  for (uint32_t i = 0; i < r.header_count; ++i) {
    const char *name = p;
    p += strlen(p) + 1;
    out.headers[i] = (struct fv_header){str_of(name), str_of(p)};
    p += strlen(p) + 1;
  }
  out.body = (struct fv_str){r.body.data, (uint32_t)r.body.len};
  if (fv_response_payload_size(&out) > MAX_PAYLOAD)
    send_error(500, "faasvisor-adapter: the function's response is larger than 16 MiB\n");
  else
    send_response(&out);
}

static int run_http(int port, const char *ready_path, char **argv) {
  g_port = port;
  /* The server's stdout is log, like its stderr: the protocol owns the adapter's stdout. */
  int devnull = open("/dev/null", O_RDONLY | O_CLOEXEC);
  if (devnull < 0) die("open /dev/null: %s", strerror(errno));
  int none[2] = {devnull, -1};
  g_server = start(argv, environ, devnull, 2, none);
  close(devnull);
  http_wait_ready(ready_path);
  send_ready("http");
  struct buf frame = {0};
  for (;;) {
    int type = read_frame(&frame);
    if (type == 0 || type == FV_FRAME_SHUTDOWN) break;
    if (type != FV_FRAME_REQUEST) die("unexpected frame type %d from the node", type);
    http_check_server();
    http_serve((const uint8_t *)frame.data, (uint32_t)frame.len);
  }
  /* The node closed our input: stop the server and end as it does. */
  drop_connection();
  kill(g_server, SIGTERM);
  int status = 0;
  if (!reap(g_server, &status, 0)) return 0;
  return WIFEXITED(status) ? WEXITSTATUS(status) : 0;
}

/* ---- stdio mode ---- */

/* "x-call-id" -> "X-Call-Id" (Go's canonical header form, which the classic watchdog's
 * Http_* names are made from), then '-' -> '_'. */
static void cgi_name(char *out, size_t cap, struct fv_str name) {
  size_t n = 0;
  int up = 1;
  for (uint32_t i = 0; i < name.len && n + 1 < cap; ++i) {
    char c = name.ptr[i];
    if (c == '-') {
      out[n++] = '_';
      up = 1;
      continue;
    }
    out[n++] = up ? (char)((c >= 'a' && c <= 'z') ? c - 32 : c) : (char)((c >= 'A' && c <= 'Z') ? c + 32 : c);
    up = 0;
  }
  out[n] = '\0';
}

static const char *header_value(const struct fv_request_view *in, const char *name, uint32_t *len) {
  for (uint32_t i = 0; i < in->header_count; ++i) {
    const struct fv_header *h = &in->headers[i];
    if (h->name.len == strlen(name) && strncasecmp(h->name.ptr, name, h->name.len) == 0) {
      *len = h->value.len;
      return h->value.ptr;
    }
  }
  return NULL;
}

static char *dup_printf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static char *dup_printf(const char *fmt, ...) {
  char *out = NULL;
  va_list ap;
  va_start(ap, fmt);
  if (vasprintf(&out, fmt, ap) < 0) die("out of memory");
  va_end(ap);
  return out;
}

/* The child's environment: ours (the function's), then the classic watchdog's Http_*
 * variables for this request unless cgi_headers=false. Freed by the caller. */
static char **stdio_environment(const struct fv_request_view *in) {
  size_t own = 0;
  while (environ[own]) ++own;
  char **envp = calloc(own + in->header_count + 8, sizeof *envp);
  if (envp == NULL) die("out of memory");
  size_t n = 0;
  for (size_t i = 0; i < own; ++i) envp[n++] = strdup(environ[i]);
  const char *cgi = getenv("cgi_headers");
  if (cgi != NULL && strcmp(cgi, "true") != 0 && strcmp(cgi, "1") != 0) return envp;
  for (uint32_t i = 0; i < in->header_count; ++i) {
    char name[160];
    cgi_name(name, sizeof name, in->headers[i].name);
    int dup = 0; /* the first value only, as Go's Header.Get */
    for (uint32_t j = 0; j < i && !dup; ++j)
      dup = in->headers[j].name.len == in->headers[i].name.len &&
            strncasecmp(in->headers[j].name.ptr, in->headers[i].name.ptr, in->headers[i].name.len) == 0;
    if (!dup) envp[n++] = dup_printf("Http_%s=%.*s", name, (int)in->headers[i].value.len, in->headers[i].value.ptr);
  }
  envp[n++] = dup_printf("Http_Method=%.*s", (int)in->method.len, in->method.ptr);
  envp[n++] = dup_printf("Http_ContentLength=%u", in->body.len);
  envp[n++] = dup_printf("Http_Content_Length=%u", in->body.len);
  if (in->query.len) envp[n++] = dup_printf("Http_Query=%.*s", (int)in->query.len, in->query.ptr);
  if (in->path.len) envp[n++] = dup_printf("Http_Path=%.*s", (int)in->path.len, in->path.ptr);
  uint32_t host_len = 0;
  const char *host = header_value(in, "Host", &host_len);
  if (host != NULL && host_len) envp[n++] = dup_printf("Http_Host=%.*s", (int)host_len, host);
  return envp;
}

/* Runs the command once: body in, stdout collected, stderr straight to the log. Returns the
 * wait status, or -1 (with out->len > MAX_PAYLOAD) if the output grew too large. */
static int run_once(char **argv, char **envp, struct fv_str body, struct buf *out) {
  int in_pipe[2], out_pipe[2];
  if (pipe2(in_pipe, O_CLOEXEC) < 0 || pipe2(out_pipe, O_CLOEXEC) < 0) die("pipe2: %s", strerror(errno));
  int close_fds[2] = {in_pipe[1], out_pipe[0]};
  g_child = start(argv, envp, in_pipe[0], out_pipe[1], close_fds);
  close(in_pipe[0]);
  close(out_pipe[1]);
  fcntl(in_pipe[1], F_SETFL, O_NONBLOCK);
  size_t sent = 0;
  int in_fd = in_pipe[1], too_large = 0;
  if (body.len == 0) {
    close(in_fd);
    in_fd = -1;
  }
  /* Write the body while reading the output: a command that answers before it has read all
   * its input must not deadlock against us. */
  for (;;) {
    struct pollfd fds[2] = {{out_pipe[0], POLLIN, 0}, {in_fd, POLLOUT, 0}};
    if (poll(fds, in_fd >= 0 ? 2 : 1, -1) < 0) {
      if (errno == EINTR) continue;
      die("poll: %s", strerror(errno));
    }
    if (in_fd >= 0 && (fds[1].revents & (POLLOUT | POLLERR | POLLHUP))) {
      ssize_t n = write(in_fd, body.ptr + sent, body.len - sent);
      if (n > 0) sent += (size_t)n;
      if ((n < 0 && errno != EAGAIN && errno != EINTR) || sent == body.len) {
        close(in_fd); /* EPIPE: the command did not want the rest */
        in_fd = -1;
      }
    }
    if (fds[0].revents & (POLLIN | POLLHUP | POLLERR)) {
      buf_reserve(out, 65536);
      ssize_t n = read(out_pipe[0], out->data + out->len, out->cap - out->len);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) break;
      out->len += (size_t)n;
      if (out->len > MAX_PAYLOAD) {
        too_large = 1;
        kill(g_child, SIGKILL);
        break;
      }
    }
  }
  if (in_fd >= 0) close(in_fd);
  close(out_pipe[0]);
  int status = 0;
  if (!reap(g_child, &status, 0)) die("wait for the function: %s", strerror(errno));
  g_child = -1;
  return too_large ? -1 : status;
}

static void stdio_serve(char **argv, const uint8_t *payload, uint32_t len) {
  static struct fv_request_view in;
  static struct fv_response_view view;
  static struct buf out, body;
  int rc = fv_request_decode(payload, len, &in);
  if (rc != FV_OK) die("bad REQUEST: %s", fv_frame_strerror(rc));
  char **envp = stdio_environment(&in);
  out.len = 0;
  int status = run_once(argv, envp, in.body, &out);
  for (char **e = envp; *e; ++e) free(*e);
  free(envp);
  if (status < 0) {
    send_error(500, "faasvisor-adapter: the function's output is larger than 16 MiB\n");
    return;
  }
  view.header_count = 0;
  if (WIFEXITED(status) && WEXITSTATUS(status) == 0) {
    view.status = 200;
    view.body = (struct fv_str){out.data, (uint32_t)out.len};
  } else {
    /* As the classic watchdog: Go's exec error text, a newline, then what was written. */
    view.status = 500;
    body.len = 0;
    if (WIFEXITED(status)) buf_addf(&body, "exit status %d\n", WEXITSTATUS(status));
    else buf_addf(&body, "signal: %s\n", strsignal(WTERMSIG(status)));
    buf_add(&body, out.data, out.len);
    view.body = (struct fv_str){body.data, (uint32_t)body.len};
  }
  /* Content-Type: the content_type variable, else the caller's, as the classic watchdog. */
  uint32_t type_len = 0;
  const char *fixed = getenv("content_type");
  const char *type = fixed && *fixed ? fixed : header_value(&in, "Content-Type", &type_len);
  if (type == fixed && fixed) type_len = (uint32_t)strlen(fixed);
  if (type != NULL && view.status == 200)
    view.headers[view.header_count++] = (struct fv_header){str_of("Content-Type"), (struct fv_str){type, type_len}};
  if (fv_response_payload_size(&view) > MAX_PAYLOAD)
    send_error(500, "faasvisor-adapter: the function's output is larger than 16 MiB\n");
  else
    send_response(&view);
}

static int run_stdio(char **argv) {
  send_ready("stdio");
  struct buf frame = {0};
  for (;;) {
    int type = read_frame(&frame);
    if (type == 0 || type == FV_FRAME_SHUTDOWN || g_terminating) break;
    if (type != FV_FRAME_REQUEST) die("unexpected frame type %d from the node", type);
    stdio_serve(argv, (const uint8_t *)frame.data, (uint32_t)frame.len);
    reap_orphans();
  }
  return 0;
}

int main(int argc, char **argv) {
  /* Its own copies of the protocol streams must not reach the commands it starts. */
  fcntl(0, F_SETFD, FD_CLOEXEC);
  fcntl(1, F_SETFD, FD_CLOEXEC);
  signal(SIGPIPE, SIG_IGN);
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_term;
  sigaction(SIGTERM, &sa, NULL);
  sigaction(SIGINT, &sa, NULL);
  int sep = 1;
  while (sep < argc && strcmp(argv[sep], "--") != 0) ++sep;
  if (sep + 1 >= argc) die("usage: faasvisor-adapter http PORT READY_PATH|- -- COMMAND... | stdio -- COMMAND...");
  char **command = argv + sep + 1;
  if (strcmp(argv[1], "http") == 0 && sep == 4) {
    int port = atoi(argv[2]);
    if (port < 1 || port > 65535) die("bad port '%s'", argv[2]);
    return run_http(port, argv[3], command);
  }
  if (strcmp(argv[1], "stdio") == 0 && sep == 2) return run_stdio(command);
  die("unknown mode '%s'", argv[1]);
}
