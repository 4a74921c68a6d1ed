#include "proc/spawn.h"

#include <fcntl.h>
#include <grp.h>
#include <linux/sched.h>
#include <net/if.h>
#include <sched.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cstring>

namespace faasvisor::proc {
namespace {

#ifndef MOUNT_ATTR_RDONLY
#define MOUNT_ATTR_RDONLY 0x00000001
#endif
#ifndef AT_RECURSIVE
#define AT_RECURSIVE 0x8000
#endif

struct MountAttr {
  uint64_t attr_set;
  uint64_t attr_clr;
  uint64_t propagation;
  uint64_t userns_fd;
};

// The child half. Runs in the new namespaces, before exec. Only async-signal-safe-ish work:
// the parent is single-threaded, so the copied heap is consistent, but keep it short.
[[noreturn]] void child_fail(const char *what) {
  int err = errno;
  char msg[512];
  int n = snprintf(msg, sizeof msg, "faasvisor: instance setup failed: %s: %s\n", what,
                   strerror(err));
  if (n > 0) (void)!write(2, msg, static_cast<size_t>(n));
  _exit(127);
}

void bring_up_loopback() {
  int sock = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (sock < 0) child_fail("socket for loopback");
  ifreq req{};
  std::strncpy(req.ifr_name, "lo", IFNAMSIZ - 1);
  if (ioctl(sock, SIOCGIFFLAGS, &req) < 0) child_fail("SIOCGIFFLAGS lo");
  req.ifr_flags = static_cast<short>(req.ifr_flags | IFF_UP | IFF_RUNNING);
  if (ioctl(sock, SIOCSIFFLAGS, &req) < 0) child_fail("SIOCSIFFLAGS lo");
  close(sock);
}

void setup_filesystem(uint64_t tmp_size_bytes) {
  // Our mounts must not propagate back to the host.
  if (mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) < 0) child_fail("make / private");
  // Fresh /proc for the new pid namespace: the function sees only its own processes.
  if (mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, nullptr) < 0)
    child_fail("mount /proc");
  char opts[64];
  snprintf(opts, sizeof opts, "size=%llu,mode=1777", static_cast<unsigned long long>(tmp_size_bytes));
  if (mount("tmpfs", "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, opts) < 0) child_fail("mount /tmp");
  // Everything becomes read-only, recursively, then /tmp is made writable again.
  // mount_setattr changes this namespace's copies only.
  MountAttr ro{};
  ro.attr_set = MOUNT_ATTR_RDONLY;
  if (syscall(SYS_mount_setattr, AT_FDCWD, "/", AT_RECURSIVE, &ro, sizeof ro) < 0)
    child_fail("mount_setattr / read-only");
  MountAttr rw{};
  rw.attr_clr = MOUNT_ATTR_RDONLY;
  if (syscall(SYS_mount_setattr, AT_FDCWD, "/tmp", 0, &rw, sizeof rw) < 0)
    child_fail("mount_setattr /tmp read-write");
}

[[noreturn]] void run_child(const StemSpec &spec, int in_read, int out_write, int err_write) {
  // The instance dies with the node, whatever the node died of.
  prctl(PR_SET_PDEATHSIG, SIGKILL);
  if (dup2(err_write, 2) < 0) _exit(127);
  if (dup2(in_read, 0) < 0 || dup2(out_write, 1) < 0) child_fail("dup2");
  // v1 cgroups: join by writing "0" (this process). This is the slow step that stems take
  // off the cold-start path.
  if (spec.cgroup != nullptr) {
    for (int fd : spec.cgroup->procs_fds) {
      if (write(fd, "0", 1) < 0) child_fail("join cgroup");
    }
  }
  syscall(SYS_close_range, 3u, ~0u, 0u);
  sigset_t none;
  sigemptyset(&none);
  sigprocmask(SIG_SETMASK, &none, nullptr);
  setup_filesystem(spec.tmp_size_bytes);
  bring_up_loopback();
  sethostname("faasvisor", 9);
  char *argv[] = {const_cast<char *>("faasvisor-stem"), nullptr};
  char *envp[] = {const_cast<char *>("PATH=/usr/local/bin:/usr/bin:/bin"), nullptr};
  execve(spec.stem_path.c_str(), argv, envp);
  child_fail(spec.stem_path.c_str());
}

struct Pipes {
  int fds[6] = {-1, -1, -1, -1, -1, -1};  // in r/w, out r/w, err r/w
  ~Pipes() {
    for (int fd : fds)
      if (fd >= 0) close(fd);
  }
  int take(int i) {
    int fd = fds[i];
    fds[i] = -1;
    return fd;
  }
};

void put_u32(std::string &out, uint32_t v) {
  for (int i = 0; i < 4; ++i) out += static_cast<char>((v >> (8 * i)) & 0xff);
}
void put_str(std::string &out, std::string_view s) {
  put_u32(out, static_cast<uint32_t>(s.size()));
  out += s;
}

}  // namespace

Result<SpawnedProcess> spawn_stem(const StemSpec &spec) {
  Pipes pipes;
  // Node ends are non-blocking; the instance's ends are blocking, as programs expect.
  for (int i = 0; i < 3; ++i) {
    if (pipe2(&pipes.fds[i * 2], O_CLOEXEC) < 0) return errno_error("pipe2");
  }
  fcntl(pipes.fds[1], F_SETFL, O_NONBLOCK);  // stdin, write end (node)
  fcntl(pipes.fds[2], F_SETFL, O_NONBLOCK);  // stdout, read end (node)
  fcntl(pipes.fds[4], F_SETFL, O_NONBLOCK);  // stderr, read end (node)

  int pidfd = -1;
  clone_args args{};
  args.flags = CLONE_PIDFD | CLONE_NEWPID | CLONE_NEWNS | CLONE_NEWIPC | CLONE_NEWUTS | CLONE_NEWNET;
  args.pidfd = reinterpret_cast<uint64_t>(&pidfd);
  args.exit_signal = 0;  // exits are seen through the pidfd, not SIGCHLD
  if (spec.cgroup != nullptr && spec.cgroup->dir_fd >= 0) {
    args.flags |= CLONE_INTO_CGROUP;
    args.cgroup = static_cast<uint64_t>(spec.cgroup->dir_fd);
  }
  long pid = syscall(SYS_clone3, &args, sizeof args);
  if (pid < 0) return errno_error("clone3");
  if (pid == 0) run_child(spec, pipes.fds[0], pipes.fds[3], pipes.fds[5]);

  SpawnedProcess out;
  out.child = Child(static_cast<pid_t>(pid), pidfd);
  out.stdin_fd = pipes.take(1);
  out.stdout_fd = pipes.take(2);
  out.stderr_fd = pipes.take(4);
  return out;
}

std::string encode_go(const GoSpec &spec) {
  std::string payload;
  put_u32(payload, spec.uid);
  put_u32(payload, spec.gid);
  put_u32(payload, static_cast<uint32_t>(spec.tmp_size_bytes & 0xffffffffu));
  put_u32(payload, static_cast<uint32_t>(spec.tmp_size_bytes >> 32));
  put_str(payload, spec.directory);
  put_u32(payload, static_cast<uint32_t>(spec.argv.size()));
  for (const std::string &a : spec.argv) put_str(payload, a);
  put_u32(payload, static_cast<uint32_t>(spec.env.size()));
  for (const std::string &e : spec.env) put_str(payload, e);
  std::string out;
  put_u32(out, 0x4f475646u);  // "FVGO"
  put_u32(out, static_cast<uint32_t>(payload.size()));
  return out + payload;
}

Result<std::vector<std::string>> split_command(std::string_view command) {
  std::vector<std::string> words;
  std::string word;
  bool in_word = false;
  char quote = 0;
  for (char ch : command) {
    if (quote) {
      if (ch == quote) quote = 0;
      else word += ch;
    } else if (ch == '\'' || ch == '"') {
      quote = ch;
      in_word = true;
    } else if (ch == ' ' || ch == '\t' || ch == '\n') {
      if (in_word) words.push_back(std::move(word));
      word.clear();
      in_word = false;
    } else {
      word += ch;
      in_word = true;
    }
  }
  if (quote) return plain_error("command", "unterminated quote");
  if (in_word) words.push_back(std::move(word));
  if (words.empty()) return plain_error("command", "empty");
  return words;
}

}  // namespace faasvisor::proc
