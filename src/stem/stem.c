/* faasvisor-stem: a pre-made sandbox waiting for its function.
 *
 * The node starts this program with posix_spawn (a vfork: it costs the node's event loop
 * about a hundred microseconds) and everything slow happens here, off the loop, on any core:
 *   outer stem (child of the node, holds no stream): makes the instance's cgroup
 *     directories named on its command line (on cgroup v1 a mkdir can wait tens of ms for
 *     the kernel: here it stalls nobody), opens their limit files, joins them, unshares the
 *     mount, ipc, uts, net and pid namespaces, forks the inner stem, then only waits for it
 *     and mirrors its exit, so the node's pidfd on the outer stem sees the instance end.
 *     Before it exits it moves itself back to the node's cgroup and removes the directories
 *     (rmdir waits like mkdir), so the node has nothing to remove after a stem that exited.
 *     If the OOM killer acted in the cgroup, the memory directory is left for the node to
 *     read the count from; that, or a directory the kernel kept busy, makes the stem end by
 *     SIGKILL instead of exiting, and the node removes what is left (as after a stem killed
 *     by anyone else);
 *   inner stem (pid 1 of the new pid namespace): makes the host read-only with private
 *     /tmp and /proc, brings up loopback, and waits for GO (below).
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
 *   u32 argc, argc x string, u32 envc, envc x string,
 *   u64 memory_bytes, u32 cpu_millis, u32 pids_max (0: no limit; written to the cgroup
 *   before the exec), u32 secretc, secretc x (string name, bytes value) (install_secrets),
 *   u32 mode (below), string netns, string resolv_conf (join_network; empty: stay in the
 *   stem's own loopback-only network namespace)
 *
 * Modes (docs/templates.md):
 *   0 exec: fork and exec the function (above).
 *   1 template, only for a stem started with --template: the sandbox of a function's
 *     template (a runtime that imports the function and then forks instances). It stays in
 *     the host's pid namespace (its children must be able to join a pooled stem's, which is
 *     a child of the host's), with an empty read-only /proc, and the runtime keeps
 *     CAP_SYS_ADMIN, CAP_SYS_CHROOT and CAP_SETPCAP as the function's user (setns and
 *     dropping the bounding set need them); fd 3, the template's control socket, stays open.
 *   2 adopt: a child forked by a template joins this sandbox instead of an exec. Every
 *     pooled stem listens on the abstract unix socket ADOPT_SOCKET_NAME of its own network
 *     namespace; in mode 2 it accepts one connection from the function's user, sends it the
 *     instance's stdin, stdout and stderr and the cgroup.procs of its cgroups (the child
 *     moves itself there), learns the function's pid in this pid namespace, and then
 *     supervises it as it would its own child; the template's child that connected waits
 *     for the function and sends its wait status on the socket (the function is not our
 *     child: its parent is outside the namespace).
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
#include <stddef.h>
#include <sched.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/prctl.h>
#include <poll.h>
#include <stddef.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <linux/capability.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define GO_MAGIC 0x4f475646u
/* Secrets make the largest messages: up to 4 MiB of values (FV_SECRETS_VALUES_MAX). */
#define GO_MAX_BYTES (5u * 1024u * 1024u)
#define GO_MAX_ITEMS 1024u
#include "adopt.h"
#include "seccomp.h"
#include "../util/write_all.h"

enum { MODE_EXEC = 0, MODE_TEMPLATE = 1, MODE_ADOPT = 2 };
static int g_template_stem; /* --template: the sandbox of a function's template */
static int g_ctl_fd = -1;   /* --template: the template's control socket (fd 3) */
static int g_adopt_fd = -1; /* pooled stems: where a template's child asks to be adopted */
static int g_template_runtime; /* mode template, in the inner stem: its child is the runtime */

static void report(const char *what) {
  fprintf(stderr, "faasvisor-stem: %s: %s\n", what, errno ? strerror(errno) : "invalid");
}

