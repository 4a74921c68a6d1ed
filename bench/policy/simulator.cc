#include "simulator.h"

#include <algorithm>
#include <cassert>
#include <deque>
#include <limits>
#include <queue>

namespace faasvisor::bench {

namespace {

constexpr uint64_t kNever = std::numeric_limits<uint64_t>::max();

enum class State : uint8_t { free, booting, warm, busy };
enum class Outcome : uint8_t { warm, cold, queued };
enum class BootReason : uint8_t { demand, prewarm, minimum };

struct Instance {
  State state = State::free;
  uint32_t epoch = 0;  // bumped on every change: events of an older epoch are stale
  uint64_t warm_since_ms = 0;
  uint64_t expire_at_ms = kNever;
};

struct Function {
  Function(const pool::KeepAliveSpec &spec, uint32_t ranks) : policy(spec, ranks) {}

  pool::KeepAlivePolicy policy;
  std::vector<Instance> instances;  // slots, reused
  std::vector<uint32_t> free_slots;
  std::vector<uint32_t> warm;  // a stack: back() is the most recently used
  std::deque<uint32_t> queue;  // waiting invocations (trace indices), oldest first
  uint32_t booting = 0, busy = 0;
  uint32_t in_flight = 0;      // queued or running
  uint32_t prewarm_epoch = 0;  // the pending pre-warm's; bumped to cancel it
  bool prewarm_pending = false;
  FunctionResult result;

  uint32_t active() const { return booting + busy + static_cast<uint32_t>(warm.size()); }
};

enum class EventKind : uint8_t { ready, done, expire, prewarm };

struct Event {
  uint64_t at_ms;
  uint64_t seq;  // ties at the same ms run in the order they were scheduled
  EventKind kind;
  uint32_t function;
  uint32_t instance;
  uint32_t epoch;
};

struct Later {
  bool operator()(const Event &a, const Event &b) const {
    return a.at_ms != b.at_ms ? a.at_ms > b.at_ms : a.seq > b.seq;
  }
};

class Simulation {
 public:
  Simulation(const Trace &trace, const pool::KeepAliveSpec &spec, const SimOptions &options)
      : trace_(trace), options_(options) {
    functions_.reserve(trace.functions.size());
    for (size_t i = 0; i < trace.functions.size(); ++i) functions_.emplace_back(spec, options.ranks);
  }

  SimResult run();

 private:
  void schedule(uint64_t at_ms, EventKind kind, uint32_t fn, uint32_t inst, uint32_t epoch) {
    events_.push(Event{at_ms, next_seq_++, kind, fn, inst, epoch});
  }
  void handle(const Event &e);
  void arrive(uint32_t index);
  void ensure_capacity(uint32_t fn);
  void boot(uint32_t fn, BootReason reason);
  void on_ready(uint32_t fn, uint32_t inst);
  void on_done(uint32_t fn, uint32_t inst);
  void on_expire(uint32_t fn, uint32_t inst, uint32_t epoch);
  void on_prewarm(uint32_t fn, uint32_t epoch);
  void settle(uint32_t fn, uint32_t inst, bool after_invocation);
  void assign(uint32_t fn, uint32_t inst, uint32_t index, Outcome outcome);
  void make_warm(uint32_t fn, uint32_t inst, uint64_t keep_ms);
  void set_expiry(uint32_t fn, uint32_t inst, uint64_t at_ms);
  uint32_t take_warm(uint32_t fn, size_t position);
  void stop(uint32_t fn, uint32_t inst);

