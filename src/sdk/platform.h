/* What the function SDK's instance loop (serve.c) needs from the platform it runs on.
 *
 * Two platforms implement it: a Linux process (function_main.c: fd 0 / fd 1, malloc,
 * stderr, exit) and the unikernel (unikernel/platform.c: a virtio-serial port or COM1, the
 * guest's heap, LOG frames, leaving QEMU). serve.c and helpers.c include only this header,
 * the public SDK headers and <string.h>, so both compile freestanding. */
#ifndef FAASVISOR_SDK_PLATFORM_H
#define FAASVISOR_SDK_PLATFORM_H

#include <stddef.h>

#include "faasvisor/function.h"

/* Exit codes of an instance (a process's status; a guest's isa-debug-exit value). */
#define FV_EXIT_OK 0
#define FV_EXIT_INIT 1     /* fv_init() failed */
#define FV_EXIT_PROTOCOL 2 /* the node broke the protocol, or the stream broke */

/* Reads until len bytes or end of stream. Returns the bytes read (< len only at end of
 * stream) or -1 on an I/O error. */
long fv_platform_read(void *buf, size_t len);

/* Reads at least `need` bytes and at most `cap` (need <= cap): what the stream already has,
 * so one call usually takes a whole frame. Returns the bytes read (< need only at end of
 * stream) or -1 on an I/O error. A platform that cannot tell what is waiting reads exactly
 * `need`. */
long fv_platform_read_at_least(void *buf, size_t need, size_t cap);

/* Writes all len bytes. Returns 0, or -1 on an I/O error. */
int fv_platform_write(const void *buf, size_t len);

/* Heap for frame buffers. fv_platform_alloc returns NULL when the memory is not there:
 * the loop then answers the invocation with an error instead of dying. */
void *fv_platform_alloc(size_t len);
void fv_platform_free(void *ptr);

/* One diagnostic line "faasvisor function: context: detail" (detail may be NULL). A
 * process writes it to stderr; a guest, whose only stream is the protocol's, sends a LOG
 * frame. */
void fv_platform_log(const char *context, const char *detail);

/* Why the last fv_platform_read/fv_platform_write failed (strerror(errno) in a process). */
const char *fv_platform_io_error(void);

/* Logs context and detail like fv_platform_log, then ends the instance with code. */
_Noreturn void fv_platform_exit(int code, const char *context, const char *detail);

/* fv_secret()'s source: a Linux process reads /var/openfaas/secrets/NAME (the node put the
 * files there); a guest without files calls fv_serve_secret. name is valid (checked by
 * fv_secret). NULL if there is no such secret. */
const void *fv_platform_secret(const char *name, size_t *len);

/* The function's secrets over the protocol: the first call writes GET_SECRETS and reads the
 * node's SECRETS frame (kept until exit); later calls look in it. Only between frames: in
 * fv_init() or handle(). */
const void *fv_serve_secret(const char *name, size_t *len);

/* The instance loop shared by every platform: fv_init(), READY, then REQUEST -> handle() ->
 * RESPONSE until end of stream or SHUTDOWN. Returns FV_EXIT_OK; faults do not return. */
int fv_serve(void);

#endif