static void fail(const char *what) __attribute__((noreturn));
static void fail(const char *what) {
  report(what);
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

/* A view of len bytes, which may hold anything (a secret's value). */
static const unsigned char *get_bytes(struct cursor *c, uint32_t *len) {
  *len = get_u32(c);
  if ((size_t)(c->end - c->p) < *len) { errno = 0; fail("GO message bytes truncated"); }
  const unsigned char *at = c->p;
  c->p += *len;
  return at;
}

static char **get_list(struct cursor *c) {
  uint32_t n = get_u32(c);
  if (n > GO_MAX_ITEMS) { errno = 0; fail("GO message list too long"); }
  char **list = calloc((size_t)n + 1, sizeof *list);
  if (!list) fail("calloc");
  for (uint32_t i = 0; i < n; ++i) list[i] = get_str(c);
  return list;
}

/* The instance's cgroup directories, from argv: "CONTROLLER=DIR", CONTROLLER one of memory,
 * cpu, pids (v1) or unified (v2). Every fd is opened before the namespaces are made, on the
 * host's mounts: the sandbox later makes its own view of them read-only. */
#define MAX_CGROUPS 8
_Static_assert(MAX_CGROUPS <= ADOPT_MAX_CGROUPS, "every cgroup fits in an adoption offer");
enum { LIMIT_MEMORY, LIMIT_SWAP, LIMIT_CPU, LIMIT_PIDS, LIMIT_COUNT };
struct cgroup_dir {
  const char *controller;
  const char *path;
  const char *name;  /* last component of path */
  int parent_fd;     /* O_PATH of the parent directory, for the rmdir */
  int procs_fd;      /* cgroup.procs, written to join */
  int home_fd;       /* the cgroup.procs the outer stem goes back to before the rmdir */
  int limit_fds[LIMIT_COUNT];
  int oom_fd;        /* memory.oom_control (v1) or memory.events (v2), -1 elsewhere */
  int made;
};
static struct cgroup_dir g_cgroups[MAX_CGROUPS];
static int g_ncgroups;


static int oom_kills(const struct cgroup_dir *cg) {
  if (cg->oom_fd < 0) return 0;
  char buf[512];
  ssize_t n = pread(cg->oom_fd, buf, sizeof buf - 1, 0);
  if (n <= 0) return 0;
  buf[n] = '\0';
  const char *at = strstr(buf, "oom_kill ");
  return at != NULL && atoi(at + 9) > 0;
}

static void write_value(int fd, const char *value, const char *what);

/* Moves the outer stem back where it came from, then removes the directories made so far;
 * true if none is left. A cgroup v1 directory can stay busy for a moment after its last task
 * is reaped: retry for up to about a second, then leave it to the node. */
static int remove_cgroups(void) {
  int all = 1;
  for (int i = 0; i < g_ncgroups; ++i) {
    struct cgroup_dir *cg = &g_cgroups[i];
    if (!cg->made) continue;
    if (cg->home_fd >= 0) {
      ssize_t n;
      do {
        n = write(cg->home_fd, "0", 1);
      } while (n < 0 && errno == EINTR);
    }
    cg->made = 0;
    if (oom_kills(cg)) { /* the node reads the count, then removes it */
      all = 0;
      continue;
    }
    int removed = 0;
    for (int attempt = 0; attempt < 200 && !removed; ++attempt) {
      if (unlinkat(cg->parent_fd, cg->name, AT_REMOVEDIR) == 0 || errno == ENOENT) removed = 1;
      else if (errno != EBUSY && errno != EINTR) break;
      else {
        struct timespec pause = {0, 5 * 1000 * 1000};
        nanosleep(&pause, NULL);
      }
    }
    all &= removed;
  }
  return all;
}

/* The node removes nothing after a stem that exited by itself: one that leaves a directory
 * behind must not exit. It dies by SIGKILL instead, and the node removes what is left. */
static void finish_cgroups(void) {
  if (!remove_cgroups()) kill(getpid(), SIGKILL);
}

static void fail_outer(const char *what) __attribute__((noreturn));
static void fail_outer(const char *what) {
  report(what);
  finish_cgroups();
  _exit(127);
}

/* Where the outer stem goes back to before the rmdir: on v1 the node's own subtree (v1
 * takes tasks anywhere), on v2 the cgroup it was started in (v2 takes none in a cgroup with
 * controllers enabled for its children, such as the node's subtree), from /proc/self/cgroup. */
static int open_home(const struct cgroup_dir *cg) {
  if (strcmp(cg->controller, "unified") != 0)
    return openat(cg->parent_fd, "cgroup.procs", O_WRONLY | O_CLOEXEC);
  FILE *f = fopen("/proc/self/cgroup", "re");
  if (f == NULL) return -1;
  char line[4096];
  int fd = -1;
  while (fd < 0 && fgets(line, sizeof line, f)) {
    if (strncmp(line, "0::/", 4) != 0) continue;
    line[strcspn(line, "\n")] = '\0';
    char path[4200];
    snprintf(path, sizeof path, "/sys/fs/cgroup%s/cgroup.procs", strcmp(line + 3, "/") == 0 ? "" : line + 3);
    fd = open(path, O_WRONLY | O_CLOEXEC);
  }
  fclose(f);
  return fd;
}

/* A limit file of a directory being made; absent: the kernel does not offer it. */
static int open_write(int dir_fd, const char *file) {
  int fd = openat(dir_fd, file, O_WRONLY | O_CLOEXEC);
  if (fd < 0 && errno != ENOENT) fail_outer(file);
  return fd;
}

static void make_cgroups(int count, char **specs) {
  if (count > MAX_CGROUPS) { errno = 0; fail("too many cgroup directories"); }
  for (int i = 0; i < count; ++i) {
    struct cgroup_dir *cg = &g_cgroups[g_ncgroups++];
    memset(cg, 0, sizeof *cg);
    cg->parent_fd = cg->procs_fd = cg->home_fd = cg->oom_fd = -1;
    for (int l = 0; l < LIMIT_COUNT; ++l) cg->limit_fds[l] = -1;
    char *eq = strchr(specs[i], '=');
    char *slash = eq ? strrchr(eq + 1, '/') : NULL;
    if (eq == NULL || slash == NULL || slash == eq + 1 || slash[1] == '\0') {
      errno = 0;
      fail_outer("bad cgroup argument (CONTROLLER=/DIR/NAME)");
    }
    *eq = '\0';
    cg->controller = specs[i];
    cg->path = eq + 1;
    cg->name = slash + 1;
    *slash = '\0'; /* path is now the parent's */
    cg->parent_fd = open(cg->path, O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (cg->parent_fd < 0) fail_outer("open the node's cgroup directory");
    int rc;
    do {
      rc = mkdirat(cg->parent_fd, cg->name, 0755);
    } while (rc < 0 && errno == EINTR);
    if (rc < 0 && errno != EEXIST) fail_outer("make the instance's cgroup directory");
    cg->made = 1;
    int dir = openat(cg->parent_fd, cg->name, O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (dir < 0) fail_outer("open the instance's cgroup directory");
    cg->procs_fd = openat(dir, "cgroup.procs", O_WRONLY | O_CLOEXEC);
    if (cg->procs_fd < 0) fail_outer("open cgroup.procs");
    cg->home_fd = open_home(cg);
    if (strcmp(cg->controller, "unified") == 0) {
      cg->limit_fds[LIMIT_MEMORY] = open_write(dir, "memory.max");
      cg->limit_fds[LIMIT_SWAP] = open_write(dir, "memory.swap.max");
      cg->limit_fds[LIMIT_CPU] = open_write(dir, "cpu.max");
      cg->limit_fds[LIMIT_PIDS] = open_write(dir, "pids.max");
      cg->oom_fd = openat(dir, "memory.events", O_RDONLY | O_CLOEXEC);
    } else if (strcmp(cg->controller, "memory") == 0) {
      cg->limit_fds[LIMIT_MEMORY] = open_write(dir, "memory.limit_in_bytes");
      cg->oom_fd = openat(dir, "memory.oom_control", O_RDONLY | O_CLOEXEC);
    } else if (strcmp(cg->controller, "cpu") == 0) {
      cg->limit_fds[LIMIT_CPU] = open_write(dir, "cpu.cfs_quota_us");
    } else if (strcmp(cg->controller, "pids") == 0) {
      cg->limit_fds[LIMIT_PIDS] = open_write(dir, "pids.max");
    }
    close(dir);
  }
}

static void write_value(int fd, const char *value, const char *what) {
  if (fd < 0) return;
  ssize_t n;
  /* cgroup v1's memory.limit_in_bytes gives up with EINTR when the writer has pending
   * work: retry. */
  do {
    n = write(fd, value, strlen(value));
  } while (n < 0 && errno == EINTR);
  if (n < 0) fail(what);
}

/* Outer stem: into the instance's cgroups (the inner stem, forked later, is born there). */
static void join_cgroups(void) {
  for (int i = 0; i < g_ncgroups; ++i) {
    ssize_t n;
    do {
      n = write(g_cgroups[i].procs_fd, "0", 1);
    } while (n < 0 && errno == EINTR);
    if (n != 1) fail_outer("join the instance's cgroup");
    /* Kept open: the inner stem hands it to a template's child (mode adopt); the outer
     * stem closes its copy after the fork (close_cgroup_files). */
  }
}

/* Inner stem: it keeps only the limit files; the outer stem removes the directories. */
static void leave_cgroups_to_outer(void) {
  for (int i = 0; i < g_ncgroups; ++i) {
    struct cgroup_dir *cg = &g_cgroups[i];
    if (cg->parent_fd >= 0) close(cg->parent_fd);
    if (cg->home_fd >= 0) close(cg->home_fd);
    if (cg->oom_fd >= 0) close(cg->oom_fd);
    cg->parent_fd = cg->home_fd = cg->oom_fd = -1;
    cg->made = 0;
  }
}

/* Inner stem, after GO: the function's limits. */
static void apply_limits(uint64_t memory_bytes, uint32_t cpu_millis, uint32_t pids_max) {
  char value[64];
  for (int i = 0; i < g_ncgroups; ++i) {
    int *fds = g_cgroups[i].limit_fds;
    int unified = strcmp(g_cgroups[i].controller, "unified") == 0;
    if (memory_bytes) {
      snprintf(value, sizeof value, "%llu", (unsigned long long)memory_bytes);
      write_value(fds[LIMIT_MEMORY], value, "set the memory limit");
      write_value(fds[LIMIT_SWAP], "0", "set the swap limit");
    }
    if (cpu_millis) {
      if (unified) snprintf(value, sizeof value, "%u 100000", cpu_millis * 100u);
      else snprintf(value, sizeof value, "%u", cpu_millis * 100u);
      write_value(fds[LIMIT_CPU], value, "set the CPU quota");
    }
    if (pids_max) {
      snprintf(value, sizeof value, "%u", pids_max);
      write_value(fds[LIMIT_PIDS], value, "set the pids limit");
    }
    for (int l = 0; l < LIMIT_COUNT; ++l)
      if (fds[l] >= 0) close(fds[l]);
  }
}

static void close_procs_files(void) {
  for (int i = 0; i < g_ncgroups; ++i) {
    if (g_cgroups[i].procs_fd >= 0) close(g_cgroups[i].procs_fd);
    g_cgroups[i].procs_fd = -1;
  }
}

/* Outer stem, after the fork: it keeps only what it needs for the rmdir. */
static void close_cgroup_files(void) {
  close_procs_files();
  for (int i = 0; i < g_ncgroups; ++i) {
    for (int l = 0; l < LIMIT_COUNT; ++l) {
      if (g_cgroups[i].limit_fds[l] >= 0) close(g_cgroups[i].limit_fds[l]);
      g_cgroups[i].limit_fds[l] = -1;
    }
  }
}

static volatile pid_t g_function_pid;
static uint32_t g_uid, g_gid;
static int g_host_tmp = -1;
static void exit_like(int status, const char *who) __attribute__((noreturn));

static void forward(int signo) {
  if (g_function_pid > 0) kill(g_function_pid, signo);
}

static void forward_none(int signo) { (void)signo; }

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
/* Gives the child the protocol streams, forwards SIGTERM/SIGINT/SIGHUP to it, takes SIGUSR2
 * as "kill it now". */
static void take_charge_of(pid_t child) {
  g_function_pid = child;
  close(0);
  close(1);
  if (g_ctl_fd >= 0) close(g_ctl_fd);
  g_ctl_fd = -1;
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = forward;
  sigaction(SIGTERM, &sa, NULL);
  sigaction(SIGINT, &sa, NULL);
  sigaction(SIGHUP, &sa, NULL);
  sa.sa_handler = kill_sandbox;
  sigaction(SIGUSR2, &sa, NULL);
}

static void supervise(pid_t child, const sigset_t *old, const char *who) __attribute__((noreturn));
static void supervise(pid_t child, const sigset_t *old, const char *who) {
  take_charge_of(child);
  sigprocmask(SIG_SETMASK, old, NULL);
  /* A template's runtime forks a child per instance (it waits for the instance and then
   * exits): if the runtime ends first, they are re-parented to us (a subreaper, set in
   * run_as_init), and we end only after the last of them. */
  int ended = 0, ended_status = 0;
  for (;;) {
    int status = 0;
    pid_t done = wait(&status);
    if (done < 0) {
      if (errno == EINTR) continue;
      if (errno == ECHILD && ended) exit_like(ended_status, who);
      _exit(127);
    }
    if (done == child && g_template_runtime) {
      ended = 1;
      ended_status = status;
      g_function_pid = 0;
      continue;
    }
    if (done == child) {
      finish_cgroups(); /* the outer stem's; none in the init (leave_cgroups_to_outer) */
      exit_like(status, who); /* others are orphans the function left */
    }
  }
}

/* Mode template: the runtime keeps, as the function's user, only what a template's child
 * needs to join a pooled stem and then give it up (setns into mount, pid, net, ipc and uts
 * namespaces; dropping the bounding set): ambient capabilities survive the exec of a
 * program that has none of its own. Everything else the bounding set loses. */
static const int k_template_caps[] = {CAP_SYS_ADMIN, CAP_SYS_CHROOT, CAP_SETPCAP};

static int is_template_cap(int cap) {
  for (size_t i = 0; i < sizeof k_template_caps / sizeof k_template_caps[0]; ++i)
    if (k_template_caps[i] == cap) return 1;
  return 0;
}

static void keep_template_caps(void) {
  for (int cap = 0; prctl(PR_CAPBSET_READ, cap, 0, 0, 0) >= 0; cap++)
    if (!is_template_cap(cap) && prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) < 0) fail("drop the capability bounding set");
  if (prctl(PR_SET_KEEPCAPS, 1, 0, 0, 0) < 0) fail("keep capabilities");
  if (g_uid != 0) {
    if (setgroups(0, NULL) < 0) fail("setgroups");
    if (setresgid(g_gid, g_gid, g_gid) < 0) fail("setgid");
    if (setresuid(g_uid, g_uid, g_uid) < 0) fail("setuid");
  }
  struct __user_cap_header_struct head = {_LINUX_CAPABILITY_VERSION_3, 0};
  struct __user_cap_data_struct data[2];
  memset(data, 0, sizeof data);
  for (size_t i = 0; i < sizeof k_template_caps / sizeof k_template_caps[0]; ++i) {
    int cap = k_template_caps[i];
    data[cap / 32].effective |= 1u << (cap % 32);
    data[cap / 32].permitted |= 1u << (cap % 32);
    data[cap / 32].inheritable |= 1u << (cap % 32);
  }
  if (syscall(SYS_capset, &head, data) < 0) fail("capset for the template");
  /* The change of user cleared it; the runtime is not a namespace's init here. */
  if (prctl(PR_SET_PDEATHSIG, SIGKILL) < 0) fail("parent-death signal");
  for (size_t i = 0; i < sizeof k_template_caps / sizeof k_template_caps[0]; ++i)
    if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, k_template_caps[i], 0, 0) < 0) fail("raise ambient capabilities");
  /* The control socket is the runtime's (fd 3, FAASVISOR_TEMPLATE_FD). */
  if (g_ctl_fd >= 0 && fcntl(g_ctl_fd, F_SETFD, 0) < 0) fail("keep the template's control socket");
}

