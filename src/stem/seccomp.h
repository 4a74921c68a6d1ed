/* The seccomp filter of the process backend's functions, shared by faasvisor-stem and
 * libfaasvisor-template (C only, no dependency beyond the C library and kernel headers). */
#ifndef FAASVISOR_STEM_SECCOMP_H
#define FAASVISOR_STEM_SECCOMP_H

#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <sys/syscall.h>
#include <unistd.h>

/* The process backend's seccomp filter (docs/security.md), installed by the function's
 * process just before its exec, after no_new_privs (src/stem/stem.c), and by an instance a
 * template forked, before it serves (src/template/template.c). A variant of the containers' profile
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

/* FV_SECCOMP_TEMPLATE: a template's own filter (docs/templates.md), the same but for setns,
 * which its children need to join a pooled stem; each of them then adds the full filter
 * (filters stack: a child is under both). Returns 0, or -1 with errno set. */
enum { FV_SECCOMP_FUNCTION = 0, FV_SECCOMP_TEMPLATE = 1 };

static inline int install_seccomp_filter(int kind) {
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
    if (kind == FV_SECCOMP_TEMPLATE && k_denied_syscalls[i] == SYS_setns) continue;
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
  return syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &fprog) < 0 ? -1 : 0;
#else
  (void)kind;
  return 0;
#endif
}

#endif
