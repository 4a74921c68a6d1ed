/* faasvisor-stem: a pre-made sandbox waiting for its function.
 *
 * The node starts this program with posix_spawn (a vfork: it costs the node's event loop
 * about a hundred microseconds) and everything slow happens here, off the loop, on any core:
 *   outer stem (child of the node, holds no stream): joins the instance's cgroups through
 *     the cgroup.procs files passed as fds 3.., unshares the mount, ipc, uts, net and pid
 *     namespaces, forks the inner stem, then only waits for it and mirrors its exit, so the
 *     node's pidfd on the outer stem sees the instance end;
 *   inner stem (pid 1 of the new pid namespace): makes the host read-only with private /tmp
 *     and /proc, brings up loopback, and waits for GO (below).
 *
 * The node starts stems ahead of demand: each is already in its own namespaces, with a
 * read-only view of the host, private /tmp and /proc, and its own cgroup (joining a cgroup
 * v1 hierarchy can take milliseconds: the kernel waits for an RCU grace period). On a cold
 * start the node writes one GO message to the stem's stdin; the stem then becomes the
 * function: it sizes /tmp, enters the function's directory, drops to the function's user,
 * sets no_new_privs and execs the command. stdin/stdout/stderr stay the instance's streams.
 *
 * GO message (little-endian, strings are u32 length + bytes, no NUL):
 *   u32 magic 0x4f475646 ("FVGO"), u32 payload length, then:
 *   u32 uid, u32 gid, u64 tmp_size_bytes, string directory,
 *   u32 argc, argc x string, u32 envc, envc x string
 * Any failure is written to stderr and the stem exits 127: the node sees a failed boot.
 *
 * The stem stays as the namespace's init (pid 1) and runs the function as its child. The
 * kernel ignores default-action signals sent to a pid namespace's init, even its own
 * abort(); as a child the function gets ordinary signal semantics, and orphans it leaves
 * are reaped. The stem forwards SIGTERM/SIGINT to the function and exits with its status
 * (128 + signal for a signal, which it also names on stderr). */
#define _GNU_SOURCE
#include <errno.h>
#include <grp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <net/if.h>
#include <sched.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#define GO_MAGIC 0x4f475646u
#define GO_MAX_BYTES (256u * 1024u)
#define GO_MAX_ITEMS 1024u

static void fail(const char *what) {
  fprintf(stderr, "faasvisor-stem: %s: %s\n", what, errno ? strerror(errno) : "invalid");
  _exit(127);
}

static void read_exact(void *buf, size_t len) {
  char *p = buf;
  while (len > 0) {
    ssize_t n = read(0, p, len);
    if (n < 0 && errno == EINTR) continue;
    if (n == 0) _exit(0); /* the node closed us before use: nothing to do */
    if (n < 0) fail("read GO message");
    p += n;
    len -= (size_t)n;
  }
}

struct cursor {
  const unsigned char *p, *end;
};

static uint32_t get_u32(struct cursor *c) {
  if (c->end - c->p < 4) { errno = 0; fail("GO message truncated"); }
  uint32_t v = (uint32_t)c->p[0] | (uint32_t)c->p[1] << 8 | (uint32_t)c->p[2] << 16 | (uint32_t)c->p[3] << 24;
  c->p += 4;
  return v;
}

/* Returns a NUL-terminated copy (the message buffer is ours to keep until exec). */
static char *get_str(struct cursor *c) {
  uint32_t len = get_u32(c);
  if ((size_t)(c->end - c->p) < len) { errno = 0; fail("GO message string truncated"); }
  char *s = malloc((size_t)len + 1);
  if (!s) fail("malloc");
  memcpy(s, c->p, len);
  s[len] = '\0';
  if (strlen(s) != len) { errno = 0; fail("GO message string contains NUL"); }
  c->p += len;
  return s;
}

static char **get_list(struct cursor *c) {
  uint32_t n = get_u32(c);
  if (n > GO_MAX_ITEMS) { errno = 0; fail("GO message list too long"); }
  char **list = calloc((size_t)n + 1, sizeof *list);
  if (!list) fail("calloc");
  for (uint32_t i = 0; i < n; ++i) list[i] = get_str(c);
  return list;
}

static volatile pid_t g_function_pid;
static uint32_t g_uid, g_gid;
static int g_host_tmp = -1;
static void exit_like(int status, const char *who) __attribute__((noreturn));

static void forward(int signo) {
  if (g_function_pid > 0) kill(g_function_pid, signo);
}

static void kill_sandbox(int signo) {
  (void)signo;
  if (g_function_pid > 0) kill(g_function_pid, SIGKILL);
}

