#include "sim/driver.h"

#include <algorithm>
#include <map>
#include <memory>
#include <random>
#include <set>
#include <vector>

#include "model/function_spec.h"
#include "pool/scheduler.h"
#include "sim/world.h"

namespace faasvisor::sim {
namespace {

World *g_world = nullptr;  // the seed being run, for current_trace()

constexpr uint64_t kMs = 1'000'000;

class Driver;

struct Call final : pool::InvocationSink {
  Driver *driver = nullptr;
  uint64_t id = 0;
  std::string function;
  std::string body;
  pool::Invocation inv;
  uint32_t answers = 0;
  bool abandoned = false;
  int status = 0;
  void invocation_done(pool::Invocation &, const pool::InvocationResult &result) override;
};

class Driver {
 public:
  Driver(uint64_t seed, const DriverOptions &options) : seed_(seed), options_(options), world_(seed), io_(world_) {
    world_.trace.echo = options.trace_echo;
    g_world = &world_;
    pool::PoolOptions po;
    po.stop_grace_ms = world_.uniform(5, 200);
    po.memory_sample_ms = 100;
    po.retry_after_s = 1;
    budget_ = world_.chance(0.3) ? UINT64_MAX : world_.uniform(2, 10) * (128ull << 20);
    po.memory_budget_bytes = budget_;
    mean_gap_ns_ = world_.uniform(kMs / 2, 20 * kMs);
    pool_ = std::make_unique<pool::Pool>(io_, world_.timers, world_.clock, po);
    SimBackendOptions bo;
    bo.faults = Faults::many();
    auto backend = std::make_unique<SimBackend>(world_, io_, bo);
    backend_ = backend.get();
    pool_->add_backend(std::move(backend));
    world_.trace.add(world_.now_ns(), "seed %llu: budget %s, stop grace %llu ms, mean gap %.2f ms",
                     static_cast<unsigned long long>(seed),
                     budget_ == UINT64_MAX ? "unlimited" : (std::to_string(budget_ >> 20) + " MiB").c_str(),
                     static_cast<unsigned long long>(po.stop_grace_ms), static_cast<double>(mean_gap_ns_) / 1e6);
  }

  ~Driver() { g_world = nullptr; }