  const Trace &trace_;
  SimOptions options_;
  std::vector<Function> functions_;
  std::priority_queue<Event, std::vector<Event>, Later> events_;
  uint64_t next_seq_ = 0;
  uint64_t now_ms_ = 0;
  uint64_t in_flight_ = 0;  // all functions
};

SimResult Simulation::run() {
  for (uint32_t fn = 0; fn < functions_.size(); ++fn)
    for (uint32_t i = 0; i < options_.scale_min && i < options_.scale_max; ++i)
      boot(fn, BootReason::minimum);
  uint64_t end_ms = options_.end_ms != 0 ? options_.end_ms : trace_.end_ms;
  const auto &invocations = trace_.invocations;
  size_t next = 0;
  for (;;) {
    bool arrivals_left = next < invocations.size();
    if (events_.empty() && !arrivals_left) break;
    // Events at the same ms as an arrival go first: a completion at t frees its instance
    // for an arrival at t.
    if (arrivals_left && (events_.empty() || invocations[next].arrival_ms < events_.top().at_ms)) {
      now_ms_ = invocations[next].arrival_ms;
      arrive(static_cast<uint32_t>(next++));
      continue;
    }
    Event e = events_.top();
    if (!arrivals_left && in_flight_ == 0 && e.at_ms > end_ms) break;
    events_.pop();
    now_ms_ = e.at_ms;
    handle(e);
  }
  end_ms = std::max(end_ms, now_ms_);

  SimResult result;
  result.end_ms = end_ms;
  for (Function &f : functions_) {
    for (uint32_t inst : f.warm) {
      uint64_t since = f.instances[inst].warm_since_ms;
      if (end_ms > since) f.result.idle_ms += end_ms - since;
    }
    f.result.on_histogram = f.policy.windows().from_histogram ? 1 : 0;
    result.total.add(f.result);
    result.functions.push_back(f.result);
  }
  return result;
}

void Simulation::handle(const Event &e) {
  switch (e.kind) {
    case EventKind::ready:
      return on_ready(e.function, e.instance);
    case EventKind::done:
      return on_done(e.function, e.instance);
    case EventKind::expire:
      return on_expire(e.function, e.instance, e.epoch);
    case EventKind::prewarm:
      return on_prewarm(e.function, e.epoch);
  }
}

void Simulation::arrive(uint32_t index) {
  uint32_t fn = trace_.invocations[index].function;
  Function &f = functions_[fn];
  ++f.result.invocations;
  if (f.warm.empty() && f.queue.size() >= options_.queue_limit) {
    ++f.result.rejected;  // the node answers 429 at once: nothing runs, nothing to learn
    return;
  }
  f.policy.on_arrival(now_ms_, f.in_flight);
  ++f.in_flight;
  ++in_flight_;
  // The idle period ended: the next completion that leaves the function idle decides anew.
  f.prewarm_pending = false;
  ++f.prewarm_epoch;
  if (!f.warm.empty()) {
    uint32_t inst = take_warm(fn, f.warm.size() - 1);  // most recently used
    return assign(fn, inst, index, Outcome::warm);
  }
  f.queue.push_back(index);
  ensure_capacity(fn);
}

void Simulation::ensure_capacity(uint32_t fn) {
  Function &f = functions_[fn];
  while (f.queue.size() > f.booting && f.active() < options_.scale_max)
    boot(fn, BootReason::demand);
}

void Simulation::boot(uint32_t fn, BootReason reason) {
  Function &f = functions_[fn];
  uint32_t inst;
  if (!f.free_slots.empty()) {
    inst = f.free_slots.back();
    f.free_slots.pop_back();
  } else {
    inst = static_cast<uint32_t>(f.instances.size());
    f.instances.emplace_back();
  }
  Instance &in = f.instances[inst];
  assert(in.state == State::free);
  in.state = State::booting;
  in.expire_at_ms = kNever;
  ++in.epoch;
  ++f.booting;
  ++f.result.boots;
  if (reason == BootReason::prewarm) ++f.result.prewarm_boots;
  schedule(now_ms_ + options_.boot_ms, EventKind::ready, fn, inst, in.epoch);
}

void Simulation::on_ready(uint32_t fn, uint32_t inst) {
  Function &f = functions_[fn];
  Instance &in = f.instances[inst];
  assert(in.state == State::booting);
  --f.booting;
  if (!f.queue.empty()) {
    uint32_t index = f.queue.front();
    f.queue.pop_front();
    return assign(fn, inst, index, Outcome::cold);
  }
  // Pre-warmed, for scale.min, or booted for an invocation that another instance served
  // first (Pool::instance_ready -> dispatch(inst, false)).
  in.state = State::busy;  // settle() expects the state a completion leaves
  ++f.busy;
  settle(fn, inst, false);
}

void Simulation::on_done(uint32_t fn, uint32_t inst) {
  Function &f = functions_[fn];
  assert(f.instances[inst].state == State::busy);
  --f.in_flight;
  --in_flight_;
  f.policy.on_completion(now_ms_, f.in_flight);
  if (!f.queue.empty()) {
    uint32_t index = f.queue.front();
    f.queue.pop_front();
    return assign(fn, inst, index, Outcome::queued);
  }
  settle(fn, inst, true);
}

// A busy instance with nothing waiting turns warm under the policy's windows, as
// Pool::apply_keepalive does: scale.min first, then the pre-warm (only after an invocation
// that left the function idle), else a keep-alive of keepalive_ms.
void Simulation::settle(uint32_t fn, uint32_t inst, bool after_invocation) {
  Function &f = functions_[fn];
  assert(f.instances[inst].state == State::busy);
  if (f.warm.size() + 1 <= options_.scale_min) return make_warm(fn, inst, kNever);
  // Released at concurrency in_flight + 1: that rank's windows (a pre-warmed or scale-up
  // instance that never served is rank 1's), as Pool::apply_keepalive.
  uint32_t rank = options_.ranks > 1 && after_invocation ? f.in_flight + 1 : 1;
  pool::KeepAliveWindows w = f.policy.windows(rank);
  if (after_invocation && f.in_flight == 0 && w.prewarm_ms > 0) {
    // The next arrival is not expected before prewarm_ms: unload now, load one then. That
    // goes for every idle instance (a concurrency peak's leftovers too), least recently
    // used first, down to scale.min.
    stop(fn, inst);
    while (f.warm.size() > options_.scale_min) stop(fn, take_warm(fn, 0));
    f.prewarm_pending = true;
    schedule(now_ms_ + w.prewarm_ms, EventKind::prewarm, fn, 0, ++f.prewarm_epoch);
    return;
  }
  if (rank > 1 && w.prewarm_ms > 0 && !options_.ranked_keep) {
    // Rank k's next arrival is not expected before prewarm_ms: unload, no pre-warm (only
    // rank 1 pre-warms).
    stop(fn, inst);
    return;
  }
  uint64_t keep_ms = rank > 1 && options_.ranked_keep ? w.horizon_ms() : w.keepalive_ms;
  // The variant: the idle-time histogram (of times when nothing runs) does not describe how
  // long an instance released while others still run will wait.
  if (after_invocation && f.in_flight != 0 && options_.busy_release_fixed)
    keep_ms = f.policy.spec().fixed_ms;
  make_warm(fn, inst, keep_ms);
}

void Simulation::assign(uint32_t fn, uint32_t inst, uint32_t index, Outcome outcome) {
  Function &f = functions_[fn];
  Instance &in = f.instances[inst];
  assert(in.state != State::free && in.state != State::warm);  // take_warm() first
  if (in.state != State::busy) {
    in.state = State::busy;
    ++f.busy;
  }
  ++in.epoch;
  switch (outcome) {
    case Outcome::warm:
      ++f.result.warm;
      break;
    case Outcome::cold:
      ++f.result.cold;
      break;
    case Outcome::queued:
      ++f.result.queued;
      break;
  }
  schedule(now_ms_ + trace_.invocations[index].duration_ms, EventKind::done, fn, inst, in.epoch);
}

// From booting or busy to warm (most recently used), stopped after keep_ms (kNever: kept).
void Simulation::make_warm(uint32_t fn, uint32_t inst, uint64_t keep_ms) {
  Function &f = functions_[fn];
  Instance &in = f.instances[inst];
  assert(in.state == State::booting || in.state == State::busy);
  if (in.state == State::busy) --f.busy;
  in.state = State::warm;
  in.warm_since_ms = now_ms_;
  ++in.epoch;
  f.warm.push_back(inst);
  set_expiry(fn, inst, keep_ms == kNever ? kNever : now_ms_ + keep_ms);
}

void Simulation::set_expiry(uint32_t fn, uint32_t inst, uint64_t at_ms) {
  Instance &in = functions_[fn].instances[inst];
  ++in.epoch;  // the previous expiry event, if any, is now stale
  in.expire_at_ms = at_ms;
  if (at_ms != kNever) schedule(at_ms, EventKind::expire, fn, inst, in.epoch);
}

// Removes a warm instance from the warm stack, counting its idle time. It comes back busy:
// the caller assigns it an invocation or stops it.
uint32_t Simulation::take_warm(uint32_t fn, size_t position) {
  Function &f = functions_[fn];
  uint32_t inst = f.warm[position];
  f.warm.erase(f.warm.begin() + static_cast<std::ptrdiff_t>(position));
  Instance &in = f.instances[inst];
  assert(in.state == State::warm);
  f.result.idle_ms += now_ms_ - in.warm_since_ms;
  in.state = State::busy;  // out of the stack; the caller assigns or stops it
  ++f.busy;
  return inst;
}

void Simulation::stop(uint32_t fn, uint32_t inst) {
  Function &f = functions_[fn];
  Instance &in = f.instances[inst];
  assert(in.state == State::busy);  // as take_warm() leaves it
  --f.busy;
  in.state = State::free;
  ++in.epoch;
  f.free_slots.push_back(inst);
}

void Simulation::on_expire(uint32_t fn, uint32_t inst, uint32_t epoch) {
  Function &f = functions_[fn];
  Instance &in = f.instances[inst];
  if (in.epoch != epoch || in.state != State::warm) return;  // used or changed since
  if (f.warm.size() <= options_.scale_min) {
    in.expire_at_ms = kNever;  // one of the scale.min warm instances: kept
    return;
  }
  auto it = std::find(f.warm.begin(), f.warm.end(), inst);
  assert(it != f.warm.end());
  stop(fn, take_warm(fn, static_cast<size_t>(it - f.warm.begin())));
}

void Simulation::on_prewarm(uint32_t fn, uint32_t epoch) {
  Function &f = functions_[fn];
  if (!f.prewarm_pending || epoch != f.prewarm_epoch) return;  // an arrival came first
  f.prewarm_pending = false;
  // As Pool::on_prewarm: not if one is warm or booting already; the pre-warmed instance
  // gets the policy's keep-alive when it is ready (settle, not after an invocation).
  if (!f.warm.empty() || f.booting > 0 || f.active() >= options_.scale_max) return;
  boot(fn, BootReason::prewarm);
}

}  // namespace

void FunctionResult::add(const FunctionResult &other) {
  invocations += other.invocations;
  warm += other.warm;
  cold += other.cold;
  queued += other.queued;
  rejected += other.rejected;
  boots += other.boots;
  prewarm_boots += other.prewarm_boots;
  idle_ms += other.idle_ms;
  on_histogram += other.on_histogram;
}

double FunctionResult::cold_fraction() const {
  uint64_t served = warm + cold + queued;
  return served == 0 ? 0.0 : static_cast<double>(cold) / static_cast<double>(served);
}

double SimResult::idle_memory_gib_s(uint64_t memory_bytes) const {
  return idle_instance_s() * static_cast<double>(memory_bytes) / static_cast<double>(1ull << 30);
}

SimResult simulate(const Trace &trace, const pool::KeepAliveSpec &spec, const SimOptions &options) {
  return Simulation(trace, spec, options).run();
}

}  // namespace faasvisor::bench
