// A discrete-event simulation of one node's instances under a keep-alive policy, driven by
// an invocation trace on a virtual millisecond clock. It models the node's semantics
// (src/pool/scheduler.cc) and uses the node's own policy code (src/pool/keepalive.h):
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
//  - Keep-alive: after each completion the policy is told (KeepAlivePolicy::on_completion)
//    and the instance gets its windows. If the completion left the function idle and the
//    windows pre-warm, the instance is stopped and one instance is booted at
//    now + prewarm_ms (unless an arrival comes first, which cancels it; if a warm instance
//    is left, that one is kept instead), kept for keepalive_ms once ready. Otherwise the
//    instance is stopped once it has been warm for horizon_ms (= keepalive_ms without
//    pre-warm). An instance booted for a waiting invocation that another instance served
//    first is treated like one that just completed.
//  - scale.min instances are booted at time 0 and never stopped: an instance whose
//    keep-alive ends while the function has no more than scale.min instances stays.
//  - Idle time is the time an instance spends warm (ready, unassigned); memory-time is that
//    times the instance's memory. Both stop at the end of the trace.
#pragma once

#include <cstdint>
#include <vector>

#include "pool/keepalive.h"
#include "trace.h"

namespace faasvisor::bench {

struct SimOptions {
  uint64_t boot_ms = 1;            // instance start to ready
  uint64_t memory_bytes = 64ull << 20;
  uint32_t scale_min = 0;          // com.openfaas.scale.min, every function
  uint32_t scale_max = 100;        // com.openfaas.scale.max, every function
  uint32_t queue_limit = 1024;     // FunctionSpec::queue_limit
  uint64_t end_ms = 0;             // stop counting idle time here (0: the trace's end_ms)
};

struct FunctionResult {
  uint64_t invocations = 0;
  uint64_t warm = 0;
  uint64_t cold = 0;
  uint64_t queued = 0;
  uint64_t rejected = 0;
  uint64_t boots = 0;
  uint64_t prewarm_boots = 0;
  uint64_t idle_ms = 0;  // instance-milliseconds warm and unassigned
  bool histogram_used = false;  // the adaptive windows came from the histogram at the end

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

SimResult simulate(const Trace &trace, const pool::KeepAliveSpec &spec, const SimOptions &options);

}  // namespace faasvisor::bench