static void drop_to_function_user(void) {
  /* An empty bounding set: nothing the function execs can gain a capability, and a user
   * namespace it makes holds none that reach the host's objects. */
  for (int cap = 0; prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) == 0; cap++) {
  }
  if (errno != EINVAL) fail("drop the capability bounding set");
  if (g_uid != 0) {
    if (setgroups(0, NULL) < 0) fail("setgroups");
    if (setresgid(g_gid, g_gid, g_gid) < 0) fail("setgid");
    if (setresuid(g_uid, g_uid, g_uid) < 0) fail("setuid");
  }
}

/* Runs the function (or, mode template, the template's runtime) as our child and mirrors
 * its end. */
static int run_as_init(char **argv, char **envp, int template_mode) {
  sigset_t all, old;
  sigfillset(&all);
  sigprocmask(SIG_BLOCK, &all, &old);
  if (template_mode) {
    g_template_runtime = 1;
    if (prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) < 0) fail("become a subreaper");
  }
  pid_t pid = fork();
  if (pid < 0) fail("fork");
  if (pid == 0) {
    /* Only the function drops to its user: the init keeps its parent-death signal, which
     * a change of credentials would clear. */
    if (template_mode) keep_template_caps();
    else drop_to_function_user();
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0) fail("no_new_privs");
    if (install_seccomp_filter(template_mode ? FV_SECCOMP_TEMPLATE : FV_SECCOMP_FUNCTION) < 0)
      fail("install the seccomp filter");
    sigprocmask(SIG_SETMASK, &old, NULL);
    signal(SIGPIPE, SIG_DFL);
    execvpe(argv[0], argv, envp);
    fail(argv[0]);
  }
  supervise(pid, &old, "the function");
}

