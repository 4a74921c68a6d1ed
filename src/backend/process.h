// The process backend: the function's command runs as a Linux process in its own pid, mount,
// ipc, uts and net namespaces, with a read-only view of the host, a private /tmp, and a
// per-instance cgroup. Sandboxes ("stems", see proc/spawn.h) are made ahead of demand and
// kept in a small pool, so a cold start only pays for exec and the function's own init.
#pragma once

#include <deque>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "backend/backend.h"
#include "backend/template.h"
#include "io/ring.h"
#include "io/timer.h"
#include "proc/reaper.h"
#include "proc/spawn.h"

namespace faasvisor::backend {

struct ProcessBackendOptions {
  std::string stem_path;          // the faasvisor-stem binary
  std::string adapter_path;       // faasvisor-adapter (the host is visible in the sandbox)
  uint32_t stem_pool_size = 16;   // sandboxes kept ready; 0 makes each on demand
  std::string template_library;   // libfaasvisor-template.so (docs/templates.md); empty: no templates
  uint32_t primed_per_template = 2;  // sandboxes a template's children wait in ahead of demand
};

// Sandboxes (faasvisor-stem), shared by the process backend and the VM backends (QEMU runs
// in one). A fresh sandbox in cgroup `cgroup_name` of the node's tree, waiting on stdin for
// its GO message (sandbox_available: whether faasvisor-stem is there, else why not):
bool sandbox_available(const std::string &stem_path, std::string *why_not);
// netns_dir: the node's prepared namespaces (StemSpec::netns_dir), or empty;
// template_control_fd: a template's end of its control socket (StemSpec), or -1.
Result<Launched> spawn_sandbox(const proc::CgroupTree &cgroups, const std::string &stem_path,
                               std::string_view cgroup_name, const std::string &netns_dir = {},
                               int template_control_fd = -1);
// Ends a sandbox that was never started (or whose GO message could not be written), waits
// for it (bounded: the outer stem does nothing else) and removes what it left.
// Ends an unused sandbox without blocking: its exit comes through the reaper, which then
// removes its cgroup if the stem could not (cleanup_stem).
void discard_sandbox(const proc::CgroupTree &cgroups, proc::Reaper &reaper, Launched &stem);
// After a sandbox is gone: nothing if it exited by itself (it removed its cgroup
// directories), else the removal of what is left. EBUSY: call again.
Status cleanup_stem(const proc::CgroupTree &cgroups, Launched &launched);
// The same for a stem's cgroup apart from its Launched (a discarded stem, once reaped).
Status cleanup_stem_cgroup(const proc::CgroupTree &cgroups, const proc::Child &stem,
                           proc::InstanceCgroup &cgroup);
// A sandbox's memory: the PSS of its cgroup's processes, else the cgroup's usage.
inline Result<uint64_t> sandbox_memory(const proc::CgroupTree &cgroups, const Launched &launched) {
  auto pss = cgroups.process_pss(launched.cgroup);
  return pss ? pss : cgroups.memory_usage(launched.cgroup);
}

class ProcessBackend final : public Backend {
 public:
  ProcessBackend(const proc::CgroupTree &cgroups, io::Ring &ring, io::TimerQueue &timers,
                 ProcessBackendOptions options);
  ~ProcessBackend() override;

  const char *name() const override { return "process"; }
  bool available(std::string *why_not) const override;
  Status validate(const FunctionSpec &spec) const override;
  Result<Launched> launch(const FunctionSpec &spec, std::string_view instance_name) override;
  Status cleanup(Launched &launched) override;
  Result<uint64_t> memory_usage(const Launched &launched) const override {
    return sandbox_memory(cgroups_, launched);
  }
  proc::MemoryFiles memory_files(const Launched &launched) const override {
    return cgroups_.memory_files(launched.cgroup, true);
  }
  bool out_of_memory(const Launched &launched) const override {
    return cgroups_.oom_kills(launched.cgroup) > 0;
  }

  bool network_support(std::string *) const override { return true; }
  void drain() override;
  // The outer stem kills and reaps the sandbox's init, then exits (src/stem/stem.c).
  int kill_signal() const override { return SIGUSR2; }
  size_t stems_ready() const { return stems_.size(); }

  void prepare(const FunctionSpec &spec) override {
    if (spec.use_template) ready_template(spec);
  }
  void retire(const FunctionSpec &spec) override;
  KeptFacts kept_facts(const FunctionSpec &spec) override;
  bool idle() const override;

 private:
  static void on_refill(io::Timer &t);
  Result<Launched> make_stem();
  Result<Launched> take_stem();
  void discard(Launched &stem);
  // The definition's template if it is ready to fork; else starts (or rebuilds) it and
  // returns nullptr: this cold start takes the exec path.
  struct KeptTemplate {
    std::unique_ptr<Template> current;
    // Pooled stems the template has already forked a child into (GO mode adopt): the child
    // has joined the stem's namespaces and cgroups (the slow part: a cgroup migration) and
    // waits for the start message naming the instance (docs/templates.md).
    std::deque<Launched> primed;
    uint64_t builds = 0;
    // Primed sandboxes to keep: primed_per_template, or as many as the largest burst of cold
    // starts lately (kBurstWindowNs apart at most), up to the stem pool's size, so that the
    // next burst finds them ready; back to the default after kBurstMemoryNs without one.
    uint32_t primed_target = 0;
    uint32_t burst = 0;            // cold starts in the current window
    uint64_t burst_started_ns = 0;
    uint64_t last_burst_ns = 0;
  };
  void note_cold_start(KeptTemplate &kept);
  KeptTemplate *ready_template(const FunctionSpec &spec);
  Result<Launched> launch_from_template(KeptTemplate &kept, const FunctionSpec &spec, std::string_view instance_name);
  Status prime(Template &t, const FunctionSpec &spec, std::deque<Launched> &primed);
  // The GO message of an instance (exec), a template, or a primed stem (adopt).
  // lease: the instance's prepared network namespace (faasvisor.network=egress), or null.
  Result<std::string> go_message(const FunctionSpec &spec, std::string_view instance_name,
                                 proc::GoSpec::Mode mode, const net::Lease *lease = nullptr) const;
  void schedule_priming();
  static void on_prime(io::Timer &t);
  void discard_template(KeptTemplate &kept);
  void free_finished_templates();

  const proc::CgroupTree &cgroups_;
  io::Ring &ring_;
  io::TimerQueue &timers_;
  proc::Reaper reaper_{ring_};  // discarded stems, until they have exited
  ProcessBackendOptions options_;
  std::deque<Launched> stems_;
  // Keyed by the definition: an update makes a new FunctionSpec and retires the old one's.
  std::map<const FunctionSpec *, KeptTemplate> templates_;
  std::vector<std::unique_ptr<Template>> retired_;  // ending; freed once finished()
  uint64_t next_template_id_ = 1;
  io::Timer refill_timer_;
  io::Timer prime_timer_;
  uint64_t next_stem_id_ = 1;
  bool refill_failing_ = false;
  bool draining_ = false;
};

}  // namespace faasvisor::backend
