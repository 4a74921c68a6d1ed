#include "backend/template.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>
#include <iterator>

#include "backend/environment.h"
#include "backend/process.h"
#include "secrets/table.h"
#include "proc/spawn.h"
#include "util/clock.h"
#include "util/log.h"

namespace faasvisor::backend {
namespace {
constexpr char kReady = 'R';  // template -> node: imported (runtimes/python, docs/templates.md)
constexpr char kFork = 'F';   // node -> template: fork an instance (name follows; 2 fds)
constexpr uint64_t kMemorySampleNs = 1'000'000'000;
// In the order runtimes/python passes them to fv_template_enter; pid_for_children last.
constexpr const char *kNamespaceFiles[] = {"mnt", "net", "ipc", "uts", "pid_for_children"};
constexpr size_t kNamespaces = std::size(kNamespaceFiles);
}  // namespace

Template::Template(io::Ring &ring, const proc::CgroupTree &cgroups, uint64_t id)
    : ring_(ring), cgroups_(cgroups), id_(id) {
  for (io::Completion *c : {&control_op_, &exit_op_, &log_op_}) c->owner = this;
  control_op_.callback = &Template::on_control;
  exit_op_.callback = &Template::on_exit;
  log_op_.callback = &Template::on_log;
}

Template::~Template() {
  // The node is going away with completions possibly still armed: the ring runs no more
  // callbacks (ProcessBackend frees templates only once finished(), or at its own end).
  if (!stem_.child.reaped() && stem_.child.valid()) {
    stem_.child.signal(SIGUSR2);
    stem_.child.wait();
  }
  if (stem_.child.valid() && !cleaned_) cleanup_stem(cgroups_, stem_);
  for (int fd : {control_fd_, stem_.to_instance, stem_.from_instance, stem_.log})
    if (fd >= 0) ::close(fd);
}

Status Template::start(const FunctionSpec &spec, const std::string &stem_path, const GoMessage &go_message) {
  name_ = spec.name + "-template-" + std::to_string(id_);
  int pair[2];
  if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, pair) < 0) return errno_error("socketpair");
  control_fd_ = pair[0];
  fcntl(control_fd_, F_SETFL, O_NONBLOCK);
  int theirs = pair[1];
  if (theirs == 3) {  // posix_spawn's dup2 onto itself would keep close-on-exec
    theirs = fcntl(pair[1], F_DUPFD_CLOEXEC, 4);
    ::close(pair[1]);
    if (theirs < 0) return errno_error("dup the template's socket");
  }
  auto spawned = spawn_sandbox(cgroups_, stem_path, name_, {}, theirs);
  ::close(theirs);
  if (!spawned) return spawned.error();
  stem_ = std::move(*spawned);
  ::close(stem_.from_instance);  // a template serves nothing on its stdout
  stem_.from_instance = -1;
  started_ns_ = monotonic_ns();

  auto message = go_message(name_);
  ssize_t n = -1;
  int err = EINVAL;
  size_t size = message ? message->size() : 0;
  if (message) {
    // A fresh pipe: this non-blocking write completes at once unless secrets make the
    // message larger than the pipe, when the template fails to start (the exec path serves).
    n = ::write(stem_.to_instance, message->data(), message->size());
    err = errno;
    secrets::wipe(*message);
  }
  ::close(stem_.to_instance);
  stem_.to_instance = -1;
  ring_.poll(exit_op_, stem_.child.pidfd(), POLLIN);
  ring_.read(log_op_, stem_.log, log_buf_, sizeof log_buf_);
  ring_.recv(control_op_, control_fd_, control_buf_, sizeof control_buf_);
  if (!message) {
    stop();
    return message.error();
  }
  if (n != static_cast<ssize_t>(size)) {
    stop();
    return errno_error("write GO message to the template's sandbox", n < 0 ? err : EAGAIN);
  }
  return {};
}

namespace {
// A stem still setting up has not made its namespaces yet (it does so in one unshare): its
// pid_for_children is still the node's, and a child sent there would join the host's.
bool own_pid_namespace(int pid_ns_fd) {
  static const ino_t kHostPidNs = [] {
    struct stat st{};
    return stat("/proc/self/ns/pid", &st) == 0 ? st.st_ino : 0;
  }();
  struct stat st{};
  return fstat(pid_ns_fd, &st) == 0 && kHostPidNs != 0 && st.st_ino != kHostPidNs;
}
}  // namespace

bool stem_has_namespaces(const Launched &stem) {
  std::string path = "/proc/" + std::to_string(stem.child.pid()) + "/ns/pid_for_children";
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return false;
  bool own = own_pid_namespace(fd);
  ::close(fd);
  return own;
}