/* Mode adopt: the function is a template's grandchild that joined our namespaces; its
 * parent (outside them) reports its end on `conn`. */
static void supervise_adopted(pid_t function, int conn) __attribute__((noreturn));
static void supervise_adopted(pid_t function, int conn) {
  take_charge_of(function);
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = forward_none; /* only to interrupt recv: orphans must be reaped */
  sigaction(SIGCHLD, &sa, NULL);
  sigset_t none;
  sigemptyset(&none);
  sigprocmask(SIG_SETMASK, &none, NULL);
  for (;;) {
    while (waitpid(-1, NULL, WNOHANG) > 0) {
    }
    int status = 0;
    ssize_t n = recv(conn, &status, sizeof status, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n == (ssize_t)sizeof status) exit_like(status, "the function");
    /* The template's child died before the function: the function goes with us. */
    kill(function, SIGKILL);
    errno = 0;
    fail("the function's parent (the template's child) ended before it");
  }
}

static int wait_readable(int fd, int timeout_ms) {
  struct pollfd p = {fd, POLLIN, 0};
  int rc;
  do {
    rc = poll(&p, 1, timeout_ms);
  } while (rc < 0 && errno == EINTR);
  return rc;
}

static void adopt(uint32_t uid) __attribute__((noreturn));
static void adopt(uint32_t uid) {
  if (g_adopt_fd < 0) { errno = 0; fail("adopt: this stem does not listen"); }
  if (wait_readable(g_adopt_fd, ADOPT_TIMEOUT_MS) <= 0) { errno = ETIMEDOUT; fail("adopt: no template child came"); }
  int conn = accept4(g_adopt_fd, NULL, NULL, SOCK_CLOEXEC);
  if (conn < 0) fail("adopt: accept");
  close(g_adopt_fd);
  g_adopt_fd = -1;
  struct ucred peer;
  socklen_t len = sizeof peer;
  if (getsockopt(conn, SOL_SOCKET, SO_PEERCRED, &peer, &len) < 0) fail("adopt: peer credentials");
  if (peer.uid != uid) { errno = EPERM; fail("adopt: the peer is not the function's user"); }
  int fds[3 + ADOPT_MAX_CGROUPS];
  int nfds = 0;
  fds[nfds++] = 0;
  fds[nfds++] = 1;
  fds[nfds++] = 2;
  for (int i = 0; i < g_ncgroups; ++i)
    if (g_cgroups[i].procs_fd >= 0) fds[nfds++] = g_cgroups[i].procs_fd;
  struct adopt_offer offer = {ADOPT_MAGIC, (uint32_t)(nfds - 3)};
  struct iovec iov = {&offer, sizeof offer};
  union {
    char buf[CMSG_SPACE(sizeof fds)];
    struct cmsghdr align;
  } control;
  memset(&control, 0, sizeof control);
  struct msghdr msg = {0};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control.buf;
  msg.msg_controllen = CMSG_SPACE(sizeof(int) * (size_t)nfds);
  struct cmsghdr *cm = CMSG_FIRSTHDR(&msg);
  cm->cmsg_level = SOL_SOCKET;
  cm->cmsg_type = SCM_RIGHTS;
  cm->cmsg_len = CMSG_LEN(sizeof(int) * (size_t)nfds);
  memcpy(CMSG_DATA(cm), fds, sizeof(int) * (size_t)nfds);
  if (sendmsg(conn, &msg, MSG_NOSIGNAL) != (ssize_t)sizeof offer) fail("adopt: send the instance's files");
  close_procs_files();
  /* The template's child now waits for its start message on our stdin (the node writes it
   * at the cold start): no deadline here, the node's boot deadline covers it. */
  int32_t function = 0;
  ssize_t got;
  do {
    got = recv(conn, &function, sizeof function, 0);
  } while (got < 0 && errno == EINTR);
  if (got != (ssize_t)sizeof function || function <= 1) {
    errno = 0;
    fail("adopt: no pid from the function");
  }
  supervise_adopted((pid_t)function, conn);
}

