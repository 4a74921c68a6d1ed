// The trace replayed through the node's own scheduler: pool::Pool and pool::Instance on the
// simulation's virtual clock (src/sim/, docs/simulation.md), with a well-behaved model backend
// whose instances boot in boot_ms and run each invocation for its trace duration. What
// simulator.cc models by hand (dispatch, the FIFO, scale.max, keep-alive windows, pre-warm,
// scale.min) is here the code the daemon runs.
#include <cstdio>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "model/function_spec.h"
#include "pool/scheduler.h"
#include "sim/world.h"
#include "simulator.h"

namespace faasvisor::bench {
namespace {

constexpr uint64_t kMs = 1'000'000;

struct Call final : pool::InvocationSink {
  std::vector<FunctionResult> *results = nullptr;
  std::vector<Call *> *free_list = nullptr;
  uint64_t *in_flight = nullptr;
  uint64_t *unexpected = nullptr;
  uint32_t function = 0;
  bool warm_at_arrival = false;
  std::string body;  // the duration in ms: the model instance runs that long
  pool::Invocation inv;

  void invocation_done(pool::Invocation &, const pool::InvocationResult &r) override {
    FunctionResult &f = (*results)[function];
    if (r.status == 429 && r.instance_id == 0) {
      ++f.rejected;  // the queue was full: nothing ran
    } else if (!r.error.empty()) {
      ++*unexpected;
    } else if (warm_at_arrival) {
      ++f.warm;
    } else if (r.cold) {
      ++f.cold;
    } else {
      ++f.queued;
    }
    --*in_flight;
    free_list->push_back(this);
  }
};

}  // namespace

SimResult simulate_real(const Trace &trace, const pool::KeepAliveSpec &spec, const SimOptions &options) {
  sim::World world(1);
  world.trace.enabled = false;
  sim::SimIo io(world);
  pool::PoolOptions po;
  po.memory_sample_ms = 3'600'000;  // nothing to measure; keeps the timer heap quiet
  pool::Pool pool(io, world.timers, world.clock, po);

  std::vector<FunctionResult> results(trace.functions.size());
  std::unordered_map<std::string, uint32_t> index;
  for (uint32_t i = 0; i < trace.functions.size(); ++i) index[trace.functions[i]] = i;

  sim::SimBackendOptions bo;
  bo.faults = sim::Faults::none();
  bo.boot_min_ns = bo.boot_max_ns = options.boot_ms * kMs;
  bo.exec_from_body = true;
  bo.io_latency_max_ns = 0;  // a completion at t frees its instance for an arrival at t + 1 ns
  bo.short_io = false;
  bo.on_launch = [&](const std::string &name) { ++results[index.at(name)].boots; };
  pool.add_backend(std::make_unique<sim::SimBackend>(world, io, bo));

  std::vector<pool::Function *> functions;
  for (const std::string &name : trace.functions) {
    auto fs = std::make_shared<FunctionSpec>();
    fs->name = name;
    fs->backend = "sim";
    fs->memory_bytes = options.memory_bytes;
    fs->min_instances = std::min(options.scale_min, options.scale_max);
    fs->max_instances = options.scale_max;
    fs->queue_limit = options.queue_limit;
    fs->timeout_ms = 30ull * 24 * 3'600'000;  // never: the trace's waits are what is measured
    fs->keepalive = spec;
    pool::PoolError e = pool.deploy(fs);
    if (e.outcome != pool::Outcome::ok) {
      std::fprintf(stderr, "policy_sim: deploy %s: %s\n", name.c_str(), e.message.c_str());
      std::exit(1);
    }
    functions.push_back(pool.find(name));
  }

  const uint64_t start_ns = world.now_ns();
  uint64_t in_flight = 0, unexpected = 0;
  std::vector<std::unique_ptr<Call>> calls;
  std::vector<Call *> free_list;
  auto take_call = [&]() -> Call & {
    if (free_list.empty()) {
      calls.push_back(std::make_unique<Call>());
      Call &c = *calls.back();
      c.results = &results;
      c.free_list = &free_list;
      c.in_flight = &in_flight;
      c.unexpected = &unexpected;
      c.inv.sink = &c;
      c.inv.method = "POST";
      c.inv.path = "/";
      return c;
    }
    Call *c = free_list.back();
    free_list.pop_back();
    return *c;
  };

  // Arrivals are fed one at a time (the trace can hold millions), each 1 ns after its ms so
  // that a completion in the same ms goes first, as simulator.cc orders them.
  size_t next = 0;
  std::function<void()> arrive = [&] {
    const TraceInvocation &t = trace.invocations[next++];
    Call &c = take_call();
    c.function = t.function;
    c.body = std::to_string(t.duration_ms);
    c.inv.body = c.body;
    c.inv.arrival_ns = world.now_ns();
    ++results[t.function].invocations;
    ++in_flight;
    pool.invoke(*functions[t.function], c.inv);
    c.warm_at_arrival = c.inv.state == pool::Invocation::State::running;
    if (next < trace.invocations.size())
      world.at(start_ns + trace.invocations[next].arrival_ms * kMs + 1, arrive);
  };
  if (!trace.invocations.empty()) world.at(start_ns + trace.invocations[0].arrival_ms * kMs + 1, arrive);

  uint64_t end_ms = options.end_ms != 0 ? options.end_ms : trace.end_ms;
  uint64_t end_ns = start_ns + end_ms * kMs;
  for (;;) {
    bool arrivals_left = next < trace.invocations.size();
    if (!arrivals_left && in_flight == 0 && world.next_ns() > end_ns) break;
    if (!world.step()) break;
    pool.run_completed();
  }
  uint64_t now_ns = std::max(world.now_ns(), end_ns);
  if (unexpected != 0)
    std::fprintf(stderr, "policy_sim: %llu invocations failed in the real scheduler\n",
                 static_cast<unsigned long long>(unexpected));

  SimResult result;
  result.end_ms = (now_ns - start_ns) / kMs;
  for (uint32_t i = 0; i < functions.size(); ++i) {
    pool::Function &fn = *functions[i];
    FunctionResult &f = results[i];
    f.prewarm_boots = fn.stats.prewarms;
    f.idle_ms = static_cast<uint64_t>(fn.utilisation(now_ns).idle_s * 1e3 + 0.5);
    f.on_histogram = fn.policy.windows().from_histogram ? 1 : 0;
    result.total.add(f);
    result.functions.push_back(f);
  }
  pool.stop_all("trace over");
  while (!pool.empty() && world.step()) pool.run_completed();
  return result;
}

}  // namespace faasvisor::bench