Status Template::fork_into(const Launched &stem) {
  if (state_ != State::ready) return plain_error("template", "not ready");
  // The stem's namespaces, opened here (setns on the stem's pidfd would need the template to
  // pass ptrace's checks on a root process): mount, net, ipc, uts, and the pid namespace its
  // children are born in. Five opens on procfs: microseconds.
  std::string dir = "/proc/" + std::to_string(stem.child.pid()) + "/ns/";
  int fds[kNamespaces] = {-1, -1, -1, -1, -1};
  auto close_all = [&] {
    for (int fd : fds)
      if (fd >= 0) ::close(fd);
  };
  for (size_t i = 0; i < kNamespaces; ++i) {
    fds[i] = ::open((dir + kNamespaceFiles[i]).c_str(), O_RDONLY | O_CLOEXEC);
    if (fds[i] < 0) {
      int err = errno;
      close_all();
      return errno_error("open the stem's namespaces", err);
    }
  }
  if (!own_pid_namespace(fds[kNamespaces - 1])) {
    close_all();
    return plain_error("template", "the stem has not made its namespaces yet");
  }
  std::string payload(1, kFork);
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof fds)] = {};
  iovec iov{payload.data(), payload.size()};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control;
  msg.msg_controllen = sizeof control;
  cmsghdr *cm = CMSG_FIRSTHDR(&msg);
  cm->cmsg_level = SOL_SOCKET;
  cm->cmsg_type = SCM_RIGHTS;
  cm->cmsg_len = CMSG_LEN(sizeof fds);
  std::memcpy(CMSG_DATA(cm), fds, sizeof fds);
  // One small datagram on a socket the template drains at once: this does not wait; a full
  // socket (EAGAIN) means a template too busy to be worth waiting for.
  ssize_t n = ::sendmsg(control_fd_, &msg, MSG_DONTWAIT | MSG_NOSIGNAL);
  int err = errno;
  close_all();
  if (n != static_cast<ssize_t>(payload.size())) return errno_error("ask the template to fork", n < 0 ? err : EAGAIN);
  ++forks_;
  return {};
}

void Template::stop() {
  if (state_ != State::dead) mark_dead("stopped");
  // End of the control stream: the runtime exits; its sandbox ends after the last instance
  // it forked (src/stem/stem.c). Our pending recv sees the end too.
  if (control_fd_ >= 0) ::shutdown(control_fd_, SHUT_RDWR);
}

bool Template::finished() const {
  return !control_op_.in_flight && !exit_op_.in_flight && !log_op_.in_flight;
}

uint64_t Template::memory_bytes() {
  uint64_t now = monotonic_ns();
  if (state_ != State::dead && now - memory_sampled_ns_ >= kMemorySampleNs) {
    auto m = sandbox_memory(cgroups_, stem_);
    if (m) memory_bytes_ = *m;
    memory_sampled_ns_ = now;
  }
  return state_ == State::dead ? 0 : memory_bytes_;
}

void Template::mark_dead(const std::string &why) {
  if (state_ == State::dead) return;
  FV_INFO("template %s: %s", name_.c_str(), why.c_str());
  state_ = State::dead;
}

void Template::on_control(io::Completion &c, int result, uint32_t) {
  auto &self = c.owner_as<Template>();
  if (result > 0 && self.control_buf_[0] == kReady && self.state_ == State::starting) {
    self.state_ = State::ready;
    FV_INFO("template %s: ready %.1f ms after spawn", self.name_.c_str(),
            static_cast<double>(monotonic_ns() - self.started_ns_) / 1e6);
  }
  if (result > 0) {
    self.ring_.recv(self.control_op_, self.control_fd_, self.control_buf_, sizeof self.control_buf_);
    return;
  }
  self.mark_dead(result == 0 ? "its control socket closed" : "control socket error");
  if (self.control_fd_ >= 0) ::shutdown(self.control_fd_, SHUT_RDWR);
}

void Template::on_exit(io::Completion &c, int, uint32_t) {
  auto &self = c.owner_as<Template>();
  proc::ExitStatus status;
  auto reaped = self.stem_.child.try_reap(&status);
  if (reaped && !*reaped) {
    self.ring_.poll(self.exit_op_, self.stem_.child.pidfd(), POLLIN);
    return;
  }
  self.mark_dead("its sandbox " + status.describe());
  if (!self.last_error_.empty() && !status.exited) FV_INFO("template %s: last words: %s", self.name_.c_str(), self.last_error_.c_str());
  Status st = cleanup_stem(self.cgroups_, self.stem_);
  self.cleaned_ = st.ok();
}

void Template::on_log(io::Completion &c, int result, uint32_t) {
  auto &self = c.owner_as<Template>();
  if (result <= 0) return;  // end of stream: the sandbox is gone
  self.log_line_.append(self.log_buf_, static_cast<size_t>(result));
  size_t nl;
  while ((nl = self.log_line_.find('\n')) != std::string::npos) {
    self.last_error_ = self.log_line_.substr(0, nl);
    FV_INFO("template %s: %s", self.name_.c_str(), self.last_error_.c_str());
    self.log_line_.erase(0, nl + 1);
  }
  if (self.log_line_.size() > 4096) self.log_line_.clear();  // a line without end: bounded
  self.ring_.read(self.log_op_, self.stem_.log, self.log_buf_, sizeof self.log_buf_);
}

}  // namespace faasvisor::backend
