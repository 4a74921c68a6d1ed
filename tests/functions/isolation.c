/* isolation: a test function that reports what its sandbox lets it see and do, picked per
 * request by ?mode=...
 *
 *   report (default)  one JSON object:
 *     "pids"          processes visible in /proc (a private pid namespace: a handful)
 *     "uid"           the real uid it runs as
 *     "root_write"    creating /isolation-probe: "ok" or the errno's name (EROFS expected)
 *     "tmp_write"     creating, writing and removing /tmp/isolation-probe: "ok" or errno
 *     "interfaces"    names of the network interfaces (only "lo" expected)
 *     "connect"       a TCP connect to 192.0.2.1:80 (TEST-NET-1) that waits at most
 *                     200 ms: "ok", "timeout" or the errno's name (ENETUNREACH expected)
 *     "cap_eff", "cap_bnd"   CapEff and CapBnd of /proc/self/status (hex)
 *     "no_new_privs", "seccomp"   the NoNewPrivs and Seccomp fields (-1 when absent)
 *     "ptrace_me"     ptrace(PTRACE_TRACEME) in a child: "ok" or errno (the default
 *                     seccomp profile denies ptrace)
 *     "unshare_user"  unshare(CLONE_NEWUSER) in a child: "ok" or errno (denied by the
 *                     seccomp filter of every backend)
 *     "mount", "bpf", "io_uring_setup", "clone_newns"   mount(2) of a tmpfs, bpf(2)
 *                     BPF_MAP_CREATE, io_uring_setup(2) and clone(2) with CLONE_NEWNS, each
 *                     in a child: "ok" or errno
 *     "parent_entries" the names in the function directory's parent, as a list (a function
 *                     under /tmp must see only its own directory there)
 *   alloc&mib=N       allocate N MiB and touch every page, then answer "allocated N MiB"
 *   ignoreterm        ignore SIGTERM, then never answer (only SIGKILL ends it)
 *
 * Fields come from the function's own view, so the same binary checks every backend. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <net/if.h>
#include <netinet/in.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/ptrace.h>
#include <sys/syscall.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "faasvisor/function.h"

static char g_out[8192];
static size_t g_len;

static void put(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void put(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(g_out + g_len, sizeof g_out - g_len, fmt, ap);
  va_end(ap);
  if (n > 0) g_len += (size_t)n < sizeof g_out - g_len ? (size_t)n : sizeof g_out - g_len - 1;
}

static const char *err_name(int err) {
  const char *name = strerrorname_np(err);
  return name != NULL ? name : "unknown";
}

static int count_pids(void) {
  DIR *d = opendir("/proc");
  if (d == NULL) return -1;
  int n = 0;
  struct dirent *e;
  while ((e = readdir(d)) != NULL)
    if (e->d_name[0] >= '1' && e->d_name[0] <= '9') n++;
  closedir(d);
  return n;
}

static const char *try_create(const char *path) {
  int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) return err_name(errno);
  const char *result = write(fd, "probe", 5) == 5 ? "ok" : err_name(errno);
  close(fd);
  unlink(path);
  return result;
}

static void put_interfaces(void) {
  put("\"interfaces\":[");
  struct if_nameindex *ifs = if_nameindex();
  if (ifs != NULL) {
    for (struct if_nameindex *i = ifs; i->if_index != 0; i++)
      put("%s\"%s\"", i == ifs ? "" : ",", i->if_name);
    if_freenameindex(ifs);
  }
  put("],");
}

static const char *try_connect(void) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return err_name(errno);
  struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons(80)};
  inet_pton(AF_INET, "192.0.2.1", &addr.sin_addr);
  const char *result = "ok";
  if (connect(fd, (struct sockaddr *)&addr, sizeof addr) < 0) {
    if (errno != EINPROGRESS) {
      result = err_name(errno);
    } else {
      struct pollfd p = {.fd = fd, .events = POLLOUT};
      if (poll(&p, 1, 200) <= 0) {
        result = "timeout";
      } else {
        int err = 0;
        socklen_t len = sizeof err;
        getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len);
        result = err == 0 ? "ok" : err_name(err);
      }
    }
  }
  close(fd);
  return result;
}

/* The value after "Name:" in /proc/self/status, copied into buf ("" when absent). */
static const char *status_field(const char *name, char *buf, size_t size) {
  buf[0] = '\0';
  FILE *f = fopen("/proc/self/status", "re");
  if (f == NULL) return buf;
  char line[256];
  size_t nlen = strlen(name);
  while (fgets(line, sizeof line, f) != NULL) {
    if (strncmp(line, name, nlen) == 0 && line[nlen] == ':') {
      char *v = line + nlen + 1;
      while (*v == ' ' || *v == '\t') v++;
      v[strcspn(v, "\n")] = '\0';
      snprintf(buf, size, "%s", v);
      break;
    }
  }
  fclose(f);
  return buf;
}

static long status_number(const char *name) {
  char buf[64];
  status_field(name, buf, sizeof buf);
  return buf[0] >= '0' && buf[0] <= '9' ? strtol(buf, NULL, 10) : -1;
}

