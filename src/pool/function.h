// A deployed function: its spec (replaced on update), its instances, its warm list and its
// queue of invocations waiting for an instance.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "model/function_spec.h"
#include "pool/instance.h"
#include "io/timer.h"
#include "pool/invocation.h"
#include "pool/keepalive.h"
#include "pool/logbook.h"
#include <map>

#include "stats/histogram.h"
#include "stats/summary.h"
#include "util/intrusive_list.h"

namespace faasvisor::backend {
class Backend;
}

namespace faasvisor::pool {

class Pool;

struct FunctionStats {
  uint64_t cold = 0;
  uint64_t warm = 0;
  uint64_t errors = 0;   // answered 5xx or 429
  stats::Summary init_ms;
  stats::Summary exec_cold_ms;
  stats::Summary exec_warm_ms;
  // For /metrics.
  std::map<int, uint64_t> by_status;
  stats::Histogram exec_seconds;
  stats::Histogram init_seconds;
  uint64_t evictions = 0;        // idle instances stopped to make room under the memory budget
  uint64_t keepalive_stops = 0;  // idle instances stopped by the keep-alive policy
  uint64_t prewarms = 0;         // instances started by the policy ahead of an expected arrival
  // Egress traffic of instances that have ended (live ones are read at query time).
  uint64_t network_sent_bytes = 0;
  uint64_t network_received_bytes = 0;

  // Utilisation accounting: instance-time by state, and idle memory-time. Closed intervals
  // are added here when an instance leaves a state; open ones are added at query time.
  uint64_t boot_ns = 0;
  uint64_t idle_ns = 0;
  uint64_t busy_ns = 0;
  double idle_memory_byte_ns = 0;

  void reset() { *this = FunctionStats(); }
};

struct Utilisation {
  double boot_s = 0, idle_s = 0, busy_s = 0, idle_memory_byte_s = 0;
};

class Function {
 public:
  Function(std::shared_ptr<const FunctionSpec> spec, backend::Backend &backend)
      : policy(spec->keepalive), spec_(std::move(spec)), backend_(&backend) {}
  Function(const Function &) = delete;
  Function &operator=(const Function &) = delete;
  ~Function();

  const FunctionSpec &spec() const { return *spec_; }
  const std::shared_ptr<const FunctionSpec> &spec_ptr() const { return spec_; }
  const std::string &name() const { return spec_->name; }
  backend::Backend &backend() const { return *backend_; }
  uint64_t generation() const { return generation_; }
  // A function restored from the store continues its generations where it left off.
  void restore_generation(uint64_t generation) { generation_ = generation; }
  void replace_spec(std::shared_ptr<const FunctionSpec> spec, backend::Backend &backend) {
    if (spec->keepalive.kind != spec_->keepalive.kind || spec->keepalive.fixed_ms != spec_->keepalive.fixed_ms)
      policy = KeepAlivePolicy(spec->keepalive);
    spec_ = std::move(spec);
    backend_ = &backend;
    ++generation_;
  }

  // Live instances by state (stopping ones are not counted against the limit's capacity,
  // but they are counted as instances still holding resources).
  uint32_t booting = 0, warm = 0, busy = 0, stopping = 0;
  uint32_t active() const { return booting + warm + busy; }

  IntrusiveList<Instance, &Instance::member_hook> instances;  // every live instance
  IntrusiveList<Instance, &Instance::warm_hook> warm_list;    // idle, most recently used first
  IntrusiveList<Invocation, &Invocation::queue_hook> queue;   // waiting, oldest first

  FunctionStats stats;
  LogBook logs;
  KeepAlivePolicy policy;
  uint32_t in_flight = 0;  // invocations queued or running, as the policy counts them
  io::Timer prewarm_timer; // the adaptive policy's pre-warm of the next instance
  Pool *owner_pool = nullptr;
  // Closed intervals plus the open interval of every live instance, at now_ns.
  Utilisation utilisation(uint64_t now_ns);
  // Sum and count of the latest measured memory of live instances.
  uint64_t memory_total_bytes();
  uint32_t memory_sampled_instances();
  uint64_t invocation_count = 0;
  bool deleted = false;

 private:
  std::shared_ptr<const FunctionSpec> spec_;
  backend::Backend *backend_;
  uint64_t generation_ = 1;
};

}  // namespace faasvisor::pool
