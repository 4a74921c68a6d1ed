/* Helpers for handle() (function.h): query parameters, request headers, response headers.
 * Platform-independent like serve.c: they need only <string.h>. */
#include <string.h>

#include "platform.h"

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

int fv_query_is(const struct fv_request *req, const char *key, const char *want) {
  size_t len = 0;
  const char *v = fv_query_get(req, key, &len);
  return v != NULL && len == strlen(want) && memcmp(v, want, len) == 0;
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
    fv_platform_log("response header dropped, all FV_RESPONSE_MAX_HEADERS slots used", name);
    return;
  }
  resp->headers[resp->header_count].name = (struct fv_str){name, (uint32_t)name_len};
  resp->headers[resp->header_count].value = v;
  resp->header_count++;
}

const void *fv_secret(const char *name, size_t *len) {
  size_t name_len = strlen(name);
  if (name_len > FV_SECRET_NAME_MAX || !fv_secret_name_valid(name, (uint32_t)name_len)) return NULL;
  size_t ignored;
  return fv_platform_secret(name, len != NULL ? len : &ignored);
}