/* Runs a probe in a child process, so what it changes (a new user namespace, a tracer)
 * never touches the function itself; the child exits with the probe's errno (0: success). */
static const char *in_child(int (*probe)(void)) {
  pid_t pid = fork();
  if (pid < 0) return err_name(errno);
  if (pid == 0) _exit(probe() == 0 ? 0 : errno & 0xff);
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (!WIFEXITED(status)) return "killed";
  return WEXITSTATUS(status) == 0 ? "ok" : err_name(WEXITSTATUS(status));
}

static int probe_ptrace(void) { return (int)ptrace(PTRACE_TRACEME, 0, NULL, NULL); }
static int probe_unshare(void) { return unshare(CLONE_NEWUSER); }
static int probe_mount(void) { return mount("none", "/tmp", "tmpfs", 0, NULL); }
static int probe_bpf(void) {
  unsigned int attr[32] = {2 /* BPF_MAP_TYPE_ARRAY */, 4, 4, 1};  /* key, value size, entries */
  return syscall(SYS_bpf, 0 /* BPF_MAP_CREATE */, attr, sizeof attr) >= 0 ? 0 : -1;
}
static int probe_io_uring(void) {
  unsigned char params[120] = {0};  /* struct io_uring_params */
  return syscall(SYS_io_uring_setup, 1, params) >= 0 ? 0 : -1;
}
static int probe_clone_newns(void) {
  /* The raw syscall: glibc's wrappers may take clone3, which a filter cannot inspect. */
  long pid = syscall(SYS_clone, CLONE_NEWNS | SIGCHLD, NULL, NULL, NULL, 0);
  if (pid == 0) _exit(0);
  if (pid < 0) return -1;
  waitpid((pid_t)pid, NULL, 0);
  return 0;
}

static void put_parent_entries(void) {
  put("\"parent_entries\":[");
  DIR *d = opendir("..");
  int first = 1;
  if (d != NULL) {
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
      if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
      if (g_len > sizeof g_out - 512) break; /* keep room for the rest of the report */
      put("%s\"%s\"", first ? "" : ",", e->d_name);
      first = 0;
    }
    closedir(d);
  }
  put("],");
}

static void report(void) {
  char buf[64];
  g_len = 0;
  put("{\"pids\":%d,\"uid\":%u,", count_pids(), (unsigned)getuid());
  put("\"root_write\":\"%s\",", try_create("/isolation-probe"));
  put("\"tmp_write\":\"%s\",", try_create("/tmp/isolation-probe"));
  put_interfaces();
  put("\"connect\":\"%s\",", try_connect());
  put("\"cap_eff\":\"%s\",", status_field("CapEff", buf, sizeof buf));
  put("\"cap_bnd\":\"%s\",", status_field("CapBnd", buf, sizeof buf));
  put("\"no_new_privs\":%ld,\"seccomp\":%ld,", status_number("NoNewPrivs"), status_number("Seccomp"));
  put("\"ptrace_me\":\"%s\",", in_child(probe_ptrace));
  put("\"mount\":\"%s\",", in_child(probe_mount));
  put("\"bpf\":\"%s\",", in_child(probe_bpf));
  put("\"io_uring_setup\":\"%s\",", in_child(probe_io_uring));
  put("\"clone_newns\":\"%s\",", in_child(probe_clone_newns));
  put_parent_entries();
  put("\"unshare_user\":\"%s\"}", in_child(probe_unshare));
}

static long query_long(const struct fv_request *req, const char *key, long fallback) {
  size_t len = 0;
  const char *v = fv_query_get(req, key, &len);
  if (v == NULL || len == 0 || len > 6) return fallback;
  long n = 0;
  for (size_t i = 0; i < len; i++) {
    if (v[i] < '0' || v[i] > '9') return fallback;
    n = n * 10 + (v[i] - '0');
  }
  return n;
}

static void allocate(long mib) {
  const size_t chunk = 1u << 20;
  for (long i = 0; i < mib; i++) {
    char *p = malloc(chunk);
    if (p == NULL) {
      fprintf(stderr, "isolation: malloc failed after %ld MiB\n", i);
      return;
    }
    memset(p, 0x5a, chunk); /* touched: charged to the memory cgroup */
  }
  g_len = (size_t)snprintf(g_out, sizeof g_out, "allocated %ld MiB", mib);
}

int handle(const struct fv_request *req, struct fv_response *resp) {
  g_len = 0;
  if (fv_query_get(req, "mode", NULL) == NULL || fv_query_is(req, "mode", "report")) {
    report();
    fv_response_set_header(resp, "Content-Type", "application/json");
  } else if (fv_query_is(req, "mode", "ignoreterm")) {
    signal(SIGTERM, SIG_IGN);
    for (;;) pause();
  } else if (fv_query_is(req, "mode", "alloc")) {
    allocate(query_long(req, "mib", 1));
  } else {
    resp->status = 400;
    g_len = (size_t)snprintf(g_out, sizeof g_out, "{\"error\":\"unknown mode\"}");
  }
  resp->body = g_out;
  resp->body_len = g_len;
  return 0;
}
