// The process backend: the function's command runs as a Linux process in its own pid, mount,
// ipc, uts and net namespaces, with a read-only view of the host, a private /tmp, and a
// per-instance cgroup. Sandboxes ("stems", see proc/spawn.h) are made ahead of demand and
// kept in a small pool, so a cold start only pays for exec and the function's own init.
#pragma once

#include <deque>
#include <string>

#include "backend/backend.h"
#include "io/timer.h"

namespace faasvisor::backend {

struct ProcessBackendOptions {
  std::string stem_path;          // the faasvisor-stem binary
  uint32_t stem_pool_size = 16;   // sandboxes kept ready; 0 makes each on demand
};

// After a sandbox (faasvisor-stem) is gone: nothing if it exited by itself (it removed its
// cgroup directories), else the removal of what is left. EBUSY: call again.
Status cleanup_stem(const proc::CgroupTree &cgroups, Launched &launched);

class ProcessBackend final : public Backend {
 public:
  ProcessBackend(const proc::CgroupTree &cgroups, io::TimerQueue &timers,
                 ProcessBackendOptions options);
  ~ProcessBackend() override;

  const char *name() const override { return "process"; }
  bool available(std::string *why_not) const override;
  Status validate(const FunctionSpec &spec) const override;
  Result<Launched> launch(const FunctionSpec &spec, std::string_view instance_name) override;
  Status cleanup(Launched &launched) override;
  Result<uint64_t> memory_usage(const Launched &launched) const override {
    auto pss = cgroups_.process_pss(launched.cgroup);
    return pss ? pss : cgroups_.memory_usage(launched.cgroup);
  }
  bool out_of_memory(const Launched &launched) const override {
    return cgroups_.oom_kills(launched.cgroup) > 0;
  }

  void drain() override;
  // The outer stem kills and reaps the sandbox's init, then exits (src/stem/stem.c).
  int kill_signal() const override { return SIGUSR2; }
  size_t stems_ready() const { return stems_.size(); }

 private:
  static void on_refill(io::Timer &t);
  Result<Launched> make_stem();
  void discard(Launched &stem);

  const proc::CgroupTree &cgroups_;
  io::TimerQueue &timers_;
  ProcessBackendOptions options_;
  std::deque<Launched> stems_;
  io::Timer refill_timer_;
  uint64_t next_stem_id_ = 1;
  bool refill_failing_ = false;
  bool draining_ = false;
};

}  // namespace faasvisor::backend
