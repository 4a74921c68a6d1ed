#include "backend/process.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstring>

#include "backend/environment.h"
#include "proc/spawn.h"
#include "util/clock.h"
#include "util/log.h"

namespace faasvisor::backend {
namespace {
// Refills run just after the cold start that emptied a slot, never inside it.
// A refill joins new stems to their cgroups, and a cgroup migration makes every fork on
// the machine wait for it (cgroup_threadgroup_rwsem): keep it clear of the cold start that
// triggered it, which forks the function moments later.
constexpr uint64_t kRefillDelayNs = 50'000'000;
constexpr uint64_t kRefillRetryNs = 1'000'000'000;
constexpr uint64_t kRefillStepNs = 2'000'000;

// A GO message carrying secrets can pass a pipe's default 64 KiB: grow the stem's input
// pipe towards it (up to /proc/sys/fs/pipe-max-size, 1 MiB by default, without
// CAP_SYS_RESOURCE). Whatever still does not fit is written later, on the ring
// (Launched::initial_input).
void grow_pipe(int fd, size_t bytes) {
  int size = fcntl(fd, F_GETPIPE_SZ);
  if (size < 0 || static_cast<size_t>(size) >= bytes) return;
  static const int max_size = [] {
    int max = 1 << 20;
    if (FILE *f = std::fopen("/proc/sys/fs/pipe-max-size", "re")) {
      if (std::fscanf(f, "%d", &max) != 1) max = 1 << 20;
      std::fclose(f);
    }
    return max;
  }();
  int want = static_cast<int>(std::min<size_t>(bytes, static_cast<size_t>(max_size)));
  if (want > size) (void)fcntl(fd, F_SETPIPE_SZ, want);  // best effort: the rest goes later
}

// The process backend mounts each instance's secrets on /var/openfaas/secrets; the host's
// read-only root needs that directory as a mount point (an empty one: nothing is written
// to the host).
Status ensure_secrets_mount_point() {
  for (const char *dir : {"/var", "/var/openfaas", "/var/openfaas/secrets"})
    if (mkdir(dir, 0755) < 0 && errno != EEXIST)
      return plain_error("invalid deployment", std::string("field 'secrets': cannot make the mount point ") + dir + ": " + std::strerror(errno));
  return {};
}
}  // namespace

ProcessBackend::ProcessBackend(const proc::CgroupTree &cgroups, io::TimerQueue &timers,
                               ProcessBackendOptions options)
    : cgroups_(cgroups), timers_(timers), options_(std::move(options)) {
  refill_timer_.owner = this;
  refill_timer_.callback = &ProcessBackend::on_refill;
  if (options_.stem_pool_size > 0) timers_.start(refill_timer_, monotonic_ns());
}

ProcessBackend::~ProcessBackend() { drain(); }

void ProcessBackend::drain() {
  draining_ = true;
  timers_.stop(refill_timer_);
  while (!stems_.empty()) {
    discard(stems_.front());
    stems_.pop_front();
  }
}

bool sandbox_available(const std::string &stem_path, std::string *why_not) {
  if (access(stem_path.c_str(), X_OK) == 0) return true;
  *why_not = "the sandbox helper " + stem_path + " is missing";
  return false;
}

bool ProcessBackend::available(std::string *why_not) const {
  return sandbox_available(options_.stem_path, why_not);
}

Status ProcessBackend::validate(const FunctionSpec &spec) const {
  struct stat st{};
  if (stat(spec.image.c_str(), &st) < 0 || !S_ISDIR(st.st_mode))
    return plain_error("invalid deployment", "field 'image': '" + spec.image + "' is not a directory on this node");
  if (!spec.secrets.empty()) return ensure_secrets_mount_point();
  return {};
}

Result<Launched> spawn_sandbox(const proc::CgroupTree &cgroups, const std::string &stem_path,
                               std::string_view cgroup_name) {
  // The stem makes, joins and at its end removes these directories itself, off the loop.
  proc::InstanceCgroup cgroup = cgroups.plan(cgroup_name);
  proc::StemSpec spec;
  spec.stem_path = stem_path;
  spec.cgroup = &cgroup;
  auto spawned = proc::spawn_stem(spec);
  if (!spawned) return spawned.error();  // nothing ran: no directory was made
  Launched out;
  out.child = std::move(spawned->child);
  out.to_instance = spawned->stdin_fd;
  out.from_instance = spawned->stdout_fd;
  out.log = spawned->stderr_fd;
  out.cgroup = std::move(cgroup);
  return out;
}

void discard_sandbox(const proc::CgroupTree &cgroups, Launched &stem) {
  for (int fd : {stem.to_instance, stem.from_instance, stem.log})
    if (fd >= 0) close(fd);
  stem.to_instance = stem.from_instance = stem.log = -1;
  // An unused stem waits on stdin: end of input, or SIGUSR2 if it is still setting up, and
  // the outer stem reaps its init before it exits. Bounded: the outer stem does nothing else.
  stem.child.signal(SIGUSR2);
  stem.child.wait();
  cleanup_stem(cgroups, stem);
  stem.child = proc::Child();
}

Result<Launched> ProcessBackend::make_stem() {
  return spawn_sandbox(cgroups_, options_.stem_path, "stem-" + std::to_string(next_stem_id_++));
}

void ProcessBackend::discard(Launched &stem) { discard_sandbox(cgroups_, stem); }

void ProcessBackend::on_refill(io::Timer &t) {
  auto &self = t.owner_as<ProcessBackend>();
  if (self.stems_.size() >= self.options_.stem_pool_size) return;
  // One sandbox per tick: clone3 with new namespaces costs the loop about a millisecond, so
  // a refill is spread out and invocations are served between its steps.
  auto stem = self.make_stem();
  if (!stem) {
    if (!self.refill_failing_)
      FV_WARN("cannot prepare a sandbox: %s (retrying)", stem.error().message().c_str());
    self.refill_failing_ = true;
    self.timers_.start(self.refill_timer_, monotonic_ns() + kRefillRetryNs);
    return;
  }
  self.refill_failing_ = false;
  self.stems_.push_back(std::move(*stem));
  if (self.stems_.size() < self.options_.stem_pool_size)
    self.timers_.start(self.refill_timer_, monotonic_ns() + kRefillStepNs);
}

Result<Launched> ProcessBackend::launch(const FunctionSpec &spec, std::string_view instance_name) {
  proc::GoSpec go;
  go.directory = spec.image;
  go.argv = spec.argv;
  go.env = instance_environment(spec, instance_name);
  // /tmp is a tmpfs charged to the instance's memory cgroup; cap it at a quarter of the limit.
  go.tmp_size_bytes = spec.memory_bytes / 4;
  // The stem writes the limits to its cgroup before it execs the function.
  go.limits.memory_bytes = spec.memory_bytes;
  go.limits.cpu_millis = spec.cpu_millis;
  go.limits.pids_max = spec.pids_max;
  auto values = secret_values(spec);
  if (!values) return values.error();
  for (const secrets::SecretValue &v : *values) go.secrets.emplace_back(v.name, v.value);
  std::string message = proc::encode_go(go);
  struct Wipe {
    std::string &s;
    ~Wipe() { secrets::wipe(s); }
  } wipe_message{message};

  for (;;) {
    Launched stem;
    if (!stems_.empty()) {
      stem = std::move(stems_.front());
      stems_.pop_front();
    } else {
      auto fresh = make_stem();
      if (!fresh) return fresh.error();
      stem = std::move(*fresh);
    }
    if (options_.stem_pool_size > 0 && !refill_timer_.armed() && !draining_)
      timers_.start(refill_timer_, monotonic_ns() + kRefillDelayNs);
    // The pipe is empty: this non-blocking write usually takes the whole message, the more
    // so once the pipe is grown towards its size. What it does not take (secrets or a big
    // environment can pass what a pipe holds) the instance writes through the ring as the
    // stem reads. EPIPE means the stem died in the pool: take another.
    grow_pipe(stem.to_instance, message.size());
    ssize_t n = ::write(stem.to_instance, message.data(), message.size());
    if (n < 0 && errno == EAGAIN) n = 0;
    if (n >= 0) {
      stem.initial_input.assign(message, static_cast<size_t>(n));
      return stem;
    }
    int err = errno;
    discard(stem);
    if (err != EPIPE) return errno_error("write GO message to the sandbox", err);
  }
}

// A stem that exited by itself removed its cgroup directories (src/stem/stem.c ends by
// SIGKILL when it leaves one): nothing to do on the loop. One killed by a signal (the node's
// last resort, or an OOM kill it left the memory directory for) or never started leaves the
// removal to us.
Status cleanup_stem(const proc::CgroupTree &cgroups, Launched &launched) {
  const proc::Child &stem = launched.child;
  if (stem.reaped() && stem.exit_status().exited) {
    launched.cgroup.dirs.clear();
    return {};
  }
  return cgroups.remove(launched.cgroup);
}

Status ProcessBackend::cleanup(Launched &launched) { return cleanup_stem(cgroups_, launched); }

}  // namespace faasvisor::backend
