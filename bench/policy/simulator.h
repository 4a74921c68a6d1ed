// A discrete-event simulation of one node's instances under a keep-alive policy, driven by
// an invocation trace on a virtual millisecond clock. It models the node's semantics
// (src/pool/scheduler.cc: invoke, ensure_capacity, dispatch, apply_keepalive, on_prewarm,
// instance_idle_expired) and uses the node's own policy code (src/pool/keepalive.h):
//
//  - An instance serves one invocation at a time. An arrival takes the most recently used
//    warm instance; with none it waits in the function's FIFO queue (at most queue_limit
//    waiting, beyond that it is rejected, as the node answers 429), and instances are booted
//    while more invocations wait than instances boot and the function is below scale.max.
//    A booted instance, once ready, or a busy one, once done, takes the oldest waiting
//    invocation, else it turns warm.
//  - An invocation is `warm` if it found a warm instance on arrival, `cold` if it waited for
//    a boot (it was handed to an instance as the instance became ready), `queued` if it
//    waited for a busy instance to finish.
//  - The policy hears of every arrival and completion (in_flight = queued + running). When
//    an instance turns warm, it gets the windows of the concurrency rank it was released at
//    (see ranks below). While the function has no more than scale.min warm instances
//    (this one included) it is kept with no deadline. Otherwise, if it just finished an
//    invocation that left the function idle and the windows pre-warm, it is stopped, and
//    so is every other warm instance above scale.min (the policy expects no arrival before
//    the pre-warm), and one instance is booted at now + prewarm_ms, unless one is warm or
//    booting by then.
//    Otherwise it is stopped after keepalive_ms warm (a pre-warmed instance too, from when
//    it is ready), unless by then the function has no more than scale.min warm instances.
//  - An arrival cancels a pending pre-warm, as the node does (Pool::invoke); the next
//    completion that leaves the function idle decides again.
//  - Idle time is the time an instance spends warm (ready, unassigned); memory-time is that
//    times the instance's memory. Both stop at the end of the trace.
#pragma once

#include <cstdint>
#include <vector>

#include "pool/keepalive.h"
#include "trace.h"

namespace faasvisor::bench {

struct SimOptions {
  uint64_t boot_ms = 1;  // instance start to ready
  uint64_t memory_bytes = 64ull << 20;
  uint32_t scale_min = 0;       // com.openfaas.scale.min, every function
  uint32_t scale_max = 100;     // com.openfaas.scale.max, every function
  uint32_t queue_limit = 1024;  // FunctionSpec::queue_limit
  uint64_t end_ms = 0;          // stop counting idle time here (0: the trace's end_ms)
  // An instance released while others of its function still run keeps the policy's
  // keepalive_ms (false), or the fixed keep-alive of its spec (true: a variant for
  // comparison, not the paper's policy).
  bool busy_release_fixed = false;
  // Concurrency ranks with a histogram of their own (pool::KeepAlivePolicy): an instance
  // released at concurrency k gets rank k's windows, and a rank above 1 whose windows
  // pre-warm is unloaded at once, or, with ranked_keep (an alternative, for comparison),
  // kept for the horizon. 1: the paper's one histogram per function, whose windows every
  // instance gets (the node's adaptive policy before per-rank histograms).
  uint32_t ranks = pool::KeepAlivePolicy::kRanks;
  bool ranked_keep = false;
};

struct FunctionResult {
  uint64_t invocations = 0;
  uint64_t warm = 0;
  uint64_t cold = 0;
  uint64_t queued = 0;
  uint64_t rejected = 0;
  uint64_t boots = 0;
  uint64_t prewarm_boots = 0;
  uint64_t idle_ms = 0;       // instance-milliseconds warm and unassigned
  uint64_t on_histogram = 0;  // functions whose windows came from the histogram at the end

  void add(const FunctionResult &other);
  double cold_fraction() const;  // cold / served
};

struct SimResult {
  std::vector<FunctionResult> functions;  // by Trace::functions index
  FunctionResult total;
  uint64_t end_ms = 0;
  double idle_instance_s() const { return static_cast<double>(total.idle_ms) / 1e3; }
  double idle_memory_gib_s(uint64_t memory_bytes) const;
};

// The model above (the "model" engine): fast, and it can run variants the node does not
// have (busy_release_fixed, ranks other than the node's, ranked_keep).
SimResult simulate(const Trace &trace, const pool::KeepAliveSpec &spec, const SimOptions &options);

// The node's own scheduler (the "real" engine, real_scheduler.cc): pool::Pool and
// pool::Instance on the simulation's virtual clock with a well-behaved model backend
// (docs/simulation.md). Takes boot_ms, memory_bytes, scale_min, scale_max, queue_limit and
// end_ms; the variants are the model's only.
SimResult simulate_real(const Trace &trace, const pool::KeepAliveSpec &spec, const SimOptions &options);

}  // namespace faasvisor::bench
