// The pool's state machine, driven on a real ring with real instances (the process backend
// and the misbehave test function), but with no HTTP in between: a test sink collects the
// results. Each case runs the loop until a condition holds, with a deadline.
#include <doctest/doctest.h>

#include <unistd.h>

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "api/deploy.h"
#include "backend/process.h"
#include "io/ring.h"
#include "io/timer.h"
#include "pool/scheduler.h"
#include "proc/cgroup.h"
#include "util/clock.h"
#include "util/log.h"

using namespace faasvisor;

namespace {

struct Collected {
  int status = 0;
  bool cold = false;
  std::string body;
  std::string error;
  bool done = false;
};

struct TestInvocation final : pool::InvocationSink {
  pool::Invocation inv;
  Collected result;
  std::string query;
  std::string body = "payload";
  TestInvocation() { inv.sink = this; }
  void invocation_done(pool::Invocation &, const pool::InvocationResult &r) override {
    result.status = r.status;
    result.cold = r.cold;
    result.body = std::string(r.body);
    result.error = r.error;
    result.done = true;
  }
};

struct Fixture {
  std::unique_ptr<io::Ring> ring;
  std::unique_ptr<io::TimerQueue> timers;
  proc::CgroupTree cgroups = proc::CgroupTree::detect("unit-" + std::to_string(getpid()));
  std::unique_ptr<pool::Pool> pool;

  Fixture() {
    log::set_level(log::Level::warn);
    ring.reset(*io::Ring::create(256));
    timers = std::make_unique<io::TimerQueue>(ring.get());
    pool::PoolOptions options;
    options.stop_grace_ms = 500;
    pool = std::make_unique<pool::Pool>(*ring, *timers, options);
    backend::ProcessBackendOptions po;
    po.stem_path = std::string(FV_BUILD_DIR) + "/src/faasvisor-stem";
    po.stem_pool_size = 2;
    pool->add_backend(std::make_unique<backend::ProcessBackend>(cgroups, *ring, *timers, po));
  }

  ~Fixture() {
    pool->stop_all("test over");
    run_until([&] { return pool->empty(); });
    pool.reset();  // the backend's stems are killed and reaped here
    cgroups.remove_roots();
  }

  bool run_until(const std::function<bool()> &cond, uint64_t timeout_ms = 10'000) {
    uint64_t deadline = monotonic_ns() + timeout_ms * 1'000'000ull;
    // A heartbeat timer keeps the loop turning so the deadline is checked.
    io::Timer beat;
    beat.owner = this;
    beat.callback = [](io::Timer &) {};
    while (!cond()) {
      if (monotonic_ns() > deadline) {
        timers->stop(beat);
        return false;
      }
      timers->start(beat, monotonic_ns() + 50'000'000);
      timers->sync_kernel_timeout();
      ring->run_once();
      pool->run_completed();
    }
    timers->stop(beat);
    return true;
  }

  pool::Function &deploy(const std::string &name, const std::string &extra = "") {
    std::string json = R"({"service":")" + name + R"(","image":")" FV_BUILD_DIR
                       R"(/tests/functions","envProcess":"./misbehave")" + extra + "}";
    auto spec = parse_deploy(json, DeployLimits{});
    REQUIRE_MESSAGE(spec.ok(), (spec.ok() ? "" : spec.error().message()));
    REQUIRE(pool->deploy(*spec).outcome == pool::Outcome::ok);
    return *pool->find(name);
  }

  void invoke(pool::Function &fn, TestInvocation &t) {
    t.inv.method = "POST";
    t.inv.path = "/";
    t.inv.query = t.query;
    t.inv.body = t.body;
    t.inv.arrival_ns = monotonic_ns();
    pool->invoke(fn, t.inv);
  }
};

}  // namespace

TEST_CASE("a cold invocation boots an instance, which then serves warm ones") {
  Fixture f;
  auto &fn = f.deploy("states");
  TestInvocation first;
  f.invoke(fn, first);
  CHECK(fn.booting == 1);
  CHECK(fn.queue.size() == 1);
  REQUIRE(f.run_until([&] { return first.result.done; }));
  CHECK(first.result.status == 200);
  CHECK(first.result.cold);
  CHECK(first.result.body == "payload");
  CHECK(fn.warm == 1);
  CHECK(fn.warm_list.size() == 1);
  CHECK(fn.stats.init_ms.count() == 1);

  TestInvocation second;
  f.invoke(fn, second);
  CHECK(fn.busy == 1);  // taken from the warm list at once
  CHECK(fn.warm == 0);
  REQUIRE(f.run_until([&] { return second.result.done; }));
  CHECK(!second.result.cold);
  CHECK(fn.warm == 1);
  CHECK(fn.stats.cold == 1);
  CHECK(fn.stats.warm == 1);
}

