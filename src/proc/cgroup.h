// Per-instance cgroups under a subtree of the node's own:
//   <hierarchy>/faasvisor/node-<pid>/<instance>
// On cgroup v2 there is one hierarchy; on v1 (and the hybrid layout of these machines, where
// v2 has no controllers) one directory per controller (memory, cpu, pids). Either way the
// sandbox joins by writing "0" to the cgroup.procs files the node opened for it.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "util/result.h"

namespace faasvisor::proc {

enum class CgroupMode { none, v1, v2 };
const char *to_string(CgroupMode mode);

struct CgroupLimits {
  uint64_t memory_bytes = 0;  // 0: no limit
  uint32_t cpu_millis = 0;    // 1000 = one CPU; 0: no quota
  uint32_t pids_max = 0;      // 0: no limit
};

// One instance's cgroup. Owns its directories; the owner calls CgroupTree::remove() once the
// instance's processes are gone (rmdir fails with EBUSY before that).
struct InstanceCgroup {
  std::vector<std::string> dirs;  // one per hierarchy
  std::vector<int> procs_fds;     // cgroup.procs of each dir, written by the sandbox

  bool empty() const { return dirs.empty(); }
  void close_fds();  // after the spawn, the parent no longer needs them
};

class CgroupTree {
 public:
  // Detects the layout and creates this node's subtree. Mode none (with a reason) if the
  // host gives us no writable cgroup filesystem.
  static CgroupTree detect(std::string_view node_name);

  CgroupMode mode() const { return mode_; }
  const std::string &why_none() const { return why_none_; }
  const std::vector<std::string> &roots() const { return roots_; }

  // Creates an instance cgroup with no limits yet (stems are made before their function is
  // known), then apply_limits() sets them; the writes are cheap even with tasks inside.
  Result<InstanceCgroup> create(std::string_view instance_name) const;
  Status apply_limits(const InstanceCgroup &cg, const CgroupLimits &limits) const;
  // rmdir of every directory; EBUSY (tasks not yet released) is returned so the caller retries.
  Status remove(InstanceCgroup &cg) const;
  // How many times the kernel's OOM killer acted inside the cgroup (0 if unknown).
  uint64_t oom_kills(const InstanceCgroup &cg) const;
  // The proportional set size (PSS) of every process in the instance's cgroup: its fair
  // share of memory, shared pages (the runtime, libraries) split among their users. The
  // cgroup's own usage counts a shared page only where it was first touched.
  Result<uint64_t> process_pss(const InstanceCgroup &cg) const;
  // Reads the memory usage of an instance (bytes), or an error.
  Result<uint64_t> memory_usage(const InstanceCgroup &cg) const;
  // Removes the node's subtree (and "faasvisor" if it is then empty).
  void remove_roots() const;

 private:
  CgroupMode mode_ = CgroupMode::none;
  std::string why_none_;
  std::vector<std::string> roots_;        // node-<pid> directories, one per hierarchy
  std::vector<std::string> controllers_;  // v1: controller of each root
};

}  // namespace faasvisor::proc