/* Pooled stems: the socket a template's child connects to (mode adopt). Abstract unix
 * sockets belong to the network namespace, which is this sandbox's alone. */
static void listen_for_adoption(void) {
  int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
  if (fd < 0) fail("adoption socket");
  struct sockaddr_un addr;
  memset(&addr, 0, sizeof addr);
  addr.sun_family = AF_UNIX;
  memcpy(addr.sun_path, ADOPT_SOCKET_NAME, sizeof ADOPT_SOCKET_NAME - 1);
  socklen_t len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + sizeof ADOPT_SOCKET_NAME - 1);
  if (bind(fd, (struct sockaddr *)&addr, len) < 0) fail("bind the adoption socket");
  if (listen(fd, 1) < 0) fail("listen on the adoption socket");
  g_adopt_fd = fd;
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
  /* A fresh /proc for the new pid namespace: the function sees only its own processes. A
   * template stays in the host's pid namespace, whose /proc would show every process on
   * the host: it gets an empty one. */
  if (g_template_stem) {
    if (mount("tmpfs", "/proc", "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, "size=4k,mode=555") < 0)
      fail("cover /proc");
  } else if (mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL) < 0) {
    fail("mount /proc");
  }
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
  if (!g_template_stem) listen_for_adoption();
}

/* A function directory under the host's /tmp (say, a checkout in /tmp/ci) is hidden by the
 * private /tmp. Exactly that directory is bound back, read-only, at the same path: the
 * private /tmp gets root-owned mount points for the directories above it, and nothing else
 * of the host's /tmp (its neighbours, another function, a node's log) becomes visible. A
 * function there that reaches for files beside its directory (a runtime at ../../runtimes)
 * must find them elsewhere: inside its directory, or outside /tmp. */
