// Per-instance cgroups under a subtree of the node's own:
//   <hierarchy>/faasvisor/node-<pid>/<instance>
// On cgroup v2 there is one hierarchy; on v1 (and the hybrid layout of these machines, where
// v2 has no controllers) one directory per controller (memory, cpu, pids).
//
// The node makes and removes only its subtree. An instance's directories are made, limited,
// joined and removed by its sandbox (faasvisor-stem; for containers, the OCI runtime): on
// cgroup v1 a mkdir or rmdir can wait tens of milliseconds for the kernel, which must not
// stall the node's event loop. The node
// names the directories (plan), reads them while the instance lives (usage, PSS, OOM kills),
// and removes them only after a sandbox that did not exit by itself (remove).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "util/result.h"

namespace faasvisor::proc {

enum class CgroupMode { none, v1, v2 };
const char *to_string(CgroupMode mode);

// Whether the node that named its subtree node-<pid> still runs: its process holds the lock
// on /run/faasvisor/live/<pid> (every process with a node does: an embedder has any name),
// or, without that file, the pid exists and is a faasvisor program. A pid the kernel gave to something else since counts as dead; one
// that is again some faasvisor process counts as alive (never touch what might be live).
// In a nested pid namespace every node counts as alive: its pids are not the ones in the
// names, and a wrong "dead" would kill a live node's instances.
bool node_alive(int pid);

// What a sweep of dead nodes found and removed (CgroupTree::detect runs one; so does the
// OCI backend for the hierarchies the tree does not use).
struct SweepReport {
  uint32_t nodes = 0;       // dead node-<pid> subtrees
  uint32_t killed = 0;      // processes still in them, SIGKILLed
  uint32_t removed = 0;     // cgroup directories removed
  uint32_t left = 0;        // directories that could not be removed (still busy at the deadline)
};
// Under `parent` (<hierarchy>/faasvisor), for every node-<pid> whose node is dead: SIGKILLs
// every process in the subtree (instances, containers, VMMs a killed node left), waits up to
// `wait_ms` for them to leave, then removes the directories deepest first. Blocking: for
// the node's start, before it serves.
void sweep_dead_nodes(const std::string &parent, SweepReport &report, uint64_t wait_ms = 3000);

struct CgroupLimits {
  uint64_t memory_bytes = 0;  // 0: no limit
  uint32_t cpu_millis = 0;    // 1000 = one CPU; 0: no quota
  uint32_t pids_max = 0;      // 0: no limit
};

// One instance's cgroup: its directories, one per hierarchy, and the controller of each
// ("memory", "cpu", "pids" on v1, "unified" on v2). The sandbox creates them.
struct InstanceCgroup {
  std::vector<std::string> dirs;
  std::vector<std::string> controllers;

  bool empty() const { return dirs.empty(); }
};

// Where an instance's memory is read without blocking the loop (pool/memory_meter.h reads
// them through the ring): the PSS of the processes listed in `procs` (their smaps_rollup),
// else the number in `usage`. Empty strings: not that way.
struct MemoryFiles {
  std::string procs;
  std::string usage;
  bool empty() const { return procs.empty() && usage.empty(); }
};

class CgroupTree {
 public:
  // Detects the layout and creates this node's subtree. Mode none (with a reason) if the
  // host gives us no writable cgroup filesystem.
  static CgroupTree detect(std::string_view node_name);

  CgroupMode mode() const { return mode_; }
  const std::string &why_none() const { return why_none_; }
  const std::vector<std::string> &roots() const { return roots_; }
  // The node's name (node-<pid>[-<n>]), which names its subtree, and its run dir also when
  // there are no cgroups (mode none).
  const std::string &node_name() const { return node_name_; }

  // The directories of an instance cgroup named instance_name. No system call: the sandbox
  // creates them (src/stem/stem.c), limits them and joins them.
  InstanceCgroup plan(std::string_view instance_name) const;
  // rmdir of every directory still there (the sandbox removes its own when it ends, unless
  // it was killed or its OOM killer acted); EBUSY (tasks not yet released) is returned so
  // the caller retries.
  Status remove(InstanceCgroup &cg) const;
  // How many times the kernel's OOM killer acted inside the cgroup (0 if unknown).
  uint64_t oom_kills(const InstanceCgroup &cg) const;
  // The proportional set size (PSS) of every process in the instance's cgroup: its fair
  // share of memory, shared pages (the runtime, libraries) split among their users. The
  // cgroup's own usage counts a shared page only where it was first touched.
  Result<uint64_t> process_pss(const InstanceCgroup &cg) const;
  // Reads the memory usage of an instance (bytes), or an error.
  Result<uint64_t> memory_usage(const InstanceCgroup &cg) const;
  // The files process_pss (with pss) and memory_usage read, for a reader on the ring.
  MemoryFiles memory_files(const InstanceCgroup &cg, bool pss) const;
  // Removes the node's subtree (and "faasvisor" if it is then empty).
  void remove_roots() const;
  // What detect() found left by dead nodes and removed.
  const SweepReport &swept() const { return swept_; }

 private:
  CgroupMode mode_ = CgroupMode::none;
  std::string why_none_;
  std::string node_name_;
  std::vector<std::string> roots_;        // node-<pid> directories, one per hierarchy
  std::vector<std::string> controllers_;  // v1: controller of each root
  SweepReport swept_;
  void log_sweep() const;
};

}  // namespace faasvisor::proc
