/* main() for C/C++ functions: the instance side of docs/protocol.md.
 *
 * The instance serves one invocation at a time, so the loop is plain blocking I/O: read a
 * frame, call handle(), write one RESPONSE. All I/O goes through read_full()/write_full()
 * so a unikernel build can swap the transport (a serial port instead of fd 0 / fd 1). */
#include "faasvisor/function.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define FV_EXIT_PROTOCOL 2
#define FV_READY_TEXT "c"

static const char k_function_failed[] = "{\"error\":\"function failed\"}";
static const char k_bad_status[] = "{\"error\":\"function returned a status outside 100..599\"}";
static const char k_bad_headers[] = "{\"error\":\"function returned too many headers\"}";
static const char k_too_large[] = "{\"error\":\"function response too large\"}";

/* ---- transport ---- */

/* Reads until len bytes or end of stream. Returns the bytes read (< len only at end of
 * stream) or -1 on an I/O error. */
static long read_full(void *buf, size_t len) {
  size_t done = 0;
  while (done < len) {
    ssize_t n = read(STDIN_FILENO, (char *)buf + done, len - done);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return -1;
    if (n == 0) break;
    done += (size_t)n;
  }
  return (long)done;
}

/* Writes all len bytes. Returns 0, or -1 on an I/O error (EPIPE once the node is gone:
 * SIGPIPE is ignored so that is an error, not a silent death). */
static int write_full(const void *buf, size_t len) {
  size_t done = 0;
  while (done < len) {
    ssize_t n = write(STDOUT_FILENO, (const char *)buf + done, len - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return -1;
    done += (size_t)n;
  }
  return 0;
}

/* ---- failure exits ---- */

static void die_protocol(const char *what) {
  fprintf(stderr, "faasvisor function: protocol error: %s\n", what);
  exit(FV_EXIT_PROTOCOL);
}

static void die_io(const char *what) {
  fprintf(stderr, "faasvisor function: %s: %s\n", what, strerror(errno));
  exit(FV_EXIT_PROTOCOL);
}

/* ---- buffers ---- */

struct buffer {
  uint8_t *data;
  size_t cap;
};

/* Grows b to hold at least len bytes; contents are not kept (each frame starts afresh). */
static void buffer_reserve(struct buffer *b, size_t len) {
  if (len <= b->cap) return;
  free(b->data);
  b->data = malloc(len);
  if (b->data == NULL) {
    fprintf(stderr, "faasvisor function: out of memory for a %zu-byte frame\n", len);
    exit(FV_EXIT_PROTOCOL);
  }
  b->cap = len;
}

/* ---- signals ---- */

static void on_term(int sig) {
  (void)sig;
  _exit(0);
}

/* The instance is pid 1 of its pid namespace, where the kernel drops SIGTERM/SIGINT unless
 * a handler is installed; without this the node would always wait for SIGKILL. */
static void install_signals(void) {
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_term;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGTERM, &sa, NULL);
  sigaction(SIGINT, &sa, NULL);
  signal(SIGPIPE, SIG_IGN);
}

/* ---- frames out ---- */

static void send_ready(void) {
  uint8_t frame[FV_FRAME_HEADER_SIZE + sizeof FV_READY_TEXT - 1];
  fv_frame_header_write(frame, FV_FRAME_READY, sizeof FV_READY_TEXT - 1);
  uint8_t *p = frame + FV_FRAME_HEADER_SIZE;
  for (size_t i = 0; i < sizeof FV_READY_TEXT - 1; i++) p[i] = (uint8_t)FV_READY_TEXT[i];
  if (write_full(frame, sizeof frame) != 0) die_io("writing READY");
}

static void set_error_view(struct fv_response_view *view, const char *json, size_t len) {
  static const char k_content_type[] = "Content-Type";
  static const char k_json[] = "application/json";
  view->status = 500;
  view->header_count = 1;
  view->headers[0].name = (struct fv_str){k_content_type, sizeof k_content_type - 1};
  view->headers[0].value = (struct fv_str){k_json, sizeof k_json - 1};
  view->body = (struct fv_str){json, (uint32_t)len};
}

/* Turns what handle() produced into a wire view, replacing an unsendable response by a
 * 500 so one buggy invocation does not cost the node a whole instance. */
static void response_to_view(int handle_rc, const struct fv_response *resp,
                             struct fv_response_view *view) {
  const char *error = NULL;
  size_t error_len = 0;
  if (handle_rc != 0) {
    error = k_function_failed, error_len = sizeof k_function_failed - 1;
  } else if (resp->status < 100 || resp->status > 599) {
    error = k_bad_status, error_len = sizeof k_bad_status - 1;
  } else if (resp->header_count > FV_RESPONSE_MAX_HEADERS) {
    error = k_bad_headers, error_len = sizeof k_bad_headers - 1;
  } else if (resp->body_len > FV_FUNCTION_MAX_PAYLOAD) {
    error = k_too_large, error_len = sizeof k_too_large - 1;
  }
  if (error != NULL) {
    set_error_view(view, error, error_len);
    return;
  }
  view->status = (uint16_t)resp->status;
  view->header_count = resp->header_count;
  for (uint32_t i = 0; i < resp->header_count; i++) view->headers[i] = resp->headers[i];
  view->body = (struct fv_str){(const char *)resp->body, (uint32_t)resp->body_len};
  if (fv_response_payload_size(view) > FV_FUNCTION_MAX_PAYLOAD)
    set_error_view(view, k_too_large, sizeof k_too_large - 1);
}