static void expose_host_tmp_dir(const char *relative) {
  if (relative[0] == '\0' || g_host_tmp < 0) { errno = ENOENT; fail("enter the function directory"); }
  int src = openat(g_host_tmp, relative, O_PATH | O_DIRECTORY | O_CLOEXEC);
  if (src < 0) fail("find the function directory under the host's /tmp");
  char target[4200], source[64];
  int len = snprintf(target, sizeof target, "/tmp/%s", relative);
  if (len < 0 || (size_t)len >= sizeof target) { errno = ENAMETOOLONG; fail("enter the function directory"); }
  /* mkdir -p in the private /tmp, one component at a time. */
  for (char *p = target + 5; ; ++p) {
    if (*p != '/' && *p != '\0') continue;
    char saved = *p;
    *p = '\0';
    if (mkdir(target, 0755) < 0 && errno != EEXIST) fail("make a mount point in /tmp");
    *p = saved;
    if (saved == '\0') break;
  }
  snprintf(source, sizeof source, "/proc/self/fd/%d", src);
  if (mount(source, target, NULL, MS_BIND | MS_REC, NULL) < 0) fail("bind the function directory");
  if (mount(NULL, target, NULL, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV, NULL) < 0)
    fail("make the function directory read-only");
  close(src);
}

/* ---- secrets ---- */