TEST_CASE("an instance that crashes while busy answers 502 and is dropped") {
  Fixture f;
  auto &fn = f.deploy("crashy");
  TestInvocation t;
  t.query = "mode=crash";
  f.invoke(fn, t);
  REQUIRE(f.run_until([&] { return t.result.done; }));
  CHECK(t.result.status == 502);
  INFO(t.result.error);
  CHECK(t.result.error.find("killed by signal SIGABRT") != std::string::npos);
  REQUIRE(f.run_until([&] { return fn.instances.empty(); }));
  CHECK(fn.active() == 0);
  CHECK(fn.stopping == 0);
  CHECK(fn.stats.errors == 1);
}

TEST_CASE("the invocation deadline kills a hung instance with 504") {
  Fixture f;
  auto &fn = f.deploy("hangs", R"(,"annotations":{"faasvisor.timeout":"300ms"})");
  TestInvocation t;
  t.query = "mode=hang";
  f.invoke(fn, t);
  REQUIRE(f.run_until([&] { return t.result.done; }));
  CHECK(t.result.status == 504);
  REQUIRE(f.run_until([&] { return fn.instances.empty(); }));
}

TEST_CASE("a full queue answers 429 and the limit holds instances to scale.max") {
  Fixture f;
  auto &fn = f.deploy("bounded", R"(,"labels":{"com.openfaas.scale.max":"1"},"annotations":{"faasvisor.queue":"2"})");
  TestInvocation a, b, c;
  for (TestInvocation *t : {&a, &b, &c}) {
    t->query = "mode=slow&ms=50";
    f.invoke(fn, *t);
  }
  // Refused at once, but its sink is not called from inside invoke(): the loop delivers it
  // after the batch (Pool::run_completed).
  CHECK(!c.result.done);
  CHECK(f.pool->completed_pending() == 1);
  CHECK(f.pool->run_completed() == 1);
  CHECK(c.result.done);
  CHECK(c.result.status == 429);
  CHECK(fn.active() == 1);
  REQUIRE(f.run_until([&] { return a.result.done && b.result.done; }));
  CHECK(a.result.status == 200);
  CHECK(b.result.status == 200);
  CHECK(fn.instances.size() == 1);  // b waited for a's instance rather than booting another
}

TEST_CASE("an instance that never becomes ready fails one waiting invocation with 502") {
  Fixture f;
  auto &fn = f.deploy("sleepy", R"(,"envVars":{"FV_TEST_NO_READY":"1"},"annotations":{"faasvisor.boot_timeout":"200ms"})");
  TestInvocation t;
  f.invoke(fn, t);
  REQUIRE(f.run_until([&] { return t.result.done; }));
  CHECK(t.result.status == 502);
  CHECK(t.result.error.find("did not become ready") != std::string::npos);
  REQUIRE(f.run_until([&] { return fn.instances.empty(); }));
}

TEST_CASE("scaling pre-boots instances and scaling to zero stops the idle ones") {
  Fixture f;
  auto &fn = f.deploy("scaled");
  CHECK(f.pool->scale("scaled", 3).outcome == pool::Outcome::ok);
  CHECK(fn.booting == 3);
  REQUIRE(f.run_until([&] { return fn.warm == 3; }));
  CHECK(f.pool->scale("scaled", 0).outcome == pool::Outcome::ok);
  CHECK(fn.warm == 0);
  REQUIRE(f.run_until([&] { return fn.instances.empty(); }));
  CHECK(f.pool->scale("nope", 1).outcome == pool::Outcome::not_found);
}

TEST_CASE("an abandoned invocation leaves its instance to finish and return to warm") {
  Fixture f;
  auto &fn = f.deploy("abandon");
  CHECK(f.pool->scale("abandon", 1).outcome == pool::Outcome::ok);
  REQUIRE(f.run_until([&] { return fn.warm == 1; }));
  TestInvocation t;
  t.query = "mode=slow&ms=100";
  f.invoke(fn, t);
  CHECK(fn.busy == 1);
  f.pool->abandon(t.inv);
  REQUIRE(f.run_until([&] { return fn.warm == 1; }));
  CHECK(!t.result.done);  // the sink is never called for an abandoned invocation
  CHECK(f.pool->running_invocations() == 0);
}

