/* secrets: a test function that shows what it gets of its secrets (docs/secrets.md), on
 * every backend: built as a static Linux program (process, containers, microVM initramfs)
 * and as a unikernel (BUILD/unikernel/secrets.uk). Per request, ?name=NAME and ?mode=...:
 *
 *   value (default)  the secret's bytes from fv_secret(NAME) as the body; 404 if it has none
 *   stat             Linux only: JSON about /var/openfaas/secrets/NAME as the function sees it:
 *                    "mode" (octal), "uid", "size", "open_write" (opening it for writing:
 *                    "ok" or the errno's name), "create" (creating a file beside it), and
 *                    "list" (the directory's entries)
 */
#if __STDC_HOSTED__
#define _GNU_SOURCE /* strerrorname_np */
#endif
#include <stddef.h>
#include <string.h>

#include "faasvisor/function.h"

#if __STDC_HOSTED__
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>

static char g_out[8192];

static const char *attempt(int fd) {
  if (fd < 0) return strerrorname_np(errno);
  close(fd);
  return "ok";
}

static int stat_secret(const char *name, struct fv_response *resp) {
  char path[512];
  snprintf(path, sizeof path, "/var/openfaas/secrets/%s", name);
  struct stat st;
  if (stat(path, &st) < 0) {
    resp->status = 404;
    snprintf(g_out, sizeof g_out, "{\"error\":\"stat: %s\"}", strerrorname_np(errno));
  } else {
    const char *open_write = attempt(open(path, O_WRONLY | O_CLOEXEC));
    const char *create = attempt(open("/var/openfaas/secrets/new-file", O_WRONLY | O_CREAT | O_CLOEXEC, 0600));
    int n = snprintf(g_out, sizeof g_out,
                     "{\"mode\":\"%04o\",\"uid\":%u,\"size\":%lld,\"open_write\":\"%s\",\"create\":\"%s\",\"list\":[",
                     (unsigned)(st.st_mode & 07777), (unsigned)st.st_uid, (long long)st.st_size, open_write, create);
    DIR *d = opendir("/var/openfaas/secrets");
    int first = 1;
    for (struct dirent *e; d != NULL && (e = readdir(d)) != NULL;) {
      if (e->d_name[0] == '.' || n < 0 || (size_t)n >= sizeof g_out - 300) continue;
      n += snprintf(g_out + n, sizeof g_out - (size_t)n, "%s\"%s\"", first ? "" : ",", e->d_name);
      first = 0;
    }
    if (d != NULL) closedir(d);
    if (n >= 0 && (size_t)n < sizeof g_out - 4) snprintf(g_out + n, sizeof g_out - (size_t)n, "]}");
  }
  fv_response_set_header(resp, "Content-Type", "application/json");
  resp->body = g_out;
  resp->body_len = strlen(g_out);
  return 0;
}
#endif

static const char k_none[] = "{\"error\":\"no such secret\"}";

int handle(const struct fv_request *req, struct fv_response *resp) {
  static char name[FV_SECRET_NAME_MAX + 1];
  size_t len = 0;
  const char *q = fv_query_get(req, "name", &len);
  if (q == NULL || len > FV_SECRET_NAME_MAX) len = 0;
  if (q != NULL) memcpy(name, q, len);
  name[len] = '\0';
#if __STDC_HOSTED__
  if (fv_query_is(req, "mode", "stat")) return stat_secret(name, resp);
#endif
  size_t value_len = 0;
  const void *value = fv_secret(name, &value_len);
  if (value == NULL) {
    resp->status = 404;
    resp->body = k_none;
    resp->body_len = sizeof k_none - 1;
    return 0;
  }
  resp->body = value;
  resp->body_len = value_len;
  return 0;
}
