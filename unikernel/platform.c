/* The function SDK's platform hooks (src/sdk/platform.h) for the guest: the protocol on
 * the virtio console when QEMU gives one (virtio_console.h), else on COM1; frame buffers
 * from the heap, diagnostics as LOG frames, exits that end the VM. */
#include "platform.h"

#include "kernel.h"
#include "serial.h"
#include "virtio_console.h"

/* In .data, not BSS: with too little RAM the image's BSS lies past its end, where writes
 * are lost, and the report saying so must still know which stream is which. */
static int on_virtio __attribute__((section(".data")));

void uk_stream_probe(const char *cmdline, size_t len) { on_virtio = uk_vconsole_probe(cmdline, len); }

const char *uk_stream_start(void) { return on_virtio ? uk_vconsole_start() : NULL; }

int uk_stream_is_virtio(void) { return on_virtio; }

/* Neither stream has an end the guest sees; SHUTDOWN ends the guest. */
long fv_platform_read(void *buf, size_t len) {
  if (on_virtio)
    uk_vconsole_read(buf, len);
  else
    serial_read(buf, len);
  return (long)len;
}

/* The port cannot say what is waiting: exactly `need` bytes. */
long fv_platform_read_at_least(void *buf, size_t need, size_t cap) {
  (void)cap;
  return fv_platform_read(buf, need);
}

int fv_platform_write(const void *buf, size_t len) {
  if (on_virtio)
    uk_vconsole_write(buf, len);
  else
    serial_write(buf, len);
  return 0;
}

const char *fv_platform_io_error(void) { return on_virtio ? "virtio console error" : "serial port error"; }

void *fv_platform_alloc(size_t len) { return uk_heap_alloc(&uk_heap, len); }

void fv_platform_free(void *ptr) {
  if (uk_heap_free(&uk_heap, ptr) != 0)
    fv_platform_exit(UK_EXIT_CRASH, "heap", "free of a pointer that is not a live allocation");
}

/* No files here: the node sends the secrets over the protocol when first asked. */
const void *fv_platform_secret(const char *name, size_t *len) { return fv_serve_secret(name, len); }

void fv_platform_log(const char *context, const char *detail) {
  const char *parts[] = {"faasvisor function: ", context, ": ", detail};
  uk_log(parts, detail != NULL ? 4 : 2);
}

void fv_platform_exit(int code, const char *context, const char *detail) {
  fv_platform_log(context, detail);
  uk_exit(code);
}
