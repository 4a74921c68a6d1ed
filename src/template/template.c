/* libfaasvisor-template: what a template's runtime calls to turn a fork of itself into an
 * instance in a pooled sandbox (docs/templates.md). Loaded by runtimes/python with ctypes;
 * plain C so any runtime with a foreign-function interface can use it.
 *
 * A cold start, seen from the template (T, in its own sandbox, the host's pid namespace):
 *   T forks C1 (the runtime's own fork, so its at-fork hooks run);
 *   C1: fv_template_enter joins the stem's mount, net, ipc and uts namespaces and makes its
 *       children members of the stem's pid namespace (setns on its pid_for_children; the
 *       node opens the five and sends them with the request), connects to the stem's adoption socket, receives the
 *       instance's stdio and cgroup.procs files, moves itself into the instance's cgroups,
 *       enters the function's directory;
 *   C1 forks C2 (again the runtime's fork): C2 is born in the stem's pid namespace and
 *       cgroups; C1 calls fv_template_wait, which waits for C2 and reports its end to the
 *       stem (C2 is not the stem's child: its parent, C1, is outside the namespace);
 *   C2: fv_template_await_start waits for the cold start (until then the stem, C1 and C2
 *       are a "primed" sandbox, made ahead of demand); then fv_template_finish closes every inherited descriptor, drops the capabilities the
 *       template kept, and tells the stem its pid; the runtime then reseeds its random
 *       sources and says READY on fd 1 like any instance.
 * Functions return a negative errno on failure (and C1/C2 then exit: the stem's boot fails
 * and the node sees it). */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <linux/capability.h>

#include "template.h"
#include "../stem/adopt.h"
#include "../stem/seccomp.h"

#define EXPORT __attribute__((visibility("default")))

static int complain(const char *what) {
  int err = errno ? errno : EINVAL;
  fprintf(stderr, "faasvisor-template: %s: %s\n", what, strerror(err));
  return -err;
}

static int connect_to_stem(void) {
  struct sockaddr_un addr;
  memset(&addr, 0, sizeof addr);
  addr.sun_family = AF_UNIX;
  memcpy(addr.sun_path, ADOPT_SOCKET_NAME, sizeof ADOPT_SOCKET_NAME - 1);
  socklen_t len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + sizeof ADOPT_SOCKET_NAME - 1);
  /* A stem made on demand may still be setting up: retry until it listens. */
  for (int waited_ms = 0;; waited_ms += 1) {
    int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
    if (fd < 0) return complain("socket");
    if (connect(fd, (struct sockaddr *)&addr, len) == 0) return fd;
    int err = errno;
    close(fd);
    if ((err != ECONNREFUSED && err != ENOENT) || waited_ms >= ADOPT_TIMEOUT_MS) {
      errno = err;
      return complain("connect to the stem");
    }
    struct timespec pause = {0, 1000 * 1000};
    nanosleep(&pause, NULL);
  }
}

/* One message with up to `max_fds` descriptors (close-on-exec): returns its length (0 at end
 * of stream) or -errno; *nfds says how many came (any beyond max_fds are closed). */
