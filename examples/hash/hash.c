/* hash: a CPU-bound function. Hashes the body with SHA-256, then hashes the digest again
 * until `rounds` hashes are done (query ?rounds=N, default 1000, 1..10,000,000), and answers
 * with the hex digest and a newline. */
#include <stddef.h>

#include "faasvisor/function.h"
#include "sha256.h"

#define HASH_DEFAULT_ROUNDS 1000u
#define HASH_MAX_ROUNDS 10000000u

static const char k_bad_rounds[] =
    "{\"error\":\"rounds must be an integer between 1 and 10000000\"}\n";

/* Parses decimal digits only; 0 on anything else (empty, sign, junk, out of range). */
static unsigned long parse_rounds(const char *s, size_t len) {
  if (len == 0 || len > 8) return 0;
  unsigned long v = 0;
  for (size_t i = 0; i < len; i++) {
    if (s[i] < '0' || s[i] > '9') return 0;
    v = v * 10 + (unsigned long)(s[i] - '0');
  }
  return v <= HASH_MAX_ROUNDS ? v : 0;
}

int handle(const struct fv_request *req, struct fv_response *resp) {
  /* The response body must outlive handle(): a static buffer, rewritten per invocation. */
  static char out[2 * SHA256_DIGEST_SIZE + 1];

  unsigned long rounds = HASH_DEFAULT_ROUNDS;
  size_t len = 0;
  const char *value = fv_query_get(req, "rounds", &len);
  if (value != NULL) rounds = parse_rounds(value, len);
  if (rounds == 0) {
    resp->status = 400;
    fv_response_set_header(resp, "Content-Type", "application/json");
    resp->body = k_bad_rounds;
    resp->body_len = sizeof k_bad_rounds - 1;
    return 0;
  }

  uint8_t digest[SHA256_DIGEST_SIZE];
  sha256(req->body, req->body_len, digest);
  for (unsigned long i = 1; i < rounds; i++) sha256(digest, sizeof digest, digest);

  sha256_hex(digest, out);
  out[2 * SHA256_DIGEST_SIZE] = '\n';
  fv_response_set_header(resp, "Content-Type", "text/plain");
  resp->body = out;
  resp->body_len = sizeof out;
  return 0;
}
