#include "proc/spawn.h"

#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>
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

SpawnSetup::SpawnSetup() {
  posix_spawn_file_actions_init(&actions);
  posix_spawnattr_init(&attr);
  sigset_t none, defaults;
  sigemptyset(&none);
  sigemptyset(&defaults);
  for (int sig : {SIGINT, SIGTERM, SIGPIPE, SIGCHLD, SIGHUP}) sigaddset(&defaults, sig);
  posix_spawnattr_setsigmask(&attr, &none);
  posix_spawnattr_setsigdefault(&attr, &defaults);
  posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
}

SpawnSetup::~SpawnSetup() {
  posix_spawn_file_actions_destroy(&actions);
  posix_spawnattr_destroy(&attr);
}

void StdioPipes::close_all() {
  for (int *set : {child, node})
    for (int i = 0; i < 3; ++i)
      if (set[i] >= 0) close(set[i]), set[i] = -1;
}

void StdioPipes::release_node_ends(int *to_child, int *from_child, int *log) {
  *to_child = node[0];
  *from_child = node[1];
  *log = node[2];
  node[0] = node[1] = node[2] = -1;
}

Status make_stdio_pipes(StdioPipes &pipes) {
  for (int i = 0; i < 3; ++i) {
    int fds[2];
    if (pipe2(fds, O_CLOEXEC) < 0) {
      int err = errno;
      pipes.close_all();
      return Error{err, "pipe2", ""};
    }
    // stdin: the child reads; stdout and stderr: the child writes.
    pipes.child[i] = i == 0 ? fds[0] : fds[1];
    pipes.node[i] = i == 0 ? fds[1] : fds[0];
    fcntl(pipes.node[i], F_SETFL, O_NONBLOCK);
  }
  return {};
}

Result<Child> spawn_with_pidfd(const char *path, SpawnSetup &setup, char *const argv[],
                               char *const envp[]) {
  pid_t pid = -1;
  int rc = posix_spawn(&pid, path, &setup.actions, &setup.attr, argv, envp);
  if (rc != 0) return Error{rc, "posix_spawn", path};
  // The child cannot be reaped by anyone but us, so its pid cannot be reused before this.
  int pidfd = static_cast<int>(syscall(SYS_pidfd_open, pid, 0));
  if (pidfd < 0) {
    int err = errno;
    kill(pid, SIGKILL);
    waitpid(pid, nullptr, 0);
    return errno_error("pidfd_open", err);
  }
  return Child(pid, pidfd);
}

Result<SpawnedProcess> spawn_stem(const StemSpec &spec) {
  Pipes pipes;
  // Node ends are non-blocking; the instance's ends are blocking, as programs expect.
  for (int i = 0; i < 3; ++i) {
    if (pipe2(&pipes.fds[i * 2], O_CLOEXEC) < 0) return errno_error("pipe2");
  }
  fcntl(pipes.fds[1], F_SETFL, O_NONBLOCK);  // stdin, write end (node)
  fcntl(pipes.fds[2], F_SETFL, O_NONBLOCK);  // stdout, read end (node)
  fcntl(pipes.fds[4], F_SETFL, O_NONBLOCK);  // stderr, read end (node)

  // posix_spawn is a vfork: the loop pays for little more than the exec. The cgroup (mkdir,
  // limits, migration, and rmdir at the end), the namespaces and the mounts happen in
  // faasvisor-stem, off the loop.
  SpawnSetup setup;
  posix_spawn_file_actions_adddup2(&setup.actions, pipes.fds[0], 0);
  posix_spawn_file_actions_adddup2(&setup.actions, pipes.fds[3], 1);
  posix_spawn_file_actions_adddup2(&setup.actions, pipes.fds[5], 2);
  if (spec.template_control_fd >= 0)
    posix_spawn_file_actions_adddup2(&setup.actions, spec.template_control_fd, 3);
  posix_spawn_file_actions_addclosefrom_np(&setup.actions, spec.template_control_fd >= 0 ? 4 : 3);

  // argv: faasvisor-stem NODE_PID [--template] [CONTROLLER=DIR]... [netns=DIR]
  std::vector<std::string> args = {"faasvisor-stem", std::to_string(getpid())};
  if (spec.template_control_fd >= 0) args.emplace_back("--template");
  if (spec.cgroup != nullptr) {
    for (size_t i = 0; i < spec.cgroup->dirs.size(); ++i)
      args.push_back(spec.cgroup->controllers[i] + "=" + spec.cgroup->dirs[i]);
  }
  if (!spec.netns_dir.empty()) args.push_back("netns=" + spec.netns_dir);
  std::vector<char *> argv;
  for (std::string &a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  char *envp[] = {const_cast<char *>("PATH=/usr/local/bin:/usr/bin:/bin"), nullptr};
  auto child = spawn_with_pidfd(spec.stem_path.c_str(), setup, argv.data(), envp);
  if (!child) return child.error();
  SpawnedProcess out;
  out.child = std::move(*child);
  out.stdin_fd = pipes.take(1);
  out.stdout_fd = pipes.take(2);
  out.stderr_fd = pipes.take(4);
  return out;
}

std::string encode_go(const GoSpec &spec) {
  // One buffer, header first and its length patched in: the message may hold secret values,
  // and the caller wipes this one copy once it is written.
  std::string out;
  size_t secret_bytes = 0;
  for (const auto &[name, value] : spec.secrets) secret_bytes += 8 + name.size() + value.size();
  out.reserve(4096 + secret_bytes);  // grown in place, no stray copies of the values
  put_u32(out, 0x4f475646u);  // "FVGO"
  put_u32(out, 0);            // payload length, below
  put_u32(out, spec.uid);
  put_u32(out, spec.gid);
  put_u32(out, static_cast<uint32_t>(spec.tmp_size_bytes & 0xffffffffu));
  put_u32(out, static_cast<uint32_t>(spec.tmp_size_bytes >> 32));
  put_str(out, spec.directory);
  put_u32(out, static_cast<uint32_t>(spec.argv.size()));
  for (const std::string &a : spec.argv) put_str(out, a);
  put_u32(out, static_cast<uint32_t>(spec.env.size()));
  for (const std::string &e : spec.env) put_str(out, e);
  put_u32(out, static_cast<uint32_t>(spec.limits.memory_bytes & 0xffffffffu));
  put_u32(out, static_cast<uint32_t>(spec.limits.memory_bytes >> 32));
  put_u32(out, spec.limits.cpu_millis);
  put_u32(out, spec.limits.pids_max);
  put_u32(out, static_cast<uint32_t>(spec.secrets.size()));
  for (const auto &[name, value] : spec.secrets) {
    put_str(out, name);
    put_str(out, value);
  }
  put_u32(out, static_cast<uint32_t>(spec.mode));
  put_str(out, spec.netns_name);
  put_str(out, spec.resolv_conf);
  std::string length;
  put_u32(length, static_cast<uint32_t>(out.size() - 8));
  out.replace(4, 4, length);
  return out;
}

std::string encode_template_start(std::string_view instance_name) {
  std::string out;
  put_u32(out, 0x54535646u);  // "FVST"
  put_str(out, instance_name);
  return out;
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
