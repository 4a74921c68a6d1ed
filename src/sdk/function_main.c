/* main() for C/C++ functions run as a Linux process: the instance protocol (serve.c) on
 * fd 0 / fd 1, frame buffers from malloc, diagnostics on stderr. The unikernel supplies the
 * same platform hooks for a guest (unikernel/platform.c). */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "platform.h"

/* ---- transport ---- */

long fv_platform_read(void *buf, size_t len) {
  size_t done = 0;
  while (done < len) {
    ssize_t n = read(STDIN_FILENO, (char *)buf + done, len - done);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return -1;
    if (n == 0) break;
    done += (size_t)n;
  }
  return (long)done;
}

/* EPIPE once the node is gone: SIGPIPE is ignored so that is an error, not a silent death. */
int fv_platform_write(const void *buf, size_t len) {
  size_t done = 0;
  while (done < len) {
    ssize_t n = write(STDOUT_FILENO, (const char *)buf + done, len - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return -1;
    done += (size_t)n;
  }
  return 0;
}

const char *fv_platform_io_error(void) { return strerror(errno); }

/* ---- heap, diagnostics, exit ---- */

void *fv_platform_alloc(size_t len) { return malloc(len); }

void fv_platform_free(void *ptr) { free(ptr); }

void fv_platform_log(const char *context, const char *detail) {
  if (detail != NULL)
    fprintf(stderr, "faasvisor function: %s: %s\n", context, detail);
  else
    fprintf(stderr, "faasvisor function: %s\n", context);
}

void fv_platform_exit(int code, const char *context, const char *detail) {
  fv_platform_log(context, detail);
  exit(code);
}

/* ---- signals ---- */

static void on_term(int sig) {
  (void)sig;
  _exit(0);
}

/* The instance is pid 1 of its pid namespace, where the kernel drops SIGTERM/SIGINT unless
 * a handler is installed; without this the node would always wait for SIGKILL. */
static void install_signals(void) {
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_term;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGTERM, &sa, NULL);
  sigaction(SIGINT, &sa, NULL);
  signal(SIGPIPE, SIG_IGN);
}

int main(void) {
  install_signals();
  return fv_serve();
}