// A policy that learned 20 idle times of 2.5 minutes (bin 2) at concurrency rank `rank`,
// far in the policy clock's future, so the first real arrival at that rank adds one idle
// time of 0 (bin 0): with 21 samples the head (5th percentile, the 2nd smallest) is still bin
// 2. The rank's windows: pre-warm 108 s, keep-alive until 198 s.
pool::KeepAlivePolicy learned_rank(const pool::KeepAliveSpec &spec, uint32_t rank) {
  pool::KeepAlivePolicy learned(spec);
  uint64_t t = 100'000'000;
  for (int i = 0; i < 20; ++i) {
    learned.on_completion(t, rank - 1);
    t += 150'000;
    learned.on_arrival(t, rank - 1);
  }
  learned.on_completion(t, rank - 1);
  return learned;
}

// Two invocations at once, so two instances: a slow one (300 ms), then a quick one.
void invoke_quick_and_slow(Fixture &f, pool::Function &fn, TestInvocation &quick,
                           TestInvocation &slow) {
  quick.query = "mode=ok";
  slow.query = "mode=slow&ms=300";
  f.invoke(fn, slow);
  f.invoke(fn, quick);
}

TEST_CASE("a pre-warm decision unloads every idle instance of the function, not only the last") {
  Fixture f;
  auto &fn = f.deploy("prewarm-all", R"(,"annotations":{"faasvisor.keepalive":"adaptive"})");
  fn.policy = learned_rank(fn.spec().keepalive, 1);
  REQUIRE(fn.policy.windows().from_histogram);
  REQUIRE(fn.policy.windows().prewarm_ms == 108'000);

  // Two at once: two instances. The quick one is released while the slow one runs (rank 2,
  // no idle times: the fixed keep-alive); when the slow one ends the function is idle and
  // the policy pre-warms: both are unloaded.
  TestInvocation quick, slow;
  invoke_quick_and_slow(f, fn, quick, slow);
  REQUIRE(f.run_until([&] { return quick.result.done; }));
  CHECK(quick.result.status == 200);
  CHECK(fn.warm == 1);
  CHECK(fn.stats.keepalive_stops == 0);
  REQUIRE(f.run_until([&] { return slow.result.done; }));
  CHECK(slow.result.status == 200);
  CHECK(fn.warm == 0);
  CHECK(fn.warm_list.size() == 0);
  CHECK(fn.stats.keepalive_stops == 2);
  CHECK(fn.prewarm_timer.armed());  // one instance comes back 108 s from now
}

TEST_CASE("adaptive: an instance released at concurrency 2 gets rank 2's windows, not rank 1's") {
  Fixture f;
  auto &fn = f.deploy("per-rank", R"(,"annotations":{"faasvisor.keepalive":"adaptive"})");
  // Rank 2 learned 2.5-minute idle times (the concurrency dropped from 2 to 1 and came back):
  // pre-warm 108 s, so an instance left idle at rank 2 is unloaded at once. Rank 1 saw
  // nothing: the fixed 10 minutes.
  fn.policy = learned_rank(fn.spec().keepalive, 2);
  REQUIRE(fn.policy.windows(2).prewarm_ms == 108'000);
  REQUIRE_FALSE(fn.policy.windows(1).from_histogram);

  // The quick one ends while the slow one runs (rank 2) and is unloaded; the slow one
  // leaves the function idle (rank 1) and stays warm, with no pre-warm.
  TestInvocation quick, slow;
  invoke_quick_and_slow(f, fn, quick, slow);
  REQUIRE(f.run_until([&] { return quick.result.done; }));
  CHECK(quick.result.status == 200);
  CHECK(fn.warm == 0);
  CHECK(fn.stats.keepalive_stops == 1);
  REQUIRE(f.run_until([&] { return slow.result.done; }));
  CHECK(slow.result.status == 200);
  CHECK(fn.warm == 1);
  CHECK(fn.stats.keepalive_stops == 1);
  CHECK_FALSE(fn.prewarm_timer.armed());
}

TEST_CASE("an invocation abandoned while its result waits in the completed queue gets no sink call") {
  Fixture f;
  auto &fn = f.deploy("dropped", R"(,"labels":{"com.openfaas.scale.max":"1"},"annotations":{"faasvisor.queue":"1"})");
  TestInvocation a, b;
  a.query = "mode=slow&ms=50";
  f.invoke(fn, a);
  f.invoke(fn, b);  // no warm instance, the queue full (a waits for a boot): refused
  REQUIRE(f.pool->completed_pending() == 1);
  f.pool->abandon(b.inv);  // the client went away before the loop delivered it
  CHECK(b.inv.state == pool::Invocation::State::idle);
  CHECK(f.pool->run_completed() == 0);
  CHECK(!b.result.done);
  REQUIRE(f.run_until([&] { return a.result.done; }));
  CHECK(a.result.status == 200);
}
