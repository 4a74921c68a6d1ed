// Regressions found by the seeded simulation (tests/sim, docs/simulation.md), replayed as
// fixed scenarios on its world: the real pool::Pool on a virtual clock with the model backend.
#include <doctest/doctest.h>

#include <memory>
#include <string>

#include "model/function_spec.h"
#include "pool/scheduler.h"
#include "sim/world.h"
#include "util/log.h"

using namespace faasvisor;

namespace {

struct Answer final : pool::InvocationSink {
  pool::Invocation inv;
  std::string body;
  bool done = false;
  int status = 0;
  std::string got, error;
  void invocation_done(pool::Invocation &, const pool::InvocationResult &r) override {
    done = true;
    status = r.status;
    got = std::string(r.body);
    error = r.error;
  }
};

struct SimFixture {
  sim::World world{1};
  sim::SimIo io{world};
  std::unique_ptr<pool::Pool> pool;

  explicit SimFixture(const sim::Faults &faults) {
    log::set_level(log::Level::warn);
    pool = std::make_unique<pool::Pool>(io, world.timers, world.clock, pool::PoolOptions{});
    sim::SimBackendOptions options;
    options.faults = faults;
    pool->add_backend(std::make_unique<sim::SimBackend>(world, io, options));
  }
  ~SimFixture() {
    pool->stop_all("test over");
    run_until([&] { return pool->empty(); });
  }
  bool run_until(const std::function<bool()> &cond) {
    for (int i = 0; i < 100000 && !cond(); ++i) {
      if (!world.step()) return cond();
      pool->run_completed();
    }
    return cond();
  }
  pool::Function &deploy(uint32_t max_instances) {
    auto spec = std::make_shared<FunctionSpec>();
    spec->name = "f";
    spec->backend = "sim";
    spec->max_instances = max_instances;
    spec->timeout_ms = 1000;
    REQUIRE(pool->deploy(spec).outcome == pool::Outcome::ok);
    return *pool->find("f");
  }
  void invoke(pool::Function &fn, Answer &a, std::string body) {
    a.body = std::move(body);
    a.inv.method = "POST";
    a.inv.path = "/";
    a.inv.body = a.body;
    a.inv.arrival_ns = world.now_ns();
    a.inv.sink = &a;
    pool->invoke(fn, a.inv);
  }
};

}  // namespace

// Seeds 8, 9, 13, 21 and 22 of the first simulation run: an instance answered twice in one
// write; the node parsed the second RESPONSE after it had assigned the next queued request
// and gave that request the stale answer (another client's body).
TEST_CASE("a second RESPONSE read together with the first is a fault, not the next request's answer") {
  sim::Faults faults;
  faults.request_extra = 1.0;  // every request is answered twice
  SimFixture f(faults);
  pool::Function &fn = f.deploy(1);
  Answer a, b;
  f.invoke(fn, a, "from a");
  f.invoke(fn, b, "from b");  // waits for the one instance
  REQUIRE(f.run_until([&] { return a.done && b.done; }));
  CHECK(a.status == 200);
  CHECK(a.got == "from a");
  CHECK(b.got != "from a!");
  CHECK(b.status == 502);
  CHECK(b.error.find("RESPONSE frame with no request outstanding") != std::string::npos);
}

TEST_CASE("results are delivered by run_completed, never from inside invoke or an instance callback") {
  SimFixture f(sim::Faults::none());
  pool::Function &fn = f.deploy(1);
  Answer a;
  f.invoke(fn, a, "x");
  while (!a.done && f.world.step()) {
    CHECK(!a.done);  // the event that produced the answer did not call the sink
    f.pool->run_completed();
  }
  CHECK(a.status == 200);
  CHECK(a.got == "x");
}
