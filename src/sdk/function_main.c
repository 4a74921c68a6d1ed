/* main() for C/C++ functions run as a Linux process: the instance protocol (serve.c) on
 * fd 0 / fd 1, frame buffers from malloc, diagnostics on stderr. The unikernel supplies the
 * same platform hooks for a guest (unikernel/platform.c). */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "platform.h"
#include "../template/template.h"

/* ---- transport ---- */

long fv_platform_read_at_least(void *buf, size_t need, size_t cap) {
  size_t done = 0;
  while (done < need) {
    ssize_t n = read(STDIN_FILENO, (char *)buf + done, cap - done);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return -1;
    if (n == 0) break;
    done += (size_t)n;
  }
  return (long)done;
}

long fv_platform_read(void *buf, size_t len) { return fv_platform_read_at_least(buf, len, len); }

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

/* ---- secrets: the files the node put in /var/openfaas/secrets ---- */

struct secret_file {
  struct secret_file *next;
  size_t len;
  char *data;
  char name[FV_SECRET_NAME_MAX + 1];
};
static struct secret_file *g_secret_files;

/* Read once per name and kept, so a returned pointer stays valid (the files do not change
 * during the instance's life). */
const void *fv_platform_secret(const char *name, size_t *len) {
  for (struct secret_file *f = g_secret_files; f != NULL; f = f->next)
    if (strcmp(f->name, name) == 0) {
      *len = f->len;
      return f->data;
    }
  char path[sizeof "/var/openfaas/secrets/" + FV_SECRET_NAME_MAX];
  snprintf(path, sizeof path, "/var/openfaas/secrets/%s", name);
  int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
  if (fd < 0) return NULL;
  struct secret_file *f = calloc(1, sizeof *f);
  size_t cap = 4096;
  char *data = malloc(cap);
  for (;;) {
    if (f == NULL || data == NULL) break;
    ssize_t n = read(fd, data + f->len, cap - f->len);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      if (n < 0) f->len = 0, free(data), data = NULL;
      break;
    }
    f->len += (size_t)n;
    if (f->len == cap && cap <= FV_SECRET_VALUE_MAX) {
      char *bigger = realloc(data, cap * 2);
      if (bigger == NULL) free(data);
      data = bigger;
      cap *= 2;
    }
  }
  close(fd);
  if (f == NULL || data == NULL) {
    free(f);
    fv_platform_log("cannot read the secret file", name);
    return NULL;
  }
  f->data = data;
  memcpy(f->name, name, strlen(name) + 1);
  f->next = g_secret_files;
  g_secret_files = f;
  *len = f->len;
  return f->data;
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
  /* A template (docs/templates.md): started once per definition, forked per cold start;
   * only the forks return here, to serve. */
  const char *ctl = getenv("FAASVISOR_TEMPLATE_FD");
  if (ctl != NULL) {
    unsetenv("FAASVISOR_TEMPLATE_FD");
    unsetenv("FAASVISOR_TEMPLATE_LIB");
    int rc = fv_template_run(atoi(ctl), "c");
    if (rc != 0) return rc > 0 ? 0 : 1;
  }
  return fv_serve();
}