/* The parent's half, shared by the outer stem (child: the sandbox's init) and the init
 * (child: the function): give the child the protocol streams (without our copies, its
 * closing them is seen by the node as end of stream), forward SIGTERM/SIGINT/SIGHUP, take
 * SIGUSR2 as "kill it now" (killing only the parent would leave the child to die orphaned,
 * reaped by whatever init the host has: in a container, possibly none), reap everything,
 * and exit as the child did. `old` is the signal mask to restore; all signals are blocked
 * on entry so no handler runs before g_function_pid is set. */
static void supervise(pid_t child, const sigset_t *old, const char *who) __attribute__((noreturn));
static void supervise(pid_t child, const sigset_t *old, const char *who) {
  g_function_pid = child;
  close(0);
  close(1);
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = forward;
  sigaction(SIGTERM, &sa, NULL);
  sigaction(SIGINT, &sa, NULL);
  sigaction(SIGHUP, &sa, NULL);
  sa.sa_handler = kill_sandbox;
  sigaction(SIGUSR2, &sa, NULL);
  sigprocmask(SIG_SETMASK, old, NULL);
  for (;;) {
    int status = 0;
    pid_t done = wait(&status);
    if (done < 0) {
      if (errno == EINTR) continue;
      _exit(127);
    }
    if (done == child) exit_like(status, who); /* others are orphans the function left */
  }
}

/* Runs the function as our child and mirrors its end. */
static int run_as_init(char **argv, char **envp) {
  sigset_t all, old;
  sigfillset(&all);
  sigprocmask(SIG_BLOCK, &all, &old);
  pid_t pid = fork();
  if (pid < 0) fail("fork");
  if (pid == 0) {
    /* Only the function drops to its user: the init keeps its parent-death signal, which
     * a change of credentials would clear. */
    if (g_uid != 0) {
      if (setgroups(0, NULL) < 0) fail("setgroups");
      if (setresgid(g_gid, g_gid, g_gid) < 0) fail("setgid");
      if (setresuid(g_uid, g_uid, g_uid) < 0) fail("setuid");
    }
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0) fail("no_new_privs");
    sigprocmask(SIG_SETMASK, &old, NULL);
    signal(SIGPIPE, SIG_DFL);
    execvpe(argv[0], argv, envp);
    fail(argv[0]);
  }
  supervise(pid, &old, "the function");
}

#ifndef MOUNT_ATTR_RDONLY
#define MOUNT_ATTR_RDONLY 0x00000001
#endif
#ifndef AT_RECURSIVE
#define AT_RECURSIVE 0x8000
#endif
struct mount_attr_arg {
  uint64_t attr_set, attr_clr, propagation, userns_fd;
};

