/* faasvisor instance protocol: frame codec (see docs/protocol.md and frame.h).
 *
 * Freestanding on purpose: no libc, no allocation, byte-wise little-endian access (no
 * reliance on host endianness or unaligned loads), so the node, the function SDK and a
 * unikernel guest share this one file. Every read is checked against the bytes left. */
#include "faasvisor/frame.h"

#define FV_STATUS_MIN 100u
#define FV_STATUS_MAX 599u

const char *fv_frame_strerror(int result) {
  switch (result) {
  case FV_OK:
    return "ok";
  case FV_NEED_MORE:
    return "need more bytes";
  case FV_BAD_MAGIC:
    return "bad magic";
  case FV_BAD_TYPE:
    return "unknown frame type";
  case FV_BAD_RESERVED:
    return "non-zero reserved bits";
  case FV_TOO_LARGE:
    return "frame too large";
  case FV_MALFORMED:
    return "malformed payload";
  case FV_TOO_MANY_HEADERS:
    return "too many headers";
  case FV_BAD_STATUS:
    return "status out of range";
  case FV_NO_SPACE:
    return "output buffer too small";
  default:
    return "unknown frame error";
  }
}

/* ---- little-endian primitives ---- */

static uint16_t get_u16(const uint8_t *p) {
  return (uint16_t)((uint16_t)p[0] | (uint16_t)((uint16_t)p[1] << 8));
}

static uint32_t get_u32(const uint8_t *p) {
  return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) |
         ((uint32_t)p[3] << 24);
}

uint8_t *fv_put_u16(uint8_t *p, uint16_t v) {
  p[0] = (uint8_t)(v & 0xffu);
  p[1] = (uint8_t)(v >> 8);
  return p + 2;
}

uint8_t *fv_put_u32(uint8_t *p, uint32_t v) {
  p[0] = (uint8_t)(v & 0xffu);
  p[1] = (uint8_t)((v >> 8) & 0xffu);
  p[2] = (uint8_t)((v >> 16) & 0xffu);
  p[3] = (uint8_t)(v >> 24);
  return p + 4;
}

uint8_t *fv_put_str(uint8_t *p, const void *data, uint32_t len) {
  p = fv_put_u32(p, len);
  /* Hand-written copy: this file may not call memcpy (no libc in a unikernel guest). GCC
   * may still turn the loop into a memcpy call, as it may in any freestanding code; a
   * guest build supplies memcpy or adds -fno-tree-loop-distribute-patterns. */
  const uint8_t *src = (const uint8_t *)data;
  for (uint32_t i = 0; i < len; i++) p[i] = src[i];
  return p + len;
}

/* ---- frame header ---- */

static int known_type(uint8_t type) {
  return type >= FV_FRAME_READY && type <= FV_FRAME_SECRETS;
}

int fv_frame_header_parse(const uint8_t *buf, size_t len, uint32_t max_payload,
                          struct fv_frame_header *out) {
  if (len < FV_FRAME_HEADER_SIZE) return FV_NEED_MORE;
  if (get_u32(buf) != FV_FRAME_MAGIC) return FV_BAD_MAGIC;
  uint8_t type = buf[4];
  if (!known_type(type)) return FV_BAD_TYPE;
  if (buf[5] != 0 || get_u16(buf + 6) != 0) return FV_BAD_RESERVED;
  uint32_t length = get_u32(buf + 8);
  if (length > max_payload) return FV_TOO_LARGE;
  /* Per-type limits are known from the header alone, so reject them before the payload
   * is read, like the global limit. */
  if (type == FV_FRAME_READY && length > FV_FRAME_READY_MAX) return FV_TOO_LARGE;
  if ((type == FV_FRAME_SHUTDOWN || type == FV_FRAME_GET_SECRETS) && length != 0) return FV_MALFORMED;
  if (type == FV_FRAME_SECRETS && length > FV_SECRETS_PAYLOAD_MAX) return FV_TOO_LARGE;
  out->type = type;
  out->length = length;
  return FV_OK;
}

void fv_frame_header_write(uint8_t out[FV_FRAME_HEADER_SIZE], uint8_t type, uint32_t length) {
  uint8_t *p = fv_put_u32(out, FV_FRAME_MAGIC);
  p[0] = type;
  p[1] = 0; /* flags */
  p = fv_put_u16(p + 2, 0);
  fv_put_u32(p, length);
}

/* ---- payload reader: a cursor that never passes end ---- */

struct reader {
  const uint8_t *data;
  uint32_t pos;
  uint32_t len;
};

static uint32_t reader_left(const struct reader *r) { return r->len - r->pos; }

static int read_u16(struct reader *r, uint16_t *v) {
  if (reader_left(r) < 2) return FV_MALFORMED;
  *v = get_u16(r->data + r->pos);
  r->pos += 2;
  return FV_OK;
}

static int read_u32(struct reader *r, uint32_t *v) {
  if (reader_left(r) < 4) return FV_MALFORMED;
  *v = get_u32(r->data + r->pos);
  r->pos += 4;
  return FV_OK;
}