#define SECRETS_DIR "/var/openfaas/secrets"
#define SECRETS_MAX 64u        /* FV_SECRETS_MAX_COUNT */
#define SECRET_NAME_MAX 200u   /* FV_SECRET_NAME_MAX */

/* The node checked the names (faasvisor/frame.h fv_secret_name_valid); this only makes sure
 * each is a plain file name. */
static int plain_file_name(const unsigned char *name, uint32_t len) {
  if (len == 0 || len > SECRET_NAME_MAX || name[0] == '.') return 0;
  for (uint32_t i = 0; i < len; ++i)
    if (name[i] == '/' || name[i] == '\0') return 0;
  return 1;
}

static void write_secret(int dir, const char *name, const unsigned char *value, uint32_t len,
                         uint32_t uid, uint32_t gid) {
  int fd = openat(dir, name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0400);
  if (fd < 0) fail("create a secret file");
  if (fv_write_all(fd, value, len) < 0) fail("write a secret file");
  if (fchown(fd, uid, gid) < 0) fail("chown a secret file");
  close(fd);
}

/* Inner stem, after GO: the function's secrets as files /var/openfaas/secrets/NAME, 0400 and
 * owned by the function's user, on a tmpfs of this sandbox's mount namespace (charged to the
 * instance's memory cgroup) that is made read-only once written. The node made the empty
 * mount point on the host. The values are then wiped from the message, which this process
 * keeps for the instance's life: the files are the only copy left. */