  SeedResult run() {
    uint32_t functions = static_cast<uint32_t>(world_.uniform(1, 3));
    for (uint32_t i = 0; i < functions; ++i) deploy("f" + std::to_string(i));
    schedule_action();
    // The workload, then a drain, then the shutdown: each phase bounded in virtual time.
    while (ok() && !workload_done_ && step()) after_step();
    if (ok()) {
      world_.trace.add(world_.now_ns(), "shutdown: begin");
      in_pool_ = true;
      pool_->begin_shutdown();
      // Late arrivals are refused (503), queued ones still served.
      uint64_t late = world_.uniform(0, 3);
      for (uint64_t i = 0; i < late; ++i) invoke(random_name());
      in_pool_ = false;
      after_step();
      run_until([&] { return pool_->drained(); }, 120'000 * kMs, "the pool did not drain after begin_shutdown");
    }
    if (ok()) {
      world_.trace.add(world_.now_ns(), "shutdown: stop_all");
      in_pool_ = true;
      pool_->stop_all("simulation over");
      in_pool_ = false;
      after_step();
      run_until([&] { return pool_->empty() && backend_->live_models() == 0; }, 300'000 * kMs,
                "instances left after stop_all");
    }
    if (ok()) final_checks();
    uint64_t launched = backend_->launched();  // the pool owns the backend: read it first
    if (ok()) {
      pool_.reset();  // asserts nothing is live
      if (world_.timers.size() != 0) fail("timers left behind by the pool: " + std::to_string(world_.timers.size()));
    }
    SeedResult r;
    r.steps = world_.events_run();
    r.invocations = calls_.size();
    r.instances = launched;
    if (!ok()) {
      r.ok = false;
      r.failure = "seed " + std::to_string(seed_) + ": " + failure_;
      r.trace = world_.trace.dump();
      // The pool still has live instances and invocations: destroying it would assert. A
      // failed seed leaks them (the program reports and ends).
      (void)pool_.release();
      for (auto &c : calls_) (void)c.release();
    }
    return r;
  }

  void answered(Call &call, const pool::InvocationResult &result) {
    world_.trace.add(world_.now_ns(), "answer #%llu (%s): %d %s", static_cast<unsigned long long>(call.id),
                     call.function.c_str(), result.status, result.error.c_str());
    if (in_pool_) fail("invocation #" + std::to_string(call.id) + " answered from inside a pool call or callback");
    if (call.abandoned) fail("invocation #" + std::to_string(call.id) + " answered after it was abandoned");
    if (call.answers++ > 0) fail("invocation #" + std::to_string(call.id) + " answered twice");
    call.status = result.status;
    if (result.error.empty()) {
      if (result.status != 200 || result.body != call.body)
        fail("invocation #" + std::to_string(call.id) + ": answer is not the echo of its body (status " +
             std::to_string(result.status) + ", " + std::to_string(result.body.size()) + " bytes for " +
             std::to_string(call.body.size()) + ")");
      if (result.instance_id == 0) fail("invocation #" + std::to_string(call.id) + ": success without an instance");
    } else if (result.status < 400) {
      fail("invocation #" + std::to_string(call.id) + ": error with status " + std::to_string(result.status));
    }
    outstanding_.erase(call.id);
    // Now and then the sink invokes again, as a connection does with its next pipelined
    // request: the pool must take it from inside run_completed.
    if (!call.function.empty() && world_.chance(0.1)) invoke(call.function);
  }

 private:
  bool ok() const { return failure_.empty(); }
  void fail(std::string what) {
    if (failure_.empty()) failure_ = std::move(what);
  }

  // One event; instance callbacks and workload actions run inside it, so no sink may.
  bool step() {
    in_pool_ = true;
    bool ran = world_.step();
    in_pool_ = false;
    return ran;
  }

  void run_until(const std::function<bool()> &cond, uint64_t within_ns, const char *what) {
    uint64_t deadline = world_.now_ns() + within_ns;
    while (ok() && !cond()) {
      if (world_.next_ns() > deadline || !step()) {
        std::string detail;
        for (const std::string &l : backend_->lost()) detail += "; " + l;
        fail(std::string(what) + " (live instances " + std::to_string(pool_->live_instances()) + ", running " +
             std::to_string(pool_->running_invocations()) + ")" + detail);
        return;
      }
      after_step();
    }
  }

  // After every event: deliver what the pool answered, then check the invariants.
  void after_step() {
    pool_->run_completed();
    check();
  }

  void check() {
    if (!io_.violations.empty()) return fail("simulated I/O: " + io_.violations.front());
    if (pool_->reserved_bytes() > budget_) fail("the pool reserved more than the memory budget");
    if (backend_->held_bytes() > budget_) fail("instances hold more than the memory budget");
    size_t fns = 0;
    pool_->for_each_function([&](const pool::Function &fn) {
      ++fns;
      if (fn.queue.size() > max_queue_ever_[fn.name()])  // an update may lower the limit
        fail("function " + fn.name() + ": queue of " + std::to_string(fn.queue.size()) + " over its limit");
      if (fn.active() > max_instances_ever_[fn.name()])
        fail("function " + fn.name() + ": " + std::to_string(fn.active()) + " instances over scale.max");
    });
    size_t bound = 1 + deployed_ever_ + 2 * pool_->live_instances() + outstanding_.size();
    if (world_.timers.size() > bound)
      fail("timers: " + std::to_string(world_.timers.size()) + " armed, at most " + std::to_string(bound) + " expected");
    uint64_t now = world_.now_ns();
    for (uint64_t id : outstanding_) {
      Call &c = *calls_[id];
      if (now > c.inv.arrival_ns + max_timeout_ever_ns_ + 2 * kMs)
        return fail("invocation #" + std::to_string(id) + " not answered by its deadline");
    }
  }

  void final_checks() {
    if (!outstanding_.empty()) fail(std::to_string(outstanding_.size()) + " invocations never answered");
    if (pool_->completed_pending() != 0) fail("results left in the completed queue");
    if (world_.timers.size() != 1)  // the pool's memory sampler
      fail("timers left behind: " + std::to_string(world_.timers.size()));
    if (backend_->live_models() != 0) fail("instances lost");
  }

  std::shared_ptr<FunctionSpec> random_spec(const std::string &name) {
    auto spec = std::make_shared<FunctionSpec>();
    spec->name = name;
    spec->backend = "sim";
    spec->memory_bytes = (64ull << 20) * world_.uniform(1, 2);
    spec->max_instances = static_cast<uint32_t>(world_.uniform(1, 4));
    spec->min_instances = world_.chance(0.1) ? 1 : 0;
    spec->queue_limit = static_cast<uint32_t>(world_.uniform(0, 8));
    spec->timeout_ms = world_.uniform(20, 300);
    spec->boot_timeout_ms = world_.uniform(20, 300);
    if (world_.chance(0.3)) {
      spec->keepalive.kind = pool::KeepAliveSpec::Kind::adaptive;
      spec->keepalive.fixed_ms = world_.uniform(5, 500);
    } else {
      spec->keepalive.fixed_ms = world_.uniform(5, 500);
    }
    max_instances_ever_[name] = std::max(max_instances_ever_[name], spec->max_instances);
    max_queue_ever_[name] = std::max(max_queue_ever_[name], spec->queue_limit);
    max_timeout_ever_ns_ = std::max(max_timeout_ever_ns_, spec->timeout_ms * kMs);
    return spec;
  }

  void deploy(const std::string &name) {
    ++deployed_ever_;
    auto spec = random_spec(name);
    world_.trace.add(world_.now_ns(), "deploy %s: max %u min %u queue %u timeout %llu boot %llu", name.c_str(),
                     spec->max_instances, spec->min_instances, spec->queue_limit,
                     static_cast<unsigned long long>(spec->timeout_ms),
                     static_cast<unsigned long long>(spec->boot_timeout_ms));
    in_pool_ = true;
    pool::PoolError e = pool_->deploy(spec);
    in_pool_ = false;
    if (e.outcome != pool::Outcome::ok) fail("deploy " + name + ": " + e.message);
  }

  void invoke(const std::string &name) {
    pool::Function *fn = pool_->find(name);
    if (fn == nullptr) return;  // the node answers 404 before the pool
    auto call = std::make_unique<Call>();
    call->driver = this;
    call->id = calls_.size();
    call->function = name;
    size_t size = world_.chance(0.02) ? world_.uniform(4000, 100'000) : world_.uniform(0, 64);
    call->body.assign(size, static_cast<char>('a' + call->id % 26));
    call->inv.method = "POST";
    call->inv.path = "/";
    call->inv.body = call->body;
    call->inv.arrival_ns = world_.now_ns();
    call->inv.sink = call.get();
    Call &c = *call;
    calls_.push_back(std::move(call));
    outstanding_.insert(c.id);
    world_.trace.add(world_.now_ns(), "invoke #%llu %s (%zu bytes)", static_cast<unsigned long long>(c.id),
                     name.c_str(), size);
    bool was = in_pool_;
    in_pool_ = true;
    pool_->invoke(*fn, c.inv);
    in_pool_ = was;
  }

  void schedule_action() {
    if (actions_left_ == 0) {
      workload_done_ = true;
      return;
    }
    --actions_left_;
    std::exponential_distribution<double> gap(1.0 / static_cast<double>(mean_gap_ns_));
    world_.after(static_cast<uint64_t>(gap(world_.rng)), [this] {
      act();
      schedule_action();
    });
  }

  std::string random_name() {
    return "f" + std::to_string(world_.uniform(0, 2));
  }

  void act() {
    uint64_t r = world_.uniform(0, 99);
    std::string name = random_name();
    if (r < 65) {
      invoke(name);
    } else if (r < 72) {
      uint64_t n = world_.uniform(3, 10);
      for (uint64_t i = 0; i < n; ++i) invoke(name);
    } else if (r < 80) {
      if (outstanding_.empty()) return;
      auto it = outstanding_.begin();
      std::advance(it, static_cast<long>(world_.uniform(0, outstanding_.size() - 1)));
      Call &c = *calls_[*it];
      world_.trace.add(world_.now_ns(), "abandon #%llu", static_cast<unsigned long long>(c.id));
      pool_->abandon(c.inv);
      c.abandoned = true;
      outstanding_.erase(it);
    } else if (r < 86) {
      uint64_t replicas = world_.uniform(0, 5);
      world_.trace.add(world_.now_ns(), "scale %s to %llu", name.c_str(), static_cast<unsigned long long>(replicas));
      (void)pool_->scale(name, replicas);
    } else if (r < 91) {
      if (pool_->find(name) == nullptr) return deploy(name);
      auto spec = random_spec(name);
      world_.trace.add(world_.now_ns(), "update %s: max %u queue %u timeout %llu", name.c_str(), spec->max_instances,
                       spec->queue_limit, static_cast<unsigned long long>(spec->timeout_ms));
      pool::PoolError e = pool_->update(spec);
      if (e.outcome != pool::Outcome::ok) fail("update " + name + ": " + e.message);
    } else if (r < 95) {
      if (pool_->find(name) == nullptr) return;
      world_.trace.add(world_.now_ns(), "delete %s", name.c_str());
      (void)pool_->remove(name);
    } else {
      if (pool_->find(name) == nullptr) deploy(name);
    }
  }

  uint64_t seed_;
  DriverOptions options_;
  World world_;
  SimIo io_;
  SimBackend *backend_ = nullptr;
  std::unique_ptr<pool::Pool> pool_;
  uint64_t budget_ = UINT64_MAX;
  uint64_t mean_gap_ns_ = kMs;
  uint32_t actions_left_ = options_.actions;
  std::vector<std::unique_ptr<Call>> calls_;  // by id; kept to the end (a late answer is caught)
  std::set<uint64_t> outstanding_;
  std::map<std::string, uint32_t> max_instances_ever_;
  std::map<std::string, uint32_t> max_queue_ever_;
  uint64_t max_timeout_ever_ns_ = 0;
  size_t deployed_ever_ = 0;
  bool workload_done_ = false;
  bool in_pool_ = false;  // inside a pool call or an event: no sink may run now
  std::string failure_;
};

void Call::invocation_done(pool::Invocation &, const pool::InvocationResult &result) {
  driver->answered(*this, result);
}

}  // namespace

SeedResult run_seed(uint64_t seed, const DriverOptions &options) {
  Driver driver(seed, options);
  return driver.run();
}

std::string current_trace() { return g_world != nullptr ? g_world->trace.dump() : std::string(); }

}  // namespace faasvisor::sim
