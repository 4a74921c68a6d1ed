/* misbehave: a test function that fails on demand, picked per request by ?mode=...
 *
 *   ok                echo the body (also the default)
 *   crash             abort()
 *   exit              exit(3) mid-invocation
 *   hang              sleep forever
 *   slow&ms=N         sleep N ms, then echo
 *   garbage           write 64 non-protocol bytes to fd 1, then block
 *   oversize          write a RESPONSE header claiming a 1 GiB payload, then block
 *   oom               allocate and touch 1 MiB chunks until killed
 *   stderr            write 10,000 lines to stderr, then echo
 *   status&code=N     respond with status N; N outside 100..599 is written as a raw frame
 *                     (the SDK would turn it into a 500) and the process then blocks
 *   headers           respond with X-Test: yes and echo
 *
 * At start: FV_TEST_CRASH_AT_START=1 exits 1 before READY; FV_TEST_LAST_WORDS=1 first
 * writes 256 KiB of stderr (more than a pipe holds) ending "last words: goodbye", then exits 1;
 * FV_TEST_NO_READY=1 never sends READY. Raw writes go straight to fd 1, bypassing the SDK, to imitate a broken instance. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "faasvisor/function.h"

static const char k_unknown_mode[] = "{\"error\":\"unknown mode\"}";

static int env_is_one(const char *name) {
  const char *v = getenv(name);
  return v != NULL && strcmp(v, "1") == 0;
}

static void block_forever(void) {
  for (;;) pause(); /* SIGTERM still ends the process: the SDK installed a handler */
}

int fv_init(void) {
  if (env_is_one("FV_TEST_CRASH_AT_START")) exit(1);
  if (env_is_one("FV_TEST_LAST_WORDS")) {
    for (int i = 0; i < 4096; ++i) fprintf(stderr, "filler line %04d of the crash report ..........................\n", i);
    fprintf(stderr, "last words: goodbye\n");
    exit(1);
  }
  if (env_is_one("FV_TEST_NO_READY")) block_forever();
  return 0;
}

static void write_raw(const void *data, size_t len) {
  const char *p = data;
  while (len > 0) {
    ssize_t n = write(STDOUT_FILENO, p, len);
    if (n <= 0) return;
    p += n;
    len -= (size_t)n;
  }
}

/* Decimal query value, or fallback when absent or not a number (capped to avoid overflow). */
static long query_long(const struct fv_request *req, const char *key, long fallback) {
  size_t len = 0;
  const char *v = fv_query_get(req, key, &len);
  if (v == NULL || len == 0 || len > 9) return fallback;
  long n = 0;
  for (size_t i = 0; i < len; i++) {
    if (v[i] < '0' || v[i] > '9') return fallback;
    n = n * 10 + (v[i] - '0');
  }
  return n;
}

static void sleep_ms(long ms) {
  struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
  while (nanosleep(&ts, &ts) != 0) {
  }
}

static void echo(const struct fv_request *req, struct fv_response *resp) {
  resp->body = req->body;
  resp->body_len = req->body_len;
}

static void write_garbage(void) {
  uint8_t junk[64];
  uint32_t x = 0x9e3779b9u;
  for (size_t i = 0; i < sizeof junk; i++) {
    x ^= x << 13, x ^= x >> 17, x ^= x << 5;
    junk[i] = (uint8_t)x;
  }
  junk[0] = 'X'; /* never "FVP1", whatever the generator produced */
  write_raw(junk, sizeof junk);
}

static void write_oversize_header(void) {
  uint8_t header[FV_FRAME_HEADER_SIZE];
  fv_frame_header_write(header, FV_FRAME_RESPONSE, 1u << 30);
  write_raw(header, sizeof header);
}

static void write_raw_status(long status) {
  uint8_t frame[FV_FRAME_HEADER_SIZE + 12];
  fv_frame_header_write(frame, FV_FRAME_RESPONSE, 12);
  uint8_t *p = frame + FV_FRAME_HEADER_SIZE;
  p = fv_put_u16(p, (uint16_t)(status > 0xffff ? 0xffff : status));
  p = fv_put_u16(p, 0);
  p = fv_put_u32(p, 0); /* headers */
  fv_put_u32(p, 0);     /* empty body */
  write_raw(frame, sizeof frame);
}

static void eat_memory(void) {
  const size_t chunk = 1u << 20;
  for (;;) {
    char *p = malloc(chunk);
    if (p == NULL) {
      sleep_ms(10); /* wait for the OOM killer or the node's deadline */
      continue;
    }
    memset(p, 0xa5, chunk); /* touch it, or the pages are never charged */
  }
}

static void spam_stderr(void) {
  for (int i = 0; i < 10000; i++)
    fprintf(stderr, "misbehave: stderr line %d of 10000, padding padding padding\n", i + 1);
}

int handle(const struct fv_request *req, struct fv_response *resp) {
  if (fv_query_get(req, "mode", NULL) == NULL || fv_query_is(req, "mode", "ok")) {
    echo(req, resp);
  } else if (fv_query_is(req, "mode", "crash")) {
    abort();
  } else if (fv_query_is(req, "mode", "exit")) {
    exit(3);
  } else if (fv_query_is(req, "mode", "hang")) {
    block_forever();
  } else if (fv_query_is(req, "mode", "slow")) {
    sleep_ms(query_long(req, "ms", 1000));
    echo(req, resp);
  } else if (fv_query_is(req, "mode", "garbage")) {
    write_garbage();
    block_forever();
  } else if (fv_query_is(req, "mode", "oversize")) {
    write_oversize_header();
    block_forever();
  } else if (fv_query_is(req, "mode", "oom")) {
    eat_memory();
  } else if (fv_query_is(req, "mode", "stderr")) {
    spam_stderr();
    echo(req, resp);
  } else if (fv_query_is(req, "mode", "status")) {
    long code = query_long(req, "code", 200);
    if (code < 100 || code > 599) {
      write_raw_status(code);
      block_forever();
    }
    resp->status = (int)code;
  } else if (fv_query_is(req, "mode", "headers")) {
    fv_response_set_header(resp, "X-Test", "yes");
    echo(req, resp);
  } else {
    resp->status = 400;
    fv_response_set_header(resp, "Content-Type", "application/json");
    resp->body = k_unknown_mode;
    resp->body_len = sizeof k_unknown_mode - 1;
  }
  return 0;
}
