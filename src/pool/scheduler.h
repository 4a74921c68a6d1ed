// The pool: deployed functions, their instances, and the scheduling of invocations onto
// them. An invocation takes a warm instance, or waits in its function's bounded FIFO while
// an instance boots (if the function is below its instance limit) or until a busy one is
// released. Everything runs on the loop thread; there is no locking.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "backend/backend.h"
#include "io/ring.h"
#include "io/timer.h"
#include "pool/function.h"
#include "pool/instance.h"
#include "pool/invocation.h"
#include "pool/observer.h"

namespace faasvisor::pool {

struct PoolOptions {
  uint64_t stop_grace_ms = 2000;             // SIGTERM to SIGKILL
  uint32_t max_frame_bytes = 16u << 20;      // instance protocol frame limit
  uint32_t retry_after_s = 1;                // for 429 and 503
  uint64_t memory_budget_bytes = UINT64_MAX; // the sum of instances' memory limits may not pass it
  uint64_t memory_sample_ms = 1000;          // how often instances' memory is measured
  double policy_time_scale = 1.0;            // policy time runs this much faster than real time
};

enum class Outcome { ok, exists, not_found, bad_backend };
struct PoolError {
  Outcome outcome;
  std::string message;
};

class Pool {
 public:
  Pool(io::Ring &ring, io::TimerQueue &timers, PoolOptions options);
  ~Pool();
  Pool(const Pool &) = delete;
  Pool &operator=(const Pool &) = delete;

  void add_backend(std::unique_ptr<backend::Backend> backend);
  // The node's secrets: backends read them at launch, instances that ask (GET_SECRETS) get
  // their function's. Set before any backend is added.
  void set_secrets(const secrets::SecretTable *table) { secrets_ = table; }
  const secrets::SecretTable *secrets() const { return secrets_; }
  // The node's instance networking (null: none). Backends take namespaces from it at
  // launch; a cold start of an egress function waits until one is ready. Set before any
  // backend is added.
  void set_network(net::Network *network);
  net::Network *network() const { return network_; }
  // Told of every instance's start, READY and stop (null: nobody); outlives the pool.
  void set_observer(PoolObserver *observer) { observer_ = observer; }
  backend::Backend *find_backend(std::string_view name) const;
  const std::vector<std::unique_ptr<backend::Backend>> &backends() const { return backends_; }

  // Function registry.
  PoolError deploy(std::shared_ptr<FunctionSpec> spec);
  PoolError update(std::shared_ptr<FunctionSpec> spec);
  PoolError remove(std::string_view name);
  Function *find(std::string_view name) const;
  template <typename Fn>
  void for_each_function(Fn &&fn) const {
    for (const auto &[name, f] : functions_) fn(*f);
  }
  PoolError scale(std::string_view name, uint64_t replicas);
  void reset_stats();

  // Invocations. The caller fills the request views, arrival_ns and sink. The sink is called
  // exactly once, possibly before invoke() returns (warm queue full, shutting down).
  void invoke(Function &fn, Invocation &inv);
  // The caller no longer wants the result (connection closed). No sink call follows.
  void abandon(Invocation &inv);

  // Shutdown: stop taking invocations (new ones get 503). drain_done() is true once nothing
  // is queued or running; stop_all() then stops every instance; empty() once all are gone.
  void begin_shutdown();
  bool drained() const;
  void stop_all(const char *why);
  // No instance left, and nothing a backend keeps beside them (templates) still ending.
  bool empty() const {
    if (live_instances_ != 0) return false;
    for (const auto &b : backends_)
      if (!b->idle()) return false;
    return true;
  }

  // Used by Instance.
  io::Ring &ring() { return ring_; }
  io::TimerQueue &timers() { return timers_; }
  const PoolOptions &options() const { return options_; }
  void instance_ready(Instance &inst, uint64_t init_ns);
  void instance_idle(Instance &inst);
  void instance_stopping(Instance &inst, bool failed_boot, const std::string &reason);
  void instance_finished(Instance &inst);
  void instance_idle_expired(Instance &inst);

  // The keep-alive policies' clock: real time since the pool started, times the scale.
  uint64_t policy_now_ms() const;
  uint64_t policy_ms_to_ns(uint64_t policy_ms) const;
  void deliver(Invocation &inv, InvocationResult &result);

  uint64_t live_instances() const { return live_instances_; }
  uint64_t reserved_bytes() const { return reserved_bytes_; }
  uint64_t running_invocations() const { return running_; }

 private:
  static void on_deadline(io::Timer &t);
  static void on_sample(io::Timer &t);
  // Makes room for `need` bytes under the budget by stopping idle instances, least recently
  // used first across all functions. True if the room is there now.
  bool reserve(uint64_t need);
  void retry_waiting();
  // Egress functions: whether a network namespace is ready for a cold start (else the
  // network calls retry_waiting once one is).
  bool network_ready(const FunctionSpec &spec);
  void ensure_capacity(Function &fn);
  bool spawn_instance(Function &fn);
  void dispatch(Instance &inst, bool after_invocation);
  void apply_keepalive(Instance &inst, bool after_invocation);
  void ensure_min(Function &fn);
  static void on_prewarm(io::Timer &t);
  void fail_queued(Function &fn, int status, const std::string &reason, size_t max_count);
  void end_invocation(Invocation &inv);
  void answer(Invocation &inv, int status, std::string error, uint32_t retry_after_s = 0);

  io::Ring &ring_;
  io::TimerQueue &timers_;
  PoolOptions options_;
  std::vector<std::unique_ptr<backend::Backend>> backends_;
  const secrets::SecretTable *secrets_ = nullptr;
  net::Network *network_ = nullptr;
  PoolObserver *observer_ = nullptr;
  std::map<std::string, std::shared_ptr<Function>, std::less<>> functions_;
  IntrusiveList<Instance, &Instance::pool_hook> all_;  // every live instance, any function
  uint64_t next_instance_id_ = 1;
  uint64_t live_instances_ = 0;
  uint64_t running_ = 0;  // invocations queued or running
  uint64_t reserved_bytes_ = 0;  // memory limits of live instances (stopping ones included)
  io::Timer sample_timer_;
  uint64_t started_ns_ = 0;
  size_t sample_cursor_ = 0;
  bool budget_blocked_ = false;  // a cold start waits for memory
  bool shutting_down_ = false;
};

}  // namespace faasvisor::pool
