/* faasvisor instance protocol: frame codec (see docs/protocol.md).
 *
 * Freestanding C: it needs only <stdint.h> and <stddef.h>, allocates nothing and calls no
 * libc function, so the node, the function SDK and the unikernel kit share one codec.
 * Decoders never read past the length they are given and return views into the caller's
 * buffer. */
#ifndef FAASVISOR_FRAME_H
#define FAASVISOR_FRAME_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define FV_FRAME_MAGIC 0x31505646u /* "FVP1" little-endian */
#define FV_FRAME_HEADER_SIZE 12u
#define FV_FRAME_MAX_HEADERS 128u
#define FV_FRAME_READY_MAX 256u

/* Secrets (docs/secrets.md): a function names at most FV_SECRETS_MAX_COUNT, each name is
 * 1-FV_SECRET_NAME_MAX bytes (fv_secret_name_valid), each value at most FV_SECRET_VALUE_MAX
 * bytes and all of a function's values together at most FV_SECRETS_VALUES_MAX. */
#define FV_SECRETS_MAX_COUNT 64u
#define FV_SECRET_NAME_MAX 200u
#define FV_SECRET_VALUE_MAX (512u * 1024u)
#define FV_SECRETS_VALUES_MAX (4u * 1024u * 1024u)
/* The largest SECRETS payload those limits allow. */
#define FV_SECRETS_PAYLOAD_MAX (4u + FV_SECRETS_MAX_COUNT * (8u + FV_SECRET_NAME_MAX) + FV_SECRETS_VALUES_MAX)

enum fv_frame_type {
  FV_FRAME_READY = 1,
  FV_FRAME_REQUEST = 2,
  FV_FRAME_RESPONSE = 3,
  FV_FRAME_LOG = 4,
  FV_FRAME_SHUTDOWN = 5,
  FV_FRAME_GET_SECRETS = 6, /* instance -> node, empty: "send me my function's secrets" */
  FV_FRAME_SECRETS = 7,     /* node -> instance, the answer: fv_secrets_view */
};

/* Results: 0 is success, FV_NEED_MORE asks for more bytes, the rest are faults. */
enum fv_frame_result {
  FV_OK = 0,
  FV_NEED_MORE = -1,
  FV_BAD_MAGIC = -2,
  FV_BAD_TYPE = -3,
  FV_BAD_RESERVED = -4,
  FV_TOO_LARGE = -5,
  FV_MALFORMED = -6,
  FV_TOO_MANY_HEADERS = -7,
  FV_BAD_STATUS = -8,
  FV_NO_SPACE = -9,
};

/* A static, human-readable description of a result ("bad magic", ...). */
const char *fv_frame_strerror(int result);

struct fv_str {
  const char *ptr;
  uint32_t len;
};

struct fv_header {
  struct fv_str name;
  struct fv_str value;
};

struct fv_frame_header {
  uint8_t type;
  uint32_t length;
};

/* Parses the 12-byte header at buf. FV_NEED_MORE if len < 12; FV_TOO_LARGE if the payload
 * exceeds max_payload (checked before any payload is read). */
int fv_frame_header_parse(const uint8_t *buf, size_t len, uint32_t max_payload,
                          struct fv_frame_header *out);

/* Writes a 12-byte header. */
void fv_frame_header_write(uint8_t out[FV_FRAME_HEADER_SIZE], uint8_t type, uint32_t length);

struct fv_request_view {
  struct fv_str method;
  struct fv_str path;
  struct fv_str query;
  uint32_t header_count;
  struct fv_header headers[FV_FRAME_MAX_HEADERS];
  struct fv_str body;
};

struct fv_response_view {
  uint16_t status;
  uint32_t header_count;
  struct fv_header headers[FV_FRAME_MAX_HEADERS];
  struct fv_str body;
};

/* Decode a REQUEST/RESPONSE payload (the bytes after the header). The views point into
 * payload. The payload must be consumed exactly (FV_MALFORMED otherwise). */
int fv_request_decode(const uint8_t *payload, uint32_t len, struct fv_request_view *out);
int fv_response_decode(const uint8_t *payload, uint32_t len, struct fv_response_view *out);

/* Payload sizes, so a caller can size one buffer for header + payload. */
size_t fv_request_payload_size(const struct fv_request_view *req);
size_t fv_response_payload_size(const struct fv_response_view *resp);

/* Encode a whole frame (header + payload) into out[0..cap). Returns the number of bytes
 * written, or FV_NO_SPACE / FV_TOO_MANY_HEADERS / FV_BAD_STATUS (negative). */
long fv_request_encode(uint8_t *out, size_t cap, const struct fv_request_view *req);
long fv_response_encode(uint8_t *out, size_t cap, const struct fv_response_view *resp);

/* SECRETS payload: u32 count, then count x (string name, string value). */
struct fv_secret_entry {
  struct fv_str name;
  struct fv_str value;
};

struct fv_secrets_view {
  uint32_t count;
  struct fv_secret_entry entries[FV_SECRETS_MAX_COUNT];
};

/* Whether name (len bytes, not NUL-terminated) is a secret name: 1-FV_SECRET_NAME_MAX bytes
 * of A-Z a-z 0-9 '.' '-' '_', the first a letter or digit. Such a name is a file name with
 * nothing to escape (no '/', never "." or ".."). */
int fv_secret_name_valid(const char *name, uint32_t len);

/* Decodes a SECRETS payload; every name must be valid and every size within the limits
 * above (FV_MALFORMED otherwise, FV_TOO_MANY_HEADERS for too many entries). */
int fv_secrets_decode(const uint8_t *payload, uint32_t len, struct fv_secrets_view *out);
size_t fv_secrets_payload_size(const struct fv_secrets_view *secrets);
/* Encodes a whole SECRETS frame, like fv_request_encode. */
long fv_secrets_encode(uint8_t *out, size_t cap, const struct fv_secrets_view *secrets);

/* Primitives for encoders that build payloads from their own structures. Each writes at p
 * and returns p advanced; the caller has sized the buffer. */
uint8_t *fv_put_u16(uint8_t *p, uint16_t v);
uint8_t *fv_put_u32(uint8_t *p, uint32_t v);
uint8_t *fv_put_str(uint8_t *p, const void *data, uint32_t len);

#ifdef __cplusplus
}
#endif

#endif