/* Inner stem: the host read-only, private /tmp and /proc, loopback up. */
static void setup_sandbox(void) {
  /* Our mounts must not propagate back to the host. */
  if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0) fail("make / private");
  /* A fresh /proc for the new pid namespace: the function sees only its own processes. */
  if (mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL) < 0) fail("mount /proc");
  /* The host's /tmp is about to be covered by the private one; a function whose directory
   * lives there (a checkout under /tmp) is still reached through this handle. */
  g_host_tmp = open("/tmp", O_PATH | O_DIRECTORY | O_CLOEXEC);
  if (mount("tmpfs", "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, "size=64m,mode=1777") < 0) fail("mount /tmp");
  /* Everything read-only, recursively, then /tmp writable again. mount_setattr changes this
   * namespace's copies of the mounts only. */
  struct mount_attr_arg ro = {MOUNT_ATTR_RDONLY, 0, 0, 0};
  if (syscall(SYS_mount_setattr, AT_FDCWD, "/", AT_RECURSIVE, &ro, sizeof ro) < 0)
    fail("mount_setattr / read-only");
  struct mount_attr_arg rw = {0, MOUNT_ATTR_RDONLY, 0, 0};
  if (syscall(SYS_mount_setattr, AT_FDCWD, "/tmp", 0, &rw, sizeof rw) < 0)
    fail("mount_setattr /tmp read-write");
  int sock = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (sock < 0) fail("socket for loopback");
  struct ifreq req;
  memset(&req, 0, sizeof req);
  strncpy(req.ifr_name, "lo", IFNAMSIZ - 1);
  if (ioctl(sock, SIOCGIFFLAGS, &req) < 0) fail("SIOCGIFFLAGS lo");
  req.ifr_flags = (short)(req.ifr_flags | IFF_UP | IFF_RUNNING);
  if (ioctl(sock, SIOCSIFFLAGS, &req) < 0) fail("SIOCSIFFLAGS lo");
  close(sock);
  sethostname("faasvisor", 9);
}

/* A function directory under the host's /tmp (say, a checkout in /tmp/ci) is hidden by the
 * private /tmp. Its top-level entry is bound back, read-only, like the rest of the host: the
 * function can reach the files beside its directory (a runtime at ../../runtimes) as it
 * would anywhere else. */
static void expose_host_tmp_entry(const char *relative) {
  char name[256];
  size_t n = strcspn(relative, "/");
  if (n == 0 || n >= sizeof name || g_host_tmp < 0) { errno = ENOENT; fail("enter the function directory"); }
  memcpy(name, relative, n);
  name[n] = '\0';
  int src = openat(g_host_tmp, name, O_PATH | O_DIRECTORY | O_CLOEXEC);
  if (src < 0) fail("find the function directory under the host's /tmp");
  char target[300], source[64];
  snprintf(target, sizeof target, "/tmp/%s", name);
  snprintf(source, sizeof source, "/proc/self/fd/%d", src);
  if (mkdir(target, 0755) < 0 && errno != EEXIST) fail("make a mount point in /tmp");
  if (mount(source, target, NULL, MS_BIND | MS_REC, NULL) < 0) fail("bind the host's /tmp entry");
  if (mount(NULL, target, NULL, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV, NULL) < 0)
    fail("make the host's /tmp entry read-only");
  close(src);
}

static void exit_like(int status, const char *who) {
  if (WIFEXITED(status)) _exit(WEXITSTATUS(status));
  int sig = WTERMSIG(status);
  const char *name = sigabbrev_np(sig);
  fprintf(stderr, "faasvisor-stem: %s was killed by signal SIG%s\n", who, name ? name : "?");
  _exit(128 + sig);
}

/* Outer stem: join the cgroups, make the namespaces, start the inner stem, mirror it. */
static void outer(int cgroup_fds, pid_t node_pid) {
  /* The instance dies with the node, whatever the node died of. */
  prctl(PR_SET_PDEATHSIG, SIGKILL);
  if (getppid() != node_pid) _exit(0);
  for (int i = 0; i < cgroup_fds; ++i) {
    ssize_t n;
    do {
      n = write(3 + i, "0", 1);
    } while (n < 0 && errno == EINTR);
    if (n != 1) fail("join the instance's cgroup");
    close(3 + i);
  }
  if (unshare(CLONE_NEWNS | CLONE_NEWIPC | CLONE_NEWUTS | CLONE_NEWNET | CLONE_NEWPID) < 0)
    fail("unshare namespaces");
  sigset_t all, old;
  sigfillset(&all);
  sigprocmask(SIG_BLOCK, &all, &old);
  pid_t inner = fork();
  if (inner < 0) fail("fork the sandbox init");
  if (inner == 0) {
    /* pid 1 of the new namespace. If the outer stem dies, so does the sandbox. */
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    sigprocmask(SIG_SETMASK, &old, NULL);
    return;
  }
  supervise(inner, &old, "the sandbox");
}

int main(int argc, char **argv) {
  /* argv: faasvisor-stem CGROUP_FDS NODE_PID */
  if (argc != 3) { errno = 0; fail("usage: faasvisor-stem CGROUP_FDS NODE_PID (started by faasvisord)"); }
  outer(atoi(argv[1]), (pid_t)atoi(argv[2]));
  setup_sandbox();
  unsigned char head[8];
  read_exact(head, sizeof head);
  struct cursor hc = {head, head + 8};
  if (get_u32(&hc) != GO_MAGIC) { errno = 0; fail("bad GO magic"); }
  uint32_t len = get_u32(&hc);
  if (len > GO_MAX_BYTES) { errno = 0; fail("GO message too large"); }
  unsigned char *msg = malloc(len ? len : 1);
  if (!msg) fail("malloc");
  read_exact(msg, len);
  struct cursor c = {msg, msg + len};
  uint32_t uid = get_u32(&c);
  uint32_t gid = get_u32(&c);
  uint64_t tmp_size = get_u32(&c);
  tmp_size |= (uint64_t)get_u32(&c) << 32;
  char *dir = get_str(&c);
  char **fn_argv = get_list(&c);
  char **envp = get_list(&c);
  if (c.p != c.end) { errno = 0; fail("GO message has trailing bytes"); }
  if (fn_argv[0] == NULL) { errno = 0; fail("empty command"); }

  if (tmp_size > 0) {
    char opts[64];
    snprintf(opts, sizeof opts, "size=%llu,mode=1777", (unsigned long long)tmp_size);
    if (mount(NULL, "/tmp", NULL, MS_REMOUNT | MS_NOSUID | MS_NODEV, opts) < 0) fail("resize /tmp");
  }
  if (strncmp(dir, "/tmp/", 5) == 0) expose_host_tmp_entry(dir + 5);
  if (g_host_tmp >= 0) close(g_host_tmp);
  if (chdir(dir) < 0) fail("enter the function directory");
  g_uid = uid;
  g_gid = gid;
  return run_as_init(fn_argv, envp);
}
