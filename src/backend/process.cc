#include "backend/process.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstring>

#include "backend/environment.h"
#include "proc/spawn.h"
#include "secrets/table.h"
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
constexpr uint64_t kTemplateRebuildNs = 1'000'000'000;
constexpr uint64_t kBurstWindowNs = 100'000'000;
constexpr uint64_t kBurstMemoryNs = 600'000'000'000;

// A GO message may hold secret values: overwritten before its memory is released.
struct WipeOnExit {
  std::string &message;
  ~WipeOnExit() { secrets::wipe(message); }
};

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

ProcessBackend::ProcessBackend(const proc::CgroupTree &cgroups, io::Ring &ring, io::TimerQueue &timers,
                               ProcessBackendOptions options)
    : cgroups_(cgroups), ring_(ring), timers_(timers), options_(std::move(options)) {
  refill_timer_.owner = this;
  refill_timer_.callback = &ProcessBackend::on_refill;
  prime_timer_.owner = this;
  prime_timer_.callback = &ProcessBackend::on_prime;
  if (options_.stem_pool_size > 0) timers_.start(refill_timer_, monotonic_ns());
}

ProcessBackend::~ProcessBackend() {
  drain();
  timers_.stop(prime_timer_);
  retired_.clear();  // each kills and reaps what is left of its template (~Template)
}

void ProcessBackend::drain() {
  draining_ = true;
  timers_.stop(refill_timer_);
  for (auto &[spec, kept] : templates_) discard_template(kept);
  templates_.clear();
  schedule_priming();  // only the sweep runs now
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
  if (!spec.secrets.empty())
    if (Status st = ensure_secrets_mount_point(); !st.ok()) return st;
  return check_adapter(spec, options_.adapter_path);
}

