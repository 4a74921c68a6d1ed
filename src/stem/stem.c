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
 *   before the exec), u32 secretc, secretc x (string name, bytes value) (install_secrets)
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
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <net/if.h>
#include <stddef.h>
#include <sched.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define GO_MAGIC 0x4f475646u
/* Secrets make the largest messages: up to 4 MiB of values (FV_SECRETS_VALUES_MAX). */
#define GO_MAX_BYTES (5u * 1024u * 1024u)
#define GO_MAX_ITEMS 1024u

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
    close(g_cgroups[i].procs_fd);
    g_cgroups[i].procs_fd = -1;
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

/* Outer stem, after the fork: it keeps only what it needs for the rmdir. */
static void close_cgroup_files(void) {
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
    if (done == child) {
      finish_cgroups(); /* the outer stem's; none in the init (leave_cgroups_to_outer) */
      exit_like(status, who); /* others are orphans the function left */
    }
  }
}

/* The process backend's seccomp filter (docs/security.md), installed by the function's
 * process just before its exec, after no_new_privs. A variant of the containers' profile
 * (src/backend/oci_seccomp.cc): that profile's EPERM list is denied here too (namespaces,
 * mounts, ptrace and reading other processes' memory, kernel modules, kexec, bpf, perf,
 * keyrings, userfaultfd, clocks, swap, reboot, io_uring...) and clone with any CLONE_NEW*
 * flag, but everything else is allowed rather than an allowlist: a process function runs
 * the host's own interpreters and tools, whose needs the allowlist of a static container
 * image does not know. clone3 passes its flags in memory, where a filter cannot look: it
 * fails with ENOSYS and glibc falls back to clone. Other ABIs (x32, i386) are refused. */
static const int k_denied_syscalls[] = {
  SYS_unshare, SYS_setns, SYS_mount, SYS_umount2, SYS_pivot_root, SYS_chroot, SYS_open_tree,
  SYS_move_mount, SYS_fsopen, SYS_fsconfig, SYS_fsmount, SYS_fspick, SYS_mount_setattr,
#ifndef FV_SANITIZER_BUILD /* LeakSanitizer stops a function's threads with ptrace at exit */
  SYS_ptrace,
#endif
  SYS_process_vm_readv, SYS_process_vm_writev, SYS_pidfd_getfd, SYS_kcmp,
  SYS_init_module, SYS_finit_module, SYS_delete_module, SYS_kexec_load, SYS_kexec_file_load,
  SYS_bpf, SYS_perf_event_open, SYS_add_key, SYS_request_key, SYS_keyctl, SYS_userfaultfd,
  SYS_reboot, SYS_swapon, SYS_swapoff, SYS_acct, SYS_settimeofday, SYS_clock_settime,
  SYS_clock_adjtime, SYS_adjtimex, SYS_syslog, SYS_quotactl, SYS_vhangup,
  SYS_name_to_handle_at, SYS_open_by_handle_at, SYS_lookup_dcookie, SYS_fanotify_init,
  SYS_io_uring_setup, SYS_io_uring_enter, SYS_io_uring_register, SYS_personality, SYS_mbind,
  SYS_set_mempolicy, SYS_migrate_pages, SYS_move_pages,
#ifdef SYS_iopl
  SYS_iopl, SYS_ioperm, SYS_modify_ldt,
#endif
};
#define CLONE_NAMESPACE_FLAGS 0x7E020000u /* NEWNS, NEWCGROUP, NEWUTS, NEWIPC, NEWUSER, NEWPID, NEWNET */
#if defined(__x86_64__)
#define SECCOMP_ARCH AUDIT_ARCH_X86_64
#elif defined(__aarch64__)
#define SECCOMP_ARCH AUDIT_ARCH_AARCH64
#endif

static void install_seccomp_filter(void) {
#ifdef SECCOMP_ARCH
  enum { N_DENIED = sizeof k_denied_syscalls / sizeof k_denied_syscalls[0] };
  struct sock_filter prog[16 + 2 * N_DENIED];
  size_t n = 0;
#define EMIT(stmt) (prog[n++] = (struct sock_filter)stmt)
  EMIT(BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch)));
  EMIT(BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SECCOMP_ARCH, 1, 0));
  EMIT(BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_KILL_PROCESS));
  EMIT(BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)));
#if defined(__x86_64__)
  EMIT(BPF_JUMP(BPF_JMP | BPF_JGE | BPF_K, 0x40000000u /* __X32_SYSCALL_BIT */, 0, 1));
  EMIT(BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | ENOSYS));
#endif
  EMIT(BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_clone3, 0, 1));
  EMIT(BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | ENOSYS));
  for (size_t i = 0; i < N_DENIED; ++i) {
    EMIT(BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, (uint32_t)k_denied_syscalls[i], 0, 1));
    EMIT(BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | EPERM));
  }
  /* clone: its flags are the first argument (the low word holds every CLONE_NEW* bit). */
  EMIT(BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_clone, 0, 3));
  EMIT(BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, args[0])));
  EMIT(BPF_JUMP(BPF_JMP | BPF_JSET | BPF_K, CLONE_NAMESPACE_FLAGS, 0, 1));
  EMIT(BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | EPERM));
  EMIT(BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW));
#undef EMIT
  struct sock_fprog fprog = {(unsigned short)n, prog};
  if (syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &fprog) < 0) fail("install the seccomp filter");
#endif
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
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0) fail("no_new_privs");
    install_seccomp_filter();
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
  while (len > 0) {
    ssize_t n = write(fd, value, len);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) fail("write a secret file");
    value += n;
    len -= (uint32_t)n;
  }
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
  if (unshare(CLONE_NEWNS | CLONE_NEWIPC | CLONE_NEWUTS | CLONE_NEWNET | CLONE_NEWPID) < 0)
    fail_outer("unshare namespaces");
  sigset_t all, old;
  sigfillset(&all);
  sigprocmask(SIG_BLOCK, &all, &old);
  pid_t inner = fork();
  if (inner < 0) fail_outer("fork the sandbox init");
  if (inner == 0) {
    /* pid 1 of the new namespace. If the outer stem dies, so does the sandbox. */
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    sigprocmask(SIG_SETMASK, &old, NULL);
    leave_cgroups_to_outer();
    return;
  }
  close_cgroup_files();
  supervise(inner, &old, "the sandbox");
}

int main(int argc, char **argv) {
  /* argv: faasvisor-stem NODE_PID [CONTROLLER=DIR]... */
  if (argc < 2) { errno = 0; fail("usage: faasvisor-stem NODE_PID [CONTROLLER=DIR]... (started by faasvisord)"); }
  outer((pid_t)atoi(argv[1]), argc - 2, argv + 2);
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
  if (c.p != c.end) { errno = 0; fail("GO message has trailing bytes"); }
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
  return run_as_init(fn_argv, envp);
}
