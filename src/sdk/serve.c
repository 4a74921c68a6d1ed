/* The instance side of docs/protocol.md, shared by every platform the SDK runs on.
 *
 * The instance serves one invocation at a time, so the loop is plain blocking I/O: read a
 * frame, call handle(), write one RESPONSE. Everything platform-specific (the byte stream,
 * the heap, logging, exiting) goes through platform.h, so this file also builds
 * freestanding into a unikernel guest. Frame buffers grow from the heap as frames need;
 * when the heap cannot hold one (a small guest), the invocation gets an error response and
 * the instance lives on. */
#include <string.h>

#include "platform.h"

#define FV_READY_TEXT "c"

static const char k_function_failed[] = "{\"error\":\"function failed\"}";
static const char k_bad_status[] = "{\"error\":\"function returned a status outside 100..599\"}";
static const char k_bad_headers[] = "{\"error\":\"function returned too many headers\"}";
static const char k_too_large[] = "{\"error\":\"function response too large\"}";
static const char k_request_no_memory[] =
    "{\"error\":\"request too large for the instance's memory\"}";

/* Error frames are small: they are encoded on the stack, never from the heap. */
#define FV_ERROR_FRAME_CAP 256u

/* ---- buffers ---- */

struct buffer {
  uint8_t *data;
  size_t cap;
};

/* Grows b to hold at least len bytes; contents are not kept (each frame starts afresh).
 * The old block is freed first so a small heap can reuse it. Returns 0, or -1 with b
 * empty when the heap cannot hold len bytes. */
static int buffer_reserve(struct buffer *b, size_t len) {
  if (len <= b->cap) return 0;
  fv_platform_free(b->data);
  b->data = fv_platform_alloc(len);
  b->cap = b->data != NULL ? len : 0;
  return b->data != NULL ? 0 : -1;
}

static void buffer_release(struct buffer *b) {
  fv_platform_free(b->data);
  b->data = NULL;
  b->cap = 0;
}

/* ---- failure exits ---- */

static _Noreturn void die_protocol(const char *what) {
  fv_platform_exit(FV_EXIT_PROTOCOL, "protocol error", what);
}

/* ---- frames out ---- */

static void write_or_die(const void *data, size_t len, const char *what) {
  if (fv_platform_write(data, len) != 0)
    fv_platform_exit(FV_EXIT_PROTOCOL, what, fv_platform_io_error());
}

static void send_ready(void) {
  uint8_t frame[FV_FRAME_HEADER_SIZE + sizeof FV_READY_TEXT - 1];
  fv_frame_header_write(frame, FV_FRAME_READY, sizeof FV_READY_TEXT - 1);
  memcpy(frame + FV_FRAME_HEADER_SIZE, FV_READY_TEXT, sizeof FV_READY_TEXT - 1);
  write_or_die(frame, sizeof frame, "writing READY");
}

static void set_error_view(struct fv_response_view *view, int status, const char *json,
                           size_t len) {
  static const char k_content_type[] = "Content-Type";
  static const char k_json[] = "application/json";
  view->status = (uint16_t)status;
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
    set_error_view(view, 500, error, error_len);
    return;
  }
  view->status = (uint16_t)resp->status;
  view->header_count = resp->header_count;
  for (uint32_t i = 0; i < resp->header_count; i++) view->headers[i] = resp->headers[i];
  view->body = (struct fv_str){(const char *)resp->body, (uint32_t)resp->body_len};
  if (fv_response_payload_size(view) > FV_FUNCTION_MAX_PAYLOAD)
    set_error_view(view, 500, k_too_large, sizeof k_too_large - 1);
}

static void send_encoded(const struct fv_response_view *view, uint8_t *out, size_t cap) {
  long n = fv_response_encode(out, cap, view);
  /* response_to_view and set_error_view only make valid views that fit cap. */
  if (n < 0) die_protocol(fv_frame_strerror((int)n));
  write_or_die(out, (size_t)n, "writing RESPONSE");
}

