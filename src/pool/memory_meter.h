// Measures one instance's memory through the ring, so the loop never reads /proc itself.
//
// Reading smaps_rollup walks the process's page tables in the kernel: done on the loop for
// 64 instances per tick it stalled every connection for a millisecond or more, more under
// load (docs/performance.md). Here each file is an OPENAT and a READ on the ring; procfs and
// cgroupfs reads cannot be done without blocking, so the kernel runs them in its io-wq
// workers, off the loop's thread. One measurement is a short chain: read cgroup.procs, then
// each listed process's smaps_rollup (the sum of their Pss), else the cgroup's usage file.
//
// The meter is embedded in its Instance, which is freed only when the meter is not busy.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "io/ring.h"
#include "proc/cgroup.h"

namespace faasvisor::pool {

class MemoryMeter {
 public:
  // Called at the end of every measurement, as its last act (it may free the meter's
  // owner): measured false if no figure could be read (the instance is gone, its cgroup
  // removed, the read cancelled).
  using Done = void (*)(MemoryMeter &self, bool measured, uint64_t bytes);

  MemoryMeter(void *owner, Done done);
  MemoryMeter(const MemoryMeter &) = delete;
  MemoryMeter &operator=(const MemoryMeter &) = delete;
  ~MemoryMeter();

  // Starts a measurement unless one is under way (then nothing: the next tick catches up).
  void start(io::Ring &ring, proc::MemoryFiles files);
  bool busy() const { return op_.in_flight; }
  // The meter's part of an instance that ends: cancel what is in flight (its CQE still comes).
  void cancel(io::Ring &ring) { ring.cancel(op_); }
  template <typename T>
  T &owner_as() { return *static_cast<T *>(owner_); }

 private:
  enum class Phase { procs, rollup, usage };
  static void on_op(io::Completion &c, int result, uint32_t flags);
  void open(Phase phase, std::string path);
  void next_process();
  void parse(size_t len);

  void *owner_;
  Done done_;
  io::Ring *ring_ = nullptr;
  io::Completion op_{};
  Phase phase_ = Phase::procs;
  bool reading_ = false;  // op_ is the READ (else the OPENAT)
  int fd_ = -1;
  proc::MemoryFiles files_;
  std::string path_;      // read by the kernel until the OPENAT's CQE
  std::vector<int> pids_;
  size_t next_pid_ = 0;
  uint64_t pss_kb_ = 0;
  bool any_pss_ = false;
  uint64_t usage_bytes_ = 0;
  bool have_usage_ = false;
  // Filled by the kernel until the READ's CQE. cgroup.procs of a sandbox lists a few pids;
  // smaps_rollup has Pss on its third line; a usage file is one number. A longer
  // cgroup.procs is measured by the processes that fit.
  char buf_[2048];
};

}  // namespace faasvisor::pool