static void install_secrets(struct cursor *c, uint32_t uid, uint32_t gid) {
  uint32_t count = get_u32(c);
  if (count > SECRETS_MAX) { errno = 0; fail("GO message has too many secrets"); }
  struct { const unsigned char *name, *value; uint32_t name_len, value_len; } items[SECRETS_MAX];
  uint64_t bytes = 0;
  for (uint32_t i = 0; i < count; ++i) {
    items[i].name = get_bytes(c, &items[i].name_len);
    items[i].value = get_bytes(c, &items[i].value_len);
    if (!plain_file_name(items[i].name, items[i].name_len)) { errno = 0; fail("bad secret name in the GO message"); }
    bytes += items[i].value_len;
  }
  if (count == 0) return;
  char opts[96];
  /* tmpfs gives each file whole pages. */
  snprintf(opts, sizeof opts, "size=%llu,nr_inodes=%u,mode=0755",
           (unsigned long long)(bytes + (uint64_t)(count + 1) * 4096u), count + 8);
  if (mount("tmpfs", SECRETS_DIR, "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, opts) < 0)
    fail("mount a tmpfs on " SECRETS_DIR);
  int dir = open(SECRETS_DIR, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dir < 0) fail("open " SECRETS_DIR);
  for (uint32_t i = 0; i < count; ++i) {
    char name[SECRET_NAME_MAX + 1];
    memcpy(name, items[i].name, items[i].name_len);
    name[items[i].name_len] = '\0';
    write_secret(dir, name, items[i].value, items[i].value_len, uid, gid);
    explicit_bzero((void *)items[i].value, items[i].value_len);
  }
  close(dir);
  if (mount(NULL, SECRETS_DIR, NULL, MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL) < 0)
    fail("make " SECRETS_DIR " read-only");
}

/* ---- instance networking (docs/network.md) ---- */

/* The node's directory of prepared network namespaces ("netns=DIR", the last argument),
 * opened on the host's mounts before the stem makes its own mount namespace: the nsfs
 * files the node's helper binds there later are reached through this handle, not through
 * the sandbox's private copy of the mounts, which never sees them. */
static int g_netns_dir = -1;

static void take_netns_arg(int *argc, char **argv) {
  if (*argc < 3 || strncmp(argv[*argc - 1], "netns=", 6) != 0) return;
  g_netns_dir = open(argv[*argc - 1] + 6, O_PATH | O_DIRECTORY | O_CLOEXEC);
  if (g_netns_dir < 0) fail("open the node's network namespace directory");
  --*argc;
}

/* Inner stem, after GO: join the prepared namespace (its own address, a route through the
 * host, the node's nftables rules) and see the node's resolv.conf. */
static void join_network(struct cursor *c) {
  char *name = get_str(c);
  char *resolv = get_str(c);
  if (name[0] != '\0') {
    if (g_netns_dir < 0 || strchr(name, '/') != NULL) { errno = 0; fail("GO message names a network namespace this stem cannot reach"); }
    int ns = openat(g_netns_dir, name, O_RDONLY | O_CLOEXEC);
    if (ns < 0) fail("open the instance's network namespace");
    if (setns(ns, CLONE_NEWNET) < 0) fail("join the instance's network namespace");
    close(ns);
    if (resolv[0] != '\0') {
      if (mount(resolv, "/etc/resolv.conf", NULL, MS_BIND, NULL) < 0) fail("bind resolv.conf");
      if (mount(NULL, "/etc/resolv.conf", NULL, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV, NULL) < 0)
        fail("make resolv.conf read-only");
    }
  }
  if (g_netns_dir >= 0) close(g_netns_dir);
  g_netns_dir = -1;
  free(name);
  free(resolv);
}

static void exit_like(int status, const char *who) {
  if (WIFEXITED(status)) _exit(WEXITSTATUS(status));
  int sig = WTERMSIG(status);
  const char *name = sigabbrev_np(sig);
  fprintf(stderr, "faasvisor-stem: %s was killed by signal SIG%s\n", who, name ? name : "?");
  _exit(128 + sig);
}

/* Outer stem: make the cgroups, make the namespaces, start the inner stem, mirror it. */
static void outer(pid_t node_pid, int ncgroups, char **cgroups) {
  /* The instance dies with the node, whatever the node died of. */
  prctl(PR_SET_PDEATHSIG, SIGKILL);
  if (getppid() != node_pid) _exit(0);
  make_cgroups(ncgroups, cgroups);
  join_cgroups();
  int pid_ns = g_template_stem ? 0 : CLONE_NEWPID;
  if (unshare(CLONE_NEWNS | CLONE_NEWIPC | CLONE_NEWUTS | CLONE_NEWNET | pid_ns) < 0)
    fail_outer("unshare namespaces");
  sigset_t all, old;
  sigfillset(&all);
  sigprocmask(SIG_BLOCK, &all, &old);
  pid_t inner = fork();
  if (inner < 0) fail_outer("fork the sandbox init");
  if (inner == 0) {
    /* pid 1 of the new namespace (a template's: the outer stem's child in the host's). If
     * the outer stem dies, so does the sandbox. */
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    sigprocmask(SIG_SETMASK, &old, NULL);
    leave_cgroups_to_outer();
    return;
  }
  close_cgroup_files();
  supervise(inner, &old, "the sandbox");
}

int main(int argc, char **argv) {
  /* argv: faasvisor-stem NODE_PID [--template] [CONTROLLER=DIR]... [netns=DIR] */
  if (argc < 2) { errno = 0; fail("usage: faasvisor-stem NODE_PID [--template] [CONTROLLER=DIR]... (started by faasvisord)"); }
  take_netns_arg(&argc, argv);
  int first_cgroup = 2;
  if (argc > 2 && strcmp(argv[2], "--template") == 0) {
    g_template_stem = 1;
    first_cgroup = 3;
    /* The control socket the node gave us as fd 3: only the template's runtime keeps it. */
    if (fcntl(3, F_SETFD, FD_CLOEXEC) < 0) fail("the template's control socket (fd 3)");
    g_ctl_fd = 3;
  }
  outer((pid_t)atoi(argv[1]), argc - first_cgroup, argv + first_cgroup);
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
  uint64_t memory_bytes = get_u32(&c);
  memory_bytes |= (uint64_t)get_u32(&c) << 32;
  uint32_t cpu_millis = get_u32(&c);
  uint32_t pids_max = get_u32(&c);
  apply_limits(memory_bytes, cpu_millis, pids_max);
  install_secrets(&c, uid, gid);
  uint32_t mode = get_u32(&c);
  join_network(&c);
  if (c.p != c.end) { errno = 0; fail("GO message has trailing bytes"); }
  if (mode > MODE_ADOPT || (mode == MODE_TEMPLATE) != (g_template_stem != 0)) {
    errno = 0;
    fail(g_template_stem ? "a template's stem takes only mode template" : "mode template needs a stem started with --template");
  }
  if (mode != MODE_ADOPT) {
    close_procs_files();
    if (g_adopt_fd >= 0) close(g_adopt_fd);
    g_adopt_fd = -1;
  }
  if (fn_argv[0] == NULL) { errno = 0; fail("empty command"); }

  if (tmp_size > 0) {
    char opts[64];
    snprintf(opts, sizeof opts, "size=%llu,mode=1777", (unsigned long long)tmp_size);
    if (mount(NULL, "/tmp", NULL, MS_REMOUNT | MS_NOSUID | MS_NODEV, opts) < 0) fail("resize /tmp");
  }
  if (strncmp(dir, "/tmp/", 5) == 0) expose_host_tmp_dir(dir + 5);
  if (g_host_tmp >= 0) close(g_host_tmp);
  if (chdir(dir) < 0) fail("enter the function directory");
  g_uid = uid;
  g_gid = gid;
  if (mode == MODE_ADOPT) adopt(uid);
  return run_as_init(fn_argv, envp, mode == MODE_TEMPLATE);
}