Result<Launched> spawn_sandbox(const proc::CgroupTree &cgroups, const std::string &stem_path,
                               std::string_view cgroup_name, const std::string &netns_dir,
                               int template_control_fd) {
  // The stem makes, joins and at its end removes these directories itself, off the loop.
  proc::InstanceCgroup cgroup = cgroups.plan(cgroup_name);
  proc::StemSpec spec;
  spec.stem_path = stem_path;
  spec.cgroup = &cgroup;
  spec.netns_dir = netns_dir;
  spec.template_control_fd = template_control_fd;
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

void discard_sandbox(const proc::CgroupTree &cgroups, proc::Reaper &reaper, Launched &stem) {
  for (int fd : {stem.to_instance, stem.from_instance, stem.log})
    if (fd >= 0) close(fd);
  stem.to_instance = stem.from_instance = stem.log = -1;
  // An unused stem waits on stdin: end of input, or SIGUSR2 if it is still setting up, and
  // the outer stem reaps its init before it exits. Its exit is a completion (the reaper
  // watches the pidfd); then cleanup_stem removes the cgroup if the stem did not.
  reaper.end(std::move(stem.child), SIGUSR2,
             [&cgroups, cgroup = std::move(stem.cgroup)](const proc::Child &child) mutable {
               (void)cleanup_stem_cgroup(cgroups, child, cgroup);
             });
}

Result<Launched> ProcessBackend::make_stem() {
  std::string why;
  const net::Network *net = network();
  std::string netns_dir = net != nullptr && net->available(&why) ? net->netns_dir() : std::string();
  return spawn_sandbox(cgroups_, options_.stem_path, "stem-" + std::to_string(next_stem_id_++), netns_dir);
}

void ProcessBackend::discard(Launched &stem) { discard_sandbox(cgroups_, reaper_, stem); }

void ProcessBackend::on_refill(io::Timer &t) {
  auto &self = t.owner_as<ProcessBackend>();
  if (self.stems_.size() >= self.options_.stem_pool_size) return;
  // One sandbox per tick: the loop's part of a stem is a posix_spawn (a vfork and exec) and
  // its pipes, but each new stem then makes its namespaces and cgroup on the same CPUs, so
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

Result<Launched> ProcessBackend::take_stem() {
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
  return stem;
}

void ProcessBackend::free_finished_templates() {
  std::erase_if(retired_, [](const std::unique_ptr<Template> &t) { return t->finished(); });
}

ProcessBackend::KeptTemplate *ProcessBackend::ready_template(const FunctionSpec &spec) {
  free_finished_templates();
  if (options_.template_library.empty() || draining_) return nullptr;
  KeptTemplate &kept = templates_[&spec];
  if (kept.current && kept.current->state() == Template::State::ready) return &kept;
  if (kept.current && kept.current->state() == Template::State::starting) return nullptr;
  // None yet, or a dead one: (re)build, at most once a second (a template that dies at once,
  // say at import, is not rebuilt in a loop).
  if (kept.current && monotonic_ns() - kept.current->started_ns() < kTemplateRebuildNs) return nullptr;
  discard_template(kept);
  auto t = std::make_unique<Template>(ring_, cgroups_, next_template_id_++);
  Status st = t->start(spec, options_.stem_path, [&](std::string_view name) {
    return go_message(spec, name, proc::GoSpec::Mode::template_runtime);
  });
  ++kept.builds;
  if (!st.ok()) FV_WARN("cannot start the template of %s: %s", spec.name.c_str(), st.error().message().c_str());
  kept.current = std::move(t);
  schedule_priming();
  return nullptr;
}

Result<std::string> ProcessBackend::go_message(const FunctionSpec &spec, std::string_view instance_name,
                                               proc::GoSpec::Mode mode, const net::Lease *lease) const {
  proc::GoSpec go;
  go.directory = spec.image;
  go.argv = instance_argv(spec, options_.adapter_path);
  go.env = instance_environment(spec, instance_name);
  if (mode == proc::GoSpec::Mode::template_runtime) {
    go.env.push_back("FAASVISOR_TEMPLATE_FD=3");
    go.env.push_back("FAASVISOR_TEMPLATE_LIB=" + options_.template_library);
  }
  go.mode = mode;
  // /tmp is a tmpfs charged to the instance's memory cgroup; cap it at a quarter of the limit.
  go.tmp_size_bytes = spec.memory_bytes / 4;
  // The stem writes the limits to its cgroup before it execs the function (a template is
  // held to its function's limits too).
  go.limits.memory_bytes = spec.memory_bytes;
  go.limits.cpu_millis = spec.cpu_millis;
  go.limits.pids_max = spec.pids_max;
  auto values = secret_values(spec);
  if (!values) return values.error();
  for (const secrets::SecretValue &v : *values) go.secrets.emplace_back(v.name, v.value);
  // A prepared namespace: the stem joins it (setns) before it execs the function.
  if (lease != nullptr && lease->held()) {
    go.netns_name = lease->name();
    go.resolv_conf = network()->resolv_conf();
  }
  return proc::encode_go(go);
}

Status ProcessBackend::prime(Template &t, const FunctionSpec &spec, std::deque<Launched> &primed) {
  // The secrets are read now, not at the cold start: a secret changed in between reaches
  // the instances primed after the change (docs/templates.md).
  auto message = go_message(spec, "", proc::GoSpec::Mode::adopt);
  if (!message) return message.error();
  WipeOnExit wipe_message{*message};
  for (;;) {
    // Only a pooled stem that has made its namespaces: one made now would not have yet.
    if (stems_.empty()) return plain_error("template", "no prepared sandbox to prime");
    if (!stem_has_namespaces(stems_.front())) {
      stems_.push_back(std::move(stems_.front()));  // still setting up: try it later
      stems_.pop_front();
      return plain_error("template", "the next sandbox is still being prepared");
    }
    auto stem = take_stem();
    if (!stem) return stem.error();
    grow_pipe(stem->to_instance, message->size());
    // Whole or not at all: a primed stem has no instance to write the rest on the ring.
    ssize_t n = ::write(stem->to_instance, message->data(), message->size());
    if (n != static_cast<ssize_t>(message->size())) {
      int err = n < 0 ? errno : EAGAIN;
      discard(*stem);
      if (err == EPIPE) continue;  // died in the pool: take another
      return errno_error("write GO message to the sandbox", err);
    }
    Status st = t.fork_into(*stem);
    if (!st.ok()) {
      discard(*stem);
      return st;
    }
    primed.push_back(std::move(*stem));
    return {};
  }
}

Result<Launched> ProcessBackend::launch_from_template(KeptTemplate &kept, const FunctionSpec &spec,
                                                      std::string_view instance_name) {
  if (kept.primed.empty()) {
    if (Status st = prime(*kept.current, spec, kept.primed); !st.ok()) return st.error();
  }
  note_cold_start(kept);
  std::string start = proc::encode_template_start(instance_name);
  while (!kept.primed.empty()) {
    Launched slot = std::move(kept.primed.front());
    kept.primed.pop_front();
    // The stem has consumed its GO message; the template's child waiting in it reads this
    // and forks the function. A pipe with only that in it: the write completes at once.
    ssize_t n = ::write(slot.to_instance, start.data(), start.size());
    if (n == static_cast<ssize_t>(start.size())) {
      schedule_priming();
      return slot;
    }
    discard(slot);  // the slot died while it waited (EPIPE): take the next
  }
  return plain_error("template", "no primed sandbox left");
}

void ProcessBackend::note_cold_start(KeptTemplate &kept) {
  uint64_t now = monotonic_ns();
  if (now - kept.burst_started_ns > kBurstWindowNs) {
    kept.burst_started_ns = now;
    kept.burst = 0;
  }
  ++kept.burst;
  uint32_t cap = std::max(options_.primed_per_template, options_.stem_pool_size);
  if (kept.burst > options_.primed_per_template) {
    kept.primed_target = std::min(std::max(kept.primed_target, kept.burst), cap);
    kept.last_burst_ns = now;
  } else if (kept.primed_target != 0 && now - kept.last_burst_ns > kBurstMemoryNs) {
    kept.primed_target = 0;  // no burst for a while: back to the default
  }
}

void ProcessBackend::schedule_priming() {
  if (!prime_timer_.armed()) timers_.start(prime_timer_, monotonic_ns() + kRefillDelayNs);
}

// Off the cold start (like the stem pool's refill): each ready template gets its primed
// sandboxes back, one per tick; retired templates that have ended are freed.
void ProcessBackend::on_prime(io::Timer &timer) {
  auto &self = timer.owner_as<ProcessBackend>();
  self.free_finished_templates();
  bool again = !self.retired_.empty();
  for (auto &[spec, kept] : self.templates_)
    again |= kept.current && kept.current->state() == Template::State::starting;  // prime it once ready
  if (again) self.timers_.start(self.prime_timer_, monotonic_ns() + kRefillDelayNs);
  for (auto &[spec, kept] : self.templates_) {
    if (!kept.current || kept.current->state() != Template::State::ready) continue;
    size_t target = std::max(kept.primed_target, self.options_.primed_per_template);
    if (kept.primed.size() >= target || self.draining_) continue;
    Status st = self.prime(*kept.current, *spec, kept.primed);
    if (!st.ok()) FV_DEBUG("priming %s: %s", spec->name.c_str(), st.error().message().c_str());
    // On failure (no prepared sandbox: the pool refills, or --stem-pool 0) try again later.
    self.timers_.start(self.prime_timer_, monotonic_ns() + (st.ok() ? kRefillStepNs : kRefillDelayNs));
    return;
  }
}

void ProcessBackend::discard_template(KeptTemplate &kept) {
  for (Launched &slot : kept.primed) discard(slot);
  kept.primed.clear();
  if (kept.current) {
    kept.current->stop();
    retired_.push_back(std::move(kept.current));
  }
}

void ProcessBackend::retire(const FunctionSpec &spec) {
  auto it = templates_.find(&spec);
  if (it == templates_.end()) return;
  discard_template(it->second);
  templates_.erase(it);
  free_finished_templates();
  schedule_priming();  // and the sweep that frees it once it has ended
}

Backend::KeptFacts ProcessBackend::kept_facts(const FunctionSpec &spec) {
  auto it = templates_.find(&spec);
  if (it == templates_.end() || !it->second.current) return {};
  Template &t = *it->second.current;
  KeptFacts facts;
  facts.state = t.state() == Template::State::ready ? "ready" : t.state() == Template::State::starting ? "starting" : "dead";
  facts.pid = t.pid();
  facts.memory_bytes = t.memory_bytes();
  facts.forks = t.forks();
  facts.builds = it->second.builds;
  facts.primed = it->second.primed.size();
  facts.primed_target = std::max(it->second.primed_target, options_.primed_per_template);
  return facts;
}

bool ProcessBackend::idle() const {
  if (!reaper_.idle()) return false;
  for (const auto &t : retired_)
    if (!t->finished()) return false;
  return true;
}

Result<Launched> ProcessBackend::launch(const FunctionSpec &spec, std::string_view instance_name) {
  // A template's children share its sandbox's namespaces: an egress function runs the exec
  // path, each instance in its own prepared namespace (docs/network.md).
  if (spec.use_template && !spec.network.egress) {
    if (KeptTemplate *kept = ready_template(spec)) {
      auto launched = launch_from_template(*kept, spec, instance_name);
      if (launched) return launched;
      FV_INFO("instance %.*s: not from the template (%s): exec path", static_cast<int>(instance_name.size()),
              instance_name.data(), launched.error().message().c_str());
    }
  }
  auto lease = take_network(spec);
  if (!lease) return lease.error();
  auto message = go_message(spec, instance_name, proc::GoSpec::Mode::exec, &*lease);
  if (!message) return message.error();
  WipeOnExit wipe_message{*message};

  for (;;) {
    auto taken = take_stem();
    if (!taken) return taken.error();
    Launched stem = std::move(*taken);
    // The pipe is empty: this non-blocking write usually takes the whole message, the more
    // so once the pipe is grown towards its size. What it does not take (secrets or a big
    // environment can pass what a pipe holds) the instance writes through the ring as the
    // stem reads. EPIPE means the stem died in the pool: take another.
    grow_pipe(stem.to_instance, message->size());
    ssize_t n = ::write(stem.to_instance, message->data(), message->size());
    if (n < 0 && errno == EAGAIN) n = 0;
    if (n >= 0) {
      stem.initial_input.assign(*message, static_cast<size_t>(n));
      stem.network = std::move(*lease);
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
  return cleanup_stem_cgroup(cgroups, launched.child, launched.cgroup);
}

Status cleanup_stem_cgroup(const proc::CgroupTree &cgroups, const proc::Child &stem,
                           proc::InstanceCgroup &cgroup) {
  if (stem.reaped() && stem.exit_status().exited) {
    cgroup.dirs.clear();
    return {};
  }
  return cgroups.remove(cgroup);
}

Status ProcessBackend::cleanup(Launched &launched) { return cleanup_stem(cgroups_, launched); }

}  // namespace faasvisor::backend