#define MAX_PASSED_FDS (3 + ADOPT_MAX_CGROUPS)
static ssize_t recv_with_fds(int sock, void *buf, size_t len, int *fds, size_t max_fds, size_t *nfds) {
  union {
    char buf[CMSG_SPACE(sizeof(int) * MAX_PASSED_FDS)];
    struct cmsghdr align;
  } control;
  struct iovec iov = {buf, len};
  struct msghdr msg = {0};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control.buf;
  msg.msg_controllen = sizeof control.buf;
  ssize_t n;
  do {
    n = recvmsg(sock, &msg, MSG_CMSG_CLOEXEC);
  } while (n < 0 && errno == EINTR);
  *nfds = 0;
  if (n < 0) return -errno;
  struct cmsghdr *cm = CMSG_FIRSTHDR(&msg);
  if (cm != NULL && cm->cmsg_level == SOL_SOCKET && cm->cmsg_type == SCM_RIGHTS) {
    size_t count = (cm->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    const int *got = (const int *)CMSG_DATA(cm);
    for (size_t i = 0; i < count; ++i) {
      if (i < max_fds) fds[(*nfds)++] = got[i];
      else close(got[i]);
    }
  }
  return n;
}

static void close_fds(const int *fds, size_t n) {
  for (size_t i = 0; i < n; ++i) close(fds[i]);
}

/* Receives the stem's offer; moves us into the instance's cgroups; installs its stdio. */
static int take_offer(int sock) {
  struct adopt_offer offer;
  int fds[MAX_PASSED_FDS];
  size_t nfds;
  ssize_t n = recv_with_fds(sock, &offer, sizeof offer, fds, MAX_PASSED_FDS, &nfds);
  if (n != (ssize_t)sizeof offer || offer.magic != ADOPT_MAGIC || offer.cgroups > ADOPT_MAX_CGROUPS ||
      nfds != 3 + offer.cgroups) {
    close_fds(fds, nfds);
    errno = n < 0 ? (int)-n : EPROTO;
    return complain("the stem's offer");
  }
  size_t want = nfds;
  for (size_t i = 3; i < want; ++i) {
    ssize_t w;
    do {
      w = write(fds[i], "0", 1);
    } while (w < 0 && errno == EINTR);
    if (w != 1) return complain("join the instance's cgroup");
    close(fds[i]);
  }
  /* The instance's streams become fds 0-2 (dup2 clears close-on-exec). */
  for (int i = 0; i < 3; ++i) {
    if (dup2(fds[i], i) < 0) return complain("install the instance's stdio");
    close(fds[i]);
  }
  return 0;
}

/* In C1. Returns the adoption socket (keep it for fv_template_wait and fv_template_finish). */
/* `ns` holds the stem's namespaces, opened by the node: mount, net, ipc, uts and the pid
 * namespace its children are born in (FV_TEMPLATE_NAMESPACES descriptors, closed here). */
EXPORT int fv_template_enter(const int *ns, const char *directory) {
  static const int types[FV_TEMPLATE_NAMESPACES] = {CLONE_NEWNS, CLONE_NEWNET, CLONE_NEWIPC, CLONE_NEWUTS, CLONE_NEWPID};
  /* C2's end must reach us (the template ignores SIGCHLD to reap C1s automatically). */
  signal(SIGCHLD, SIG_DFL);
  for (int i = 0; i < FV_TEMPLATE_NAMESPACES; ++i) {
    if (setns(ns[i], types[i]) < 0) return complain("join the stem's namespaces");
    close(ns[i]);
  }
  int sock = connect_to_stem();
  if (sock < 0) return sock;
  int rc = take_offer(sock);
  if (rc < 0) return rc;
  if (chdir(directory) < 0) return complain("enter the function directory");
  return sock;
}

static int read_all(int fd, void *buf, size_t len) {
  char *p = buf;
  while (len > 0) {
    ssize_t n = read(fd, p, len);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return n == 0 ? -EPIPE : -errno;
    p += n;
    len -= (size_t)n;
  }
  return 0;
}

/* In C2: waits for the cold start (the node writes the start
 * message to the instance's stdin) and returns the instance's name's length (in `name`,
 * NUL-terminated; `capacity` > ADOPT_MAX_NAME), or a negative errno (-EPIPE: the node
 * discarded the sandbox unused). */
EXPORT int fv_template_await_start(char *name, int capacity) {
  uint32_t head[2];
  int rc = read_all(0, head, sizeof head);
  if (rc < 0) return rc;
  if (head[0] != ADOPT_START_MAGIC || head[1] > ADOPT_MAX_NAME || (int)head[1] >= capacity) {
    errno = EPROTO;
    return complain("the start message");
  }
  rc = read_all(0, name, head[1]);
  if (rc < 0) return rc;
  name[head[1]] = '\0';
  return (int)head[1];
}

static void close_all_but(int keep) {
  if (keep > 3) syscall(SYS_close_range, 3u, (unsigned)keep - 1, 0u);
  syscall(SYS_close_range, (unsigned)keep + 1, ~0u, 0u);
}

/* In C1, after forking C2 (the function): never returns. */
EXPORT void fv_template_wait(int function_pid, int sock) {
  close(0);
  close(1);
  close(2);
  close_all_but(sock);
  int status = 0;
  pid_t done;
  do {
    done = waitpid(function_pid, &status, 0);
  } while (done < 0 && errno == EINTR);
  if (done != function_pid) status = 127 << 8;
  send(sock, &status, sizeof status, MSG_NOSIGNAL);
  _exit(0);
}

/* In C2: the function, about to serve. */
EXPORT int fv_template_finish(int sock) {
  close_all_but(sock);
  /* What the template kept to get here; a stem-born function never had it. */
  for (int cap = 0; prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) == 0; cap++) {
  }
  if (errno != EINVAL) return complain("drop the capability bounding set");
  if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) < 0) return complain("clear ambient capabilities");
  struct __user_cap_header_struct head = {_LINUX_CAPABILITY_VERSION_3, 0};
  struct __user_cap_data_struct none[2];
  memset(none, 0, sizeof none);
  if (syscall(SYS_capset, &head, none) < 0) return complain("drop capabilities");
  /* The template's filter lets setns through; the function gets the stem-born one's too. */
  if (install_seccomp_filter(FV_SECCOMP_FUNCTION) < 0) return complain("install the seccomp filter");
  int32_t pid = (int32_t)getpid();
  if (send(sock, &pid, sizeof pid, MSG_NOSIGNAL) != (ssize_t)sizeof pid) return complain("report to the stem");
  close(sock);
  return 0;
}

