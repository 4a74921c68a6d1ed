// The seeded simulation of the real scheduler (docs/simulation.md): the node's own
// pool::Pool and pool::Instance run on a virtual clock, with a fake backend whose instances
// are models driven by one event queue. Test-only: the daemon does not link it.
//
//  - VirtualClock: time moves only when the world runs the next event.
//  - World: the event queue (ties broken by the seed, so orderings vary between seeds) and
//    the timer queue, read on the virtual clock and run by the world, not by a ring.
//  - SimIo (pool::InstanceIo): the instance's streams, exit watch and signals, answered by
//    the instance models on the virtual clock.
//  - SimBackend (backend::Backend): launches a model whose behaviour comes from the seed:
//    it may boot slowly, crash, hang, write garbage, close its output, ignore SIGTERM and
//    fail its cleanup; or it may be a well-behaved echo with a fixed boot and exec time
//    (Faults::none), which is what bench/policy's simulator runs.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <queue>
#include <random>
#include <string>
#include <unordered_map>
#include <vector>

#include "backend/backend.h"
#include "io/timer.h"
#include "pool/instance_io.h"
#include "util/clock.h"

namespace faasvisor::sim {

class VirtualClock final : public Clock {
 public:
  uint64_t now_ns() const override { return now_ns_; }
  void advance_to(uint64_t t_ns) {
    if (t_ns > now_ns_) now_ns_ = t_ns;
  }

 private:
  uint64_t now_ns_ = 1'000'000'000;  // not 0: the pool treats 0 as "never"
};

// The last lines of what happened, printed with a failing seed.
class Trace {
 public:
  explicit Trace(size_t keep_lines = 400) : keep_(keep_lines) {}
  bool enabled = true;
  bool echo = false;  // print each line as it is recorded (--trace)
  void add(uint64_t now_ns, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
  std::string dump() const;

 private:
  size_t keep_;
  std::vector<std::string> lines_;
  size_t next_ = 0;
};

class World {
 public:
  explicit World(uint64_t seed);
  World(const World &) = delete;
  World &operator=(const World &) = delete;

  VirtualClock clock;
  io::TimerQueue timers{nullptr, clock};
  std::mt19937_64 rng;
  Trace trace;

  uint64_t now_ns() const { return clock.now_ns(); }
  // Runs `fn` at t_ns (not before now).
  void at(uint64_t t_ns, std::function<void()> fn);
  void after(uint64_t delay_ns, std::function<void()> fn) { at(now_ns() + delay_ns, std::move(fn)); }
  // Moves the clock to the earliest event or timer and runs it. False: nothing is left.
  bool step();
  // The time of the earliest event or timer (UINT64_MAX: none).
  uint64_t next_ns() const;
  uint64_t events_run() const { return events_run_; }

  uint64_t uniform(uint64_t lo, uint64_t hi) { return std::uniform_int_distribution<uint64_t>(lo, hi)(rng); }
  bool chance(double p) { return std::bernoulli_distribution(p)(rng); }

 private:
  struct Event {
    uint64_t t_ns;
    uint64_t tie;  // random: events due at the same instant run in a seed-given order
    std::function<void()> fn;
    bool operator>(const Event &o) const { return t_ns != o.t_ns ? t_ns > o.t_ns : tie > o.tie; }
  };
  std::priority_queue<Event, std::vector<Event>, std::greater<>> events_;
  uint64_t events_run_ = 0;
};

// What a model instance may do wrong. Probabilities per launch / per request.
struct Faults {
  double launch_fails = 0;       // launch() returns an error
  double boot_slow = 0;          // boots in up to 1.5x the boot timeout
  double boot_crash = 0;         // exits (code 1) before READY
  double boot_hang = 0;          // never says READY
  double boot_garbage = 0;       // writes bytes that are no frame
  double initial_input = 0;      // the launch leaves bytes the instance must read first
  double log_stream = 0;         // has a stderr stream with a few lines
  double request_slow = 0;       // answers after up to 2x the function's timeout
  double request_crash = 0;      // dies during a request
  double request_hang = 0;       // never answers
  double request_garbage = 0;    // answers with a corrupt frame
  double request_eof = 0;        // closes its output but keeps running
  double request_extra = 0;      // answers twice (a RESPONSE with no request outstanding)
  double ignores_sigterm = 0;    // only the kill signal ends it
  double cleanup_busy = 0;       // cleanup says EBUSY a few times
  double cleanup_stuck = 0;      // cleanup says EBUSY until the pool gives up