static int read_str(struct reader *r, struct fv_str *s) {
  uint32_t n;
  if (read_u32(r, &n) != FV_OK) return FV_MALFORMED;
  if (n > reader_left(r)) return FV_MALFORMED;
  s->ptr = (const char *)(r->data + r->pos);
  s->len = n;
  r->pos += n;
  return FV_OK;
}

/* Reads header_count and the pairs that follow, shared by both payload kinds. */
static int read_headers(struct reader *r, uint32_t *count, struct fv_header *headers) {
  uint32_t n;
  if (read_u32(r, &n) != FV_OK) return FV_MALFORMED;
  if (n > FV_FRAME_MAX_HEADERS) return FV_TOO_MANY_HEADERS;
  for (uint32_t i = 0; i < n; i++) {
    if (read_str(r, &headers[i].name) != FV_OK) return FV_MALFORMED;
    if (read_str(r, &headers[i].value) != FV_OK) return FV_MALFORMED;
  }
  *count = n;
  return FV_OK;
}

int fv_request_decode(const uint8_t *payload, uint32_t len, struct fv_request_view *out) {
  struct reader r = {payload, 0, len};
  if (read_str(&r, &out->method) != FV_OK) return FV_MALFORMED;
  if (read_str(&r, &out->path) != FV_OK) return FV_MALFORMED;
  if (read_str(&r, &out->query) != FV_OK) return FV_MALFORMED;
  int rc = read_headers(&r, &out->header_count, out->headers);
  if (rc != FV_OK) return rc;
  if (read_str(&r, &out->body) != FV_OK) return FV_MALFORMED;
  if (reader_left(&r) != 0) return FV_MALFORMED;
  return FV_OK;
}

int fv_response_decode(const uint8_t *payload, uint32_t len, struct fv_response_view *out) {
  struct reader r = {payload, 0, len};
  uint16_t status;
  uint16_t reserved;
  if (read_u16(&r, &status) != FV_OK) return FV_MALFORMED;
  if (read_u16(&r, &reserved) != FV_OK) return FV_MALFORMED;
  if (status < FV_STATUS_MIN || status > FV_STATUS_MAX) return FV_BAD_STATUS;
  if (reserved != 0) return FV_BAD_RESERVED;
  out->status = status;
  int rc = read_headers(&r, &out->header_count, out->headers);
  if (rc != FV_OK) return rc;
  if (read_str(&r, &out->body) != FV_OK) return FV_MALFORMED;
  if (reader_left(&r) != 0) return FV_MALFORMED;
  return FV_OK;
}

/* ---- sizes and encoders ---- */

/* Sizes are summed in 64 bits: 128 headers of 4 GiB strings overflow a u32 (and a 32-bit
 * size_t). Counts above the maximum are clamped so the sum never reads past the array;
 * the encoders reject such views before using the size. */
static uint64_t headers_size(uint32_t count, const struct fv_header *headers) {
  if (count > FV_FRAME_MAX_HEADERS) count = FV_FRAME_MAX_HEADERS;
  uint64_t size = 4;
  for (uint32_t i = 0; i < count; i++)
    size += 8u + (uint64_t)headers[i].name.len + (uint64_t)headers[i].value.len;
  return size;
}

static uint64_t request_size64(const struct fv_request_view *req) {
  return 12u + (uint64_t)req->method.len + req->path.len + req->query.len +
         headers_size(req->header_count, req->headers) + 4u + req->body.len;
}

static uint64_t response_size64(const struct fv_response_view *resp) {
  return 4u + headers_size(resp->header_count, resp->headers) + 4u + resp->body.len;
}

static size_t clamp_size(uint64_t size) {
  return size > (uint64_t)SIZE_MAX ? SIZE_MAX : (size_t)size;
}

size_t fv_request_payload_size(const struct fv_request_view *req) {
  return clamp_size(request_size64(req));
}

size_t fv_response_payload_size(const struct fv_response_view *resp) {
  return clamp_size(response_size64(resp));
}

/* Checks that a payload of payload_size fits the protocol's u32 length, the encoders' long
 * return value (32-bit long on some targets) and out's cap. */
static int check_room(uint64_t payload_size, size_t cap) {
  const uint64_t long_max = (uint64_t)(~0ul >> 1);
  if (payload_size > UINT32_MAX) return FV_TOO_LARGE;
  if (FV_FRAME_HEADER_SIZE + payload_size > long_max) return FV_TOO_LARGE;
  if ((uint64_t)cap < FV_FRAME_HEADER_SIZE + payload_size) return FV_NO_SPACE;
  return FV_OK;
}

static uint8_t *put_headers(uint8_t *p, uint32_t count, const struct fv_header *headers) {
  p = fv_put_u32(p, count);
  for (uint32_t i = 0; i < count; i++) {
    p = fv_put_str(p, headers[i].name.ptr, headers[i].name.len);
    p = fv_put_str(p, headers[i].value.ptr, headers[i].value.len);
  }
  return p;
}

