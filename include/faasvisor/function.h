/* faasvisor function SDK: write handle(), link with the faasvisor_function library, and the
 * library's main() speaks the instance protocol (docs/protocol.md) on fd 0 / fd 1.
 *
 *   #include "faasvisor/function.h"
 *   int handle(const struct fv_request *req, struct fv_response *resp) {
 *     resp->body = req->body;
 *     resp->body_len = req->body_len;
 *     return 0;
 *   }
 *
 * fd 1 carries the protocol: a function must not write to stdout (printf, puts); log to
 * stderr instead. */
#ifndef FAASVISOR_FUNCTION_H
#define FAASVISOR_FUNCTION_H

#include <stddef.h>
#include <stdint.h>

#include "faasvisor/frame.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Largest frame payload the SDK reads or writes (the node's default limit). A bigger
 * REQUEST is a protocol error; a bigger response is replaced by a 500. */
#define FV_FUNCTION_MAX_PAYLOAD (16u * 1024u * 1024u)
#define FV_RESPONSE_MAX_HEADERS 32u

/* One invocation. Every pointer refers to the SDK's receive buffer and is valid only
 * during the handle() call. Strings are not NUL-terminated. */
struct fv_request {
  struct fv_str method;
  struct fv_str path;  /* after /function/NAME, starts with "/" */
  struct fv_str query; /* raw, without "?", may be empty */
  uint32_t header_count;
  const struct fv_header *headers;
  const void *body;
  size_t body_len;
};

/* Filled in by handle(). Before each call the SDK resets it to status 200, no headers,
 * empty body. Memory it points at belongs to the function and must stay valid until
 * handle() is called again (static buffers are fine). */
struct fv_response {
  int status; /* 100..599; anything else makes the SDK reply 500 */
  uint32_t header_count;
  struct fv_header headers[FV_RESPONSE_MAX_HEADERS];
  const void *body;
  size_t body_len;
};

/* Supplied by the function. Return 0 to send *resp; non-zero makes the SDK reply
 * 500 {"error":"function failed"}. */
int handle(const struct fv_request *req, struct fv_response *resp);

/* Optional: defined by the function to initialise once before READY is sent (the time it
 * takes counts as the instance's init time). Non-zero makes the process exit(1). */
int fv_init(void) __attribute__((weak));

/* Value of query parameter key, raw (no percent-decoding), not NUL-terminated; *len gets
 * its length. A key without "=" has an empty value. NULL when absent (first match wins). */
const char *fv_query_get(const struct fv_request *req, const char *key, size_t *len);

/* Whether query parameter key is present with exactly the value want (raw, as fv_query_get). */
int fv_query_is(const struct fv_request *req, const char *key, const char *want);

/* First header whose name equals name ignoring ASCII case, or NULL. */
const struct fv_str *fv_header_get(const struct fv_request *req, const char *name);

/* Sets a response header: replaces the value of a header of the same name (ignoring case),
 * else appends. The strings are not copied (same lifetime rule as the body). When all
 * FV_RESPONSE_MAX_HEADERS slots are used the header is dropped and a line goes to stderr. */
void fv_response_set_header(struct fv_response *resp, const char *name, const char *value);

/* The value of the secret `name`, one of the function's "secrets" at deploy
 * (docs/secrets.md), not NUL-terminated; *len gets its length. NULL when the function has no
 * such secret (or, in a guest, its secrets did not fit in memory: a line is logged). The
 * bytes stay valid and unchanged until the instance ends: an instance sees the values of
 * the moment it started.
 * In a Linux instance (process, container, microVM) it reads /var/openfaas/secrets/NAME. A
 * unikernel has no files: the first call asks the node over the instance protocol
 * (GET_SECRETS, docs/protocol.md) and keeps the answer. Call it from fv_init() or handle(). */
const void *fv_secret(const char *name, size_t *len);

#ifdef __cplusplus
}
#endif

#endif