/* An error response, encoded without the heap. */
static void send_error(int status, const char *json, size_t len) {
  static struct fv_response_view view;
  uint8_t frame[FV_ERROR_FRAME_CAP];
  set_error_view(&view, status, json, len);
  send_encoded(&view, frame, sizeof frame);
}

static void send_response(struct fv_response_view *view, struct buffer *out) {
  if (buffer_reserve(out, FV_FRAME_HEADER_SIZE + fv_response_payload_size(view)) != 0) {
    send_error(500, k_too_large, sizeof k_too_large - 1);
    return;
  }
  send_encoded(view, out->data, out->cap);
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

/* ---- frames in ---- */

/* What the stream delivered beyond what was asked for: a read takes up to this much, so a
 * small REQUEST (header and payload) costs one read() rather than two. The node sends one
 * frame and waits for the answer, so this rarely holds more than the frame being read. */
#define FV_STASH_BYTES 4096u
static struct {
  uint8_t data[FV_STASH_BYTES];
  size_t start, end; /* data[start..end) is unread */
} g_stash;

/* Copies up to len stashed bytes to dst; returns how many. */
static size_t take_stashed(uint8_t *dst, size_t len) {
  size_t have = g_stash.end - g_stash.start;
  size_t n = have < len ? have : len;
  memcpy(dst, g_stash.data + g_stash.start, n);
  g_stash.start += n;
  if (g_stash.start == g_stash.end) g_stash.start = g_stash.end = 0;
  return n;
}

/* Reads len bytes: the stash first, then the stream (payloads larger than the stash go
 * straight to their buffer). Returns the bytes read, < len only at end of stream, -1 on an
 * I/O error. */
static long read_exact(void *buf, size_t len) {
  size_t done = take_stashed((uint8_t *)buf, len);
  if (done == len) return (long)done;
  long n = fv_platform_read((uint8_t *)buf + done, len - done);
  return n < 0 ? -1 : (long)done + n;
}

/* Makes the stash hold at least need bytes (need <= FV_STASH_BYTES), reading what the
 * stream has. Returns the bytes stashed (< need only at end of stream), -1 on an error. */
static long fill_stash(size_t need) {
  size_t have = g_stash.end - g_stash.start;
  if (have >= need) return (long)have;
  memmove(g_stash.data, g_stash.data + g_stash.start, have);
  g_stash.start = 0;
  g_stash.end = have;
  long n = fv_platform_read_at_least(g_stash.data + have, need - have, FV_STASH_BYTES - have);
  if (n < 0) return -1;
  g_stash.end += (size_t)n;
  return (long)g_stash.end;
}

static void read_or_die(void *buf, size_t len, const char *cut) {
  long n = read_exact(buf, len);
  if (n < 0) fv_platform_exit(FV_EXIT_PROTOCOL, "reading a frame payload", fv_platform_io_error());
  if ((size_t)n < len) die_protocol(cut);
}

/* Reads and drops len payload bytes: the frame did not fit in memory. */
static void skip_payload(uint32_t len) {
  uint8_t chunk[512];
  while (len > 0) {
    uint32_t n = len < sizeof chunk ? len : (uint32_t)sizeof chunk;
    read_or_die(chunk, n, "end of stream inside a frame payload");
    len -= n;
  }
}

enum { FRAME_END = 0, FRAME_SKIPPED = 0x100 };

/* Reads a frame header; 0 at a clean end of stream (between frames), 1 with *h filled. Any
 * fault exits. */
static int read_header(uint32_t max_payload, struct fv_frame_header *h) {
  uint8_t header[FV_FRAME_HEADER_SIZE];
  long n = fill_stash(sizeof header);
  if (n < 0) fv_platform_exit(FV_EXIT_PROTOCOL, "reading a frame header", fv_platform_io_error());
  if (n == 0) return 0;
  if ((size_t)n < sizeof header) die_protocol("end of stream inside a frame header");
  take_stashed(header, sizeof header);
  int rc = fv_frame_header_parse(header, sizeof header, max_payload, h);
  if (rc != FV_OK) die_protocol(fv_frame_strerror(rc));
  return 1;
}

/* Reads one frame into in. Returns its type (REQUEST or SHUTDOWN), FRAME_END at a clean
 * end of stream (between frames), or FRAME_SKIPPED when a REQUEST's payload did not fit in
 * the heap and was dropped; any fault exits. */
static int read_frame(struct buffer *in, uint32_t *len) {
  struct fv_frame_header h;
  if (!read_header(FV_FUNCTION_MAX_PAYLOAD, &h)) return FRAME_END;
  if (h.type != FV_FRAME_REQUEST && h.type != FV_FRAME_SHUTDOWN)
    die_protocol("unexpected frame type from the node");

  if (buffer_reserve(in, h.length ? h.length : 1) != 0) {
    skip_payload(h.length);
    return FRAME_SKIPPED;
  }
  read_or_die(in->data, h.length, "end of stream inside a frame payload");
  *len = h.length;
  return h.type;
}

/* ---- secrets (GET_SECRETS -> SECRETS) ---- */

static struct {
  int asked;
  int have;
  struct buffer payload; /* the views below point into it until exit */
  struct fv_secrets_view view;
} g_secrets;

/* Asks once. The node answers GET_SECRETS at once and sends nothing else meanwhile: it
 * sends no REQUEST before READY, and none while one is being handled. */
static void fetch_secrets(void) {
  uint8_t frame[FV_FRAME_HEADER_SIZE];
  g_secrets.asked = 1;
  fv_frame_header_write(frame, FV_FRAME_GET_SECRETS, 0);
  write_or_die(frame, sizeof frame, "writing GET_SECRETS");
  struct fv_frame_header h;
  if (!read_header(FV_SECRETS_PAYLOAD_MAX, &h) || h.type == FV_FRAME_SHUTDOWN)
    fv_platform_exit(FV_EXIT_OK, "stopped while waiting for secrets", NULL);
  if (h.type != FV_FRAME_SECRETS) die_protocol("unexpected frame type while waiting for SECRETS");
  if (buffer_reserve(&g_secrets.payload, h.length ? h.length : 1) != 0) {
    skip_payload(h.length);
    fv_platform_log("secrets", "they do not fit in the instance's memory");
    return;
  }
  read_or_die(g_secrets.payload.data, h.length, "end of stream inside a frame payload");
  int rc = fv_secrets_decode(g_secrets.payload.data, h.length, &g_secrets.view);
  if (rc != FV_OK) die_protocol(fv_frame_strerror(rc));
  g_secrets.have = 1;
}

const void *fv_serve_secret(const char *name, size_t *len) {
  if (!g_secrets.asked) fetch_secrets();
  if (!g_secrets.have) return NULL;
  size_t name_len = strlen(name);
  for (uint32_t i = 0; i < g_secrets.view.count; i++) {
    const struct fv_secret_entry *e = &g_secrets.view.entries[i];
    if (e->name.len == name_len && memcmp(e->name.ptr, name, name_len) == 0) {
      *len = e->value.len;
      return e->value.ptr;
    }
  }
  return NULL;
}

int fv_serve(void) {
  if (fv_init && fv_init() != 0) fv_platform_exit(FV_EXIT_INIT, "fv_init failed", NULL);
  send_ready();

  struct buffer in = {NULL, 0};
  struct buffer out = {NULL, 0};
  for (;;) {
    uint32_t len = 0;
    int type = read_frame(&in, &len);
    if (type == FRAME_END || type == FV_FRAME_SHUTDOWN) break;
    if (type == FRAME_SKIPPED) /* the node waits for this REQUEST's RESPONSE */
      send_error(413, k_request_no_memory, sizeof k_request_no_memory - 1);
    else
      serve_request(in.data, len, &out);
  }
  buffer_release(&in);
  buffer_release(&out);
  return FV_EXIT_OK;
}
