// The default seccomp profile of every OCI container (linux.seccomp of config.json), applied
// by the runtime itself (crun and runc through libseccomp; runsc filters in its own kernel).
//
// An allowlist: what ordinary programs (a static C function, an interpreter, a threaded
// server) call for files, memory, threads, signals, time, polling, sockets and SysV/POSIX
// IPC. Anything not listed fails with ENOSYS, as a syscall the kernel lacks would: libraries
// fall back from newer calls (glibc from clone3 to clone, libuv from io_uring to epoll).
// What would reach past the sandbox fails with EPERM instead: namespaces (unshare, setns,
// and clone with a CLONE_NEW* flag), mounts, ptrace and reading other processes' memory,
// kernel modules, kexec, bpf, perf, keyrings, userfaultfd, clocks, swap, reboot, io_uring.
// The container also has no capabilities and no_new_privs, so the privileged calls listed
// (setuid to another user, mknod of a device, raising rlimits) fail in the kernel anyway.
#include <iterator>
#include <string>

#include "backend/oci.h"

namespace faasvisor::backend {
namespace {

constexpr const char *kAllowed[] = {
    // files and descriptors
    "read", "write", "readv", "writev", "pread64", "pwrite64", "preadv", "pwritev", "preadv2",
    "pwritev2", "open", "openat", "openat2", "creat", "close", "close_range", "lseek", "stat",
    "fstat", "lstat", "newfstatat", "statx", "statfs", "fstatfs", "access", "faccessat",
    "faccessat2", "readlink", "readlinkat", "getdents", "getdents64", "mkdir", "mkdirat",
    "rmdir", "unlink", "unlinkat", "rename", "renameat", "renameat2", "link", "linkat",
    "symlink", "symlinkat", "chmod", "fchmod", "fchmodat", "chown", "fchown", "lchown",
    "fchownat", "truncate", "ftruncate", "fallocate", "fsync", "fdatasync", "sync",
    "syncfs", "sync_file_range", "fadvise64", "readahead", "dup", "dup2", "dup3", "fcntl",
    "flock", "ioctl", "pipe", "pipe2", "sendfile", "splice", "tee", "vmsplice",
    "copy_file_range", "utime", "utimes", "utimensat", "futimesat", "getcwd", "chdir",
    "fchdir", "umask", "mknod", "mknodat", "getxattr", "lgetxattr", "fgetxattr", "listxattr",
    "llistxattr", "flistxattr", "setxattr", "lsetxattr", "fsetxattr", "removexattr",
    "lremovexattr", "fremovexattr", "inotify_init", "inotify_init1", "inotify_add_watch",
    "inotify_rm_watch", "memfd_create", "io_setup", "io_destroy", "io_submit",
    "io_getevents", "io_pgetevents", "io_cancel",
    // memory
    "brk", "mmap", "munmap", "mremap", "mprotect", "madvise", "mincore", "msync", "mlock",
    "mlock2", "munlock", "mlockall", "munlockall", "membarrier", "get_mempolicy",
    "pkey_alloc", "pkey_free", "pkey_mprotect",
    // processes, threads, credentials (changing them needs capabilities the container lacks)
    "fork", "vfork", "execve", "execveat", "exit", "exit_group", "wait4", "waitid", "kill",
    "tkill", "tgkill", "pidfd_open", "pidfd_send_signal", "getpid", "getppid", "gettid",
    "getuid", "geteuid", "getgid", "getegid", "getresuid", "getresgid", "getgroups",
    "setuid", "setgid", "setreuid", "setregid", "setresuid", "setresgid", "setgroups",
    "setfsuid", "setfsgid", "capget", "capset", "getpgid", "setpgid", "getpgrp", "getsid",
    "setsid", "prctl", "arch_prctl", "set_tid_address", "set_robust_list", "get_robust_list",
    "futex", "futex_waitv", "rseq", "sched_yield", "sched_getaffinity", "sched_setaffinity",
    "sched_getparam", "sched_setparam", "sched_getscheduler", "sched_setscheduler",
    "sched_getattr", "sched_setattr", "sched_get_priority_max", "sched_get_priority_min",
    "sched_rr_get_interval", "getpriority", "setpriority", "ioprio_get", "ioprio_set",
    "getrlimit", "setrlimit", "prlimit64", "getrusage", "times", "uname", "sysinfo",
    "getcpu", "getrandom", "restart_syscall", "seccomp", "landlock_create_ruleset",
    "landlock_add_rule", "landlock_restrict_self",
    // signals and time
    "rt_sigaction", "rt_sigprocmask", "rt_sigreturn", "rt_sigsuspend", "rt_sigpending",
    "rt_sigtimedwait", "rt_sigqueueinfo", "rt_tgsigqueueinfo", "sigaltstack", "pause",
    "alarm", "nanosleep", "clock_nanosleep", "clock_gettime", "clock_getres",
    "gettimeofday", "time", "timer_create", "timer_settime", "timer_gettime",
    "timer_getoverrun", "timer_delete", "timerfd_create", "timerfd_settime",
    "timerfd_gettime", "getitimer", "setitimer", "signalfd", "signalfd4", "eventfd",
    "eventfd2",
    // waiting for descriptors
    "select", "pselect6", "poll", "ppoll", "epoll_create", "epoll_create1", "epoll_ctl",
    "epoll_wait", "epoll_pwait", "epoll_pwait2",
    // sockets (the network namespace has only loopback)
    "socket", "socketpair", "bind", "listen", "accept", "accept4", "connect", "getsockname",
    "getpeername", "sendto", "recvfrom", "sendmsg", "recvmsg", "sendmmsg", "recvmmsg",
    "setsockopt", "getsockopt", "shutdown",
    // SysV and POSIX IPC (the IPC namespace is the container's own)
    "shmget", "shmat", "shmdt", "shmctl", "semget", "semop", "semtimedop", "semctl", "msgget",
    "msgsnd", "msgrcv", "msgctl", "mq_open", "mq_unlink", "mq_timedsend", "mq_timedreceive",
    "mq_notify", "mq_getsetattr",
};

// Denied with EPERM, an answer programs expect for "not allowed here".
constexpr const char *kDenied[] = {
    "unshare", "setns", "mount", "umount2", "pivot_root", "chroot", "open_tree", "move_mount",
    "fsopen", "fsconfig", "fsmount", "fspick", "mount_setattr", "ptrace",
    "process_vm_readv", "process_vm_writev", "pidfd_getfd", "kcmp", "init_module",
    "finit_module", "delete_module", "kexec_load", "kexec_file_load", "bpf",
    "perf_event_open", "add_key", "request_key", "keyctl", "userfaultfd", "reboot", "swapon",
    "swapoff", "acct", "settimeofday", "clock_settime", "clock_adjtime", "adjtimex",
    "syslog", "iopl", "ioperm", "modify_ldt", "quotactl", "vhangup", "name_to_handle_at",
    "open_by_handle_at", "lookup_dcookie", "fanotify_init", "io_uring_setup",
    "io_uring_enter", "io_uring_register", "personality", "mbind", "set_mempolicy",
    "migrate_pages", "move_pages",
};

// clone's flags (its first argument on x86-64 and arm64) without any CLONE_NEW*: NEWNS,
// NEWCGROUP, NEWUTS, NEWIPC, NEWUSER, NEWPID, NEWNET. clone3 passes its flags in memory,
// where seccomp cannot look: it is left unlisted (ENOSYS) and glibc falls back to clone.
constexpr unsigned long kCloneNamespaceFlags = 0x7E020000UL;

void append_names(std::string &out, const char *const *names, size_t count) {
  out += '[';
  for (size_t i = 0; i < count; ++i) {
    if (i > 0) out += ',';
    out += '"';
    out += names[i];
    out += '"';
  }
  out += ']';
}

}  // namespace

std::string default_seccomp_profile() {
  constexpr int kEnosys = 38, kEperm = 1;
  std::string j = "{\"defaultAction\":\"SCMP_ACT_ERRNO\",\"defaultErrnoRet\":" + std::to_string(kEnosys) + ",";
#if defined(__x86_64__)
  j += "\"architectures\":[\"SCMP_ARCH_X86_64\"],";
#elif defined(__aarch64__)
  j += "\"architectures\":[\"SCMP_ARCH_AARCH64\"],";
#endif
  j += "\"syscalls\":[{\"names\":";
  append_names(j, kAllowed, std::size(kAllowed));
  j += ",\"action\":\"SCMP_ACT_ALLOW\"},{\"names\":[\"clone\"],\"action\":\"SCMP_ACT_ALLOW\",\"args\":[{\"index\":0,\"value\":" +
       std::to_string(kCloneNamespaceFlags) + ",\"valueTwo\":0,\"op\":\"SCMP_CMP_MASKED_EQ\"}]},{\"names\":";
  append_names(j, kDenied, std::size(kDenied));
  j += ",\"action\":\"SCMP_ACT_ERRNO\",\"errnoRet\":" + std::to_string(kEperm) + "}]}";
  return j;
}

}  // namespace faasvisor::backend
