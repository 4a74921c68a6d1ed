/* A small SHA-256 (FIPS 180-4). Freestanding like the frame codec: no libc, no allocation,
 * so the example also builds for a unikernel guest. */
#ifndef FAASVISOR_EXAMPLE_SHA256_H
#define FAASVISOR_EXAMPLE_SHA256_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define SHA256_DIGEST_SIZE 32u
#define SHA256_BLOCK_SIZE 64u

struct sha256 {
  uint32_t state[8];
  uint64_t total_bytes;
  uint8_t block[SHA256_BLOCK_SIZE];
  uint32_t block_len;
};

void sha256_init(struct sha256 *ctx);
void sha256_update(struct sha256 *ctx, const void *data, size_t len);
void sha256_final(struct sha256 *ctx, uint8_t digest[SHA256_DIGEST_SIZE]);

/* One-shot digest of data[0..len). */
void sha256(const void *data, size_t len, uint8_t digest[SHA256_DIGEST_SIZE]);

/* Writes 64 lowercase hex characters (no NUL). */
void sha256_hex(const uint8_t digest[SHA256_DIGEST_SIZE], char out[2 * SHA256_DIGEST_SIZE]);

#ifdef __cplusplus
}
#endif

#endif