/* The node's request: 'F' and the stem's namespaces (runtimes/python does the same). */
static int receive_fork(int ctl_fd, int *ns) {
  char message[64];
  size_t nfds;
  ssize_t n = recv_with_fds(ctl_fd, message, sizeof message, ns, FV_TEMPLATE_NAMESPACES, &nfds);
  if (n <= 0) return (int)n;
  if (message[0] != 'F' || nfds != FV_TEMPLATE_NAMESPACES) {
    close_fds(ns, nfds);
    errno = EPROTO;
    return complain("the node's request");
  }
  return 1;
}

EXPORT int fv_template_run(int ctl_fd, const char *runtime) {
  char ready[65] = "R";
  strncat(ready, runtime, sizeof ready - 2);
  signal(SIGCHLD, SIG_IGN);  /* C1s are reaped by the kernel; each waits for its own C2 */
  if (send(ctl_fd, ready, strlen(ready), MSG_NOSIGNAL) < 0) return complain("say ready");
  char directory[4096];
  if (getcwd(directory, sizeof directory) == NULL) return complain("getcwd");
  for (;;) {
    int ns[FV_TEMPLATE_NAMESPACES];
    int rc = receive_fork(ctl_fd, ns);
    if (rc == 0) return 1;
    if (rc < 0) {
      if (rc == -EPROTO) continue;
      return rc;
    }
    fflush(NULL);
    pid_t c1 = fork();
    if (c1 != 0) {
      for (int i = 0; i < FV_TEMPLATE_NAMESPACES; ++i) close(ns[i]);
      if (c1 < 0) complain("fork");
      continue;
    }
    close(ctl_fd);
    int sock = fv_template_enter(ns, directory);
    if (sock < 0) _exit(127);
    pid_t c2 = fork();
    if (c2 < 0) _exit(127);
    if (c2 != 0) fv_template_wait(c2, sock);
    char name[ADOPT_MAX_NAME + 1];
    if (fv_template_await_start(name, sizeof name) <= 0) _exit(0);
    if (fv_template_finish(sock) < 0) _exit(127);
    signal(SIGCHLD, SIG_DFL);
    setenv("FAASVISOR_INSTANCE", name, 1);
    setenv("FAASVISOR_FROM_TEMPLATE", "1", 1);
    return 0;
  }
}