static void send_response(const struct fv_response_view *view, struct buffer *out) {
  buffer_reserve(out, FV_FRAME_HEADER_SIZE + fv_response_payload_size(view));
  long n = fv_response_encode(out->data, out->cap, view);
  if (n < 0) die_protocol(fv_frame_strerror((int)n)); /* response_to_view made it valid */
  if (write_full(out->data, (size_t)n) != 0) die_io("writing RESPONSE");
}

/* ---- one invocation ---- */

static void serve_request(const uint8_t *payload, uint32_t len, struct buffer *out) {
  /* static: each view holds 128 header slots (~4 KiB); one invocation at a time. */
  static struct fv_request_view in;
  static struct fv_response_view wire;
  static struct fv_response resp;

  int rc = fv_request_decode(payload, len, &in);
  if (rc != FV_OK) die_protocol(fv_frame_strerror(rc));

  struct fv_request req = {
      .method = in.method,
      .path = in.path,
      .query = in.query,
      .header_count = in.header_count,
      .headers = in.headers,
      .body = in.body.ptr,
      .body_len = in.body.len,
  };
  memset(&resp, 0, sizeof resp);
  resp.status = 200;

  int handle_rc = handle(&req, &resp);
  response_to_view(handle_rc, &resp, &wire);
  send_response(&wire, out);
}

/* Reads one frame into in. Returns its type, or 0 at a clean end of stream (between
 * frames); any fault exits. */
static uint8_t read_frame(struct buffer *in, uint32_t *len) {
  uint8_t header[FV_FRAME_HEADER_SIZE];
  long n = read_full(header, sizeof header);
  if (n < 0) die_io("reading a frame header");
  if (n == 0) return 0;
  if ((size_t)n < sizeof header) die_protocol("end of stream inside a frame header");

  struct fv_frame_header h;
  int rc = fv_frame_header_parse(header, sizeof header, FV_FUNCTION_MAX_PAYLOAD, &h);
  if (rc != FV_OK) die_protocol(fv_frame_strerror(rc));

  buffer_reserve(in, h.length ? h.length : 1);
  n = read_full(in->data, h.length);
  if (n < 0) die_io("reading a frame payload");
  if ((size_t)n < h.length) die_protocol("end of stream inside a frame payload");
  *len = h.length;
  return h.type;
}

int main(void) {
  install_signals();
  if (fv_init && fv_init() != 0) {
    fprintf(stderr, "faasvisor function: fv_init failed\n");
    exit(1);
  }
  send_ready();

  struct buffer in = {NULL, 0};
  struct buffer out = {NULL, 0};
  for (;;) {
    uint32_t len = 0;
    uint8_t type = read_frame(&in, &len);
    if (type == 0 || type == FV_FRAME_SHUTDOWN) break;
    if (type != FV_FRAME_REQUEST) die_protocol("unexpected frame type from the node");
    serve_request(in.data, len, &out);
  }
  free(in.data);
  free(out.data);
  return 0;
}

/* ---- helpers for handle() ---- */

static int ascii_lower(int c) { return (c >= 'A' && c <= 'Z') ? c + ('a' - 'A') : c; }

const char *fv_query_get(const struct fv_request *req, const char *key, size_t *len) {
  size_t key_len = strlen(key);
  const char *q = req->query.ptr;
  const char *end = q + req->query.len;
  while (q < end) {
    const char *amp = memchr(q, '&', (size_t)(end - q));
    const char *seg_end = amp ? amp : end;
    const char *eq = memchr(q, '=', (size_t)(seg_end - q));
    const char *key_end = eq ? eq : seg_end;
    if ((size_t)(key_end - q) == key_len && memcmp(q, key, key_len) == 0) {
      const char *value = eq ? eq + 1 : seg_end;
      if (len) *len = (size_t)(seg_end - value);
      return value;
    }
    q = amp ? amp + 1 : end;
  }
  return NULL;
}

static int name_equals(struct fv_str a, const char *b, size_t b_len) {
  if (a.len != b_len) return 0;
  for (size_t i = 0; i < b_len; i++)
    if (ascii_lower((unsigned char)a.ptr[i]) != ascii_lower((unsigned char)b[i])) return 0;
  return 1;
}

const struct fv_str *fv_header_get(const struct fv_request *req, const char *name) {
  size_t name_len = strlen(name);
  for (uint32_t i = 0; i < req->header_count; i++)
    if (name_equals(req->headers[i].name, name, name_len)) return &req->headers[i].value;
  return NULL;
}

void fv_response_set_header(struct fv_response *resp, const char *name, const char *value) {
  size_t name_len = strlen(name);
  struct fv_str v = {value, (uint32_t)strlen(value)};
  for (uint32_t i = 0; i < resp->header_count && i < FV_RESPONSE_MAX_HEADERS; i++) {
    if (name_equals(resp->headers[i].name, name, name_len)) {
      resp->headers[i].value = v;
      return;
    }
  }
  if (resp->header_count >= FV_RESPONSE_MAX_HEADERS) {
    fprintf(stderr, "faasvisor function: response header %s dropped (limit %u)\n", name,
            FV_RESPONSE_MAX_HEADERS);
    return;
  }
  resp->headers[resp->header_count].name = (struct fv_str){name, (uint32_t)name_len};
  resp->headers[resp->header_count].value = v;
  resp->header_count++;
}