long fv_request_encode(uint8_t *out, size_t cap, const struct fv_request_view *req) {
  if (req->header_count > FV_FRAME_MAX_HEADERS) return FV_TOO_MANY_HEADERS;
  uint64_t payload_size = request_size64(req);
  int rc = check_room(payload_size, cap);
  if (rc != FV_OK) return rc;
  fv_frame_header_write(out, FV_FRAME_REQUEST, (uint32_t)payload_size);
  uint8_t *p = out + FV_FRAME_HEADER_SIZE;
  p = fv_put_str(p, req->method.ptr, req->method.len);
  p = fv_put_str(p, req->path.ptr, req->path.len);
  p = fv_put_str(p, req->query.ptr, req->query.len);
  p = put_headers(p, req->header_count, req->headers);
  p = fv_put_str(p, req->body.ptr, req->body.len);
  return (long)(p - out);
}

long fv_response_encode(uint8_t *out, size_t cap, const struct fv_response_view *resp) {
  if (resp->status < FV_STATUS_MIN || resp->status > FV_STATUS_MAX) return FV_BAD_STATUS;
  if (resp->header_count > FV_FRAME_MAX_HEADERS) return FV_TOO_MANY_HEADERS;
  uint64_t payload_size = response_size64(resp);
  int rc = check_room(payload_size, cap);
  if (rc != FV_OK) return rc;
  fv_frame_header_write(out, FV_FRAME_RESPONSE, (uint32_t)payload_size);
  uint8_t *p = out + FV_FRAME_HEADER_SIZE;
  p = fv_put_u16(p, resp->status);
  p = fv_put_u16(p, 0); /* reserved */
  p = put_headers(p, resp->header_count, resp->headers);
  p = fv_put_str(p, resp->body.ptr, resp->body.len);
  return (long)(p - out);
}

/* ---- secrets ---- */

int fv_secret_name_valid(const char *name, uint32_t len) {
  if (len == 0 || len > FV_SECRET_NAME_MAX) return 0;
  for (uint32_t i = 0; i < len; i++) {
    char c = name[i];
    int alnum = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
    if (!alnum && (i == 0 || (c != '.' && c != '-' && c != '_'))) return 0;
  }
  return 1;
}

int fv_secrets_decode(const uint8_t *payload, uint32_t len, struct fv_secrets_view *out) {
  struct reader r = {payload, 0, len};
  uint32_t n;
  uint64_t values = 0;
  if (read_u32(&r, &n) != FV_OK) return FV_MALFORMED;
  if (n > FV_SECRETS_MAX_COUNT) return FV_TOO_MANY_HEADERS;
  for (uint32_t i = 0; i < n; i++) {
    struct fv_secret_entry *e = &out->entries[i];
    if (read_str(&r, &e->name) != FV_OK || read_str(&r, &e->value) != FV_OK) return FV_MALFORMED;
    if (!fv_secret_name_valid(e->name.ptr, e->name.len)) return FV_MALFORMED;
    if (e->value.len > FV_SECRET_VALUE_MAX) return FV_MALFORMED;
    values += e->value.len;
  }
  if (values > FV_SECRETS_VALUES_MAX) return FV_MALFORMED;
  if (reader_left(&r) != 0) return FV_MALFORMED;
  out->count = n;
  return FV_OK;
}

static uint64_t secrets_size64(const struct fv_secrets_view *secrets) {
  uint32_t count = secrets->count > FV_SECRETS_MAX_COUNT ? FV_SECRETS_MAX_COUNT : secrets->count;
  uint64_t size = 4;
  for (uint32_t i = 0; i < count; i++)
    size += 8u + (uint64_t)secrets->entries[i].name.len + (uint64_t)secrets->entries[i].value.len;
  return size;
}

size_t fv_secrets_payload_size(const struct fv_secrets_view *secrets) {
  return clamp_size(secrets_size64(secrets));
}

long fv_secrets_encode(uint8_t *out, size_t cap, const struct fv_secrets_view *secrets) {
  if (secrets->count > FV_SECRETS_MAX_COUNT) return FV_TOO_MANY_HEADERS;
  uint64_t payload_size = secrets_size64(secrets);
  if (payload_size > FV_SECRETS_PAYLOAD_MAX) return FV_TOO_LARGE;
  int rc = check_room(payload_size, cap);
  if (rc != FV_OK) return rc;
  fv_frame_header_write(out, FV_FRAME_SECRETS, (uint32_t)payload_size);
  uint8_t *p = fv_put_u32(out + FV_FRAME_HEADER_SIZE, secrets->count);
  for (uint32_t i = 0; i < secrets->count; i++) {
    p = fv_put_str(p, secrets->entries[i].name.ptr, secrets->entries[i].name.len);
    p = fv_put_str(p, secrets->entries[i].value.ptr, secrets->entries[i].value.len);
  }
  return (long)(p - out);
}