  static Faults none() { return {}; }
  static Faults many();  // what the seeded simulation draws from
};

struct SimBackendOptions {
  Faults faults;
  uint64_t boot_min_ns = 1'000'000, boot_max_ns = 40'000'000;  // a normal boot
  uint64_t exec_min_ns = 100'000, exec_max_ns = 20'000'000;    // a normal request
  // Exec time from the request (bench/policy): the body holds the duration in ms. Else drawn.
  bool exec_from_body = false;
  uint64_t io_latency_max_ns = 50'000;  // each read, write and exit watch takes 0..this
  bool short_io = true;                 // some reads and writes move only part of the bytes
  // Called at each launch with the function's name (bench/policy counts boots by it).
  std::function<void(const std::string &function)> on_launch;
};

// One modelled instance, from launch until its cleanup succeeded (or the pool gave up).
struct Model;

class SimBackend;

// pool::InstanceIo over the models.
class SimIo final : public pool::InstanceIo {
 public:
  explicit SimIo(World &world) : world_(world) {}
  void read(io::Completion &c, int fd, void *buf, size_t len) override;
  void write(io::Completion &c, int fd, const void *buf, size_t len) override;
  void watch_exit(io::Completion &c, const backend::Launched &launched) override;
  void cancel(io::Completion &c) override;
  Status signal(backend::Launched &launched, int signo) override;
  Result<bool> try_reap(backend::Launched &launched, proc::ExitStatus *status) override;
  void close_stream(int fd) override;

  void set_backend(SimBackend *backend) { backend_ = backend; }
  // A fault the I/O saw (an operation on a closed stream, an armed completion armed again):
  // the invariant checks read it.
  std::vector<std::string> violations;

 private:
  World &world_;
  SimBackend *backend_ = nullptr;
};

class SimBackend final : public backend::Backend {
 public:
  SimBackend(World &world, SimIo &io, SimBackendOptions options);
  ~SimBackend() override;
  const char *name() const override { return "sim"; }
  bool available(std::string *) const override { return true; }
  Result<backend::Launched> launch(const FunctionSpec &spec, std::string_view instance_name) override;
  Status cleanup(backend::Launched &launched) override;
  Result<uint64_t> memory_usage(const backend::Launched &launched) const override;
  bool force_kill(backend::Launched &launched) override;

  // Every model launched and not yet gone (cleaned, or given up by the pool).
  size_t live_models() const { return models_.size(); }
  // The sum of reservations of models whose process or resources still exist.
  uint64_t held_bytes() const { return held_bytes_; }
  uint64_t launched() const { return launched_; }
  uint64_t cleanups_given_up() const;
  // Models the pool no longer refers to but that were never cleaned: lost instances.
  std::vector<std::string> lost() const;

  // Used by SimIo.
  Model *by_fd(int fd);
  Model *by_key(uint64_t key);
  void record_violation(std::string what) { io_.violations.push_back(std::move(what)); }
  World &world() { return world_; }
  const SimBackendOptions &options() const { return options_; }
  void for_each_model(const std::function<void(Model &)> &fn);
  void close_fd(Model &m, int fd);
  void forget_if_done(Model &m);

 private:
  World &world_;
  SimIo &io_;
  SimBackendOptions options_;
  std::map<uint64_t, std::unique_ptr<Model>> models_;  // by backend_key
  std::unordered_map<int, Model *> by_fd_;
  uint64_t next_key_ = 1;
  int next_fd_ = 1 << 24;  // far above any real descriptor: a stray close(2) fails EBADF
  uint64_t held_bytes_ = 0;
  uint64_t launched_ = 0;
  uint64_t given_up_ = 0;
  friend struct Model;
};

}  // namespace faasvisor::sim
