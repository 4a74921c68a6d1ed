#include "pool/scheduler.h"

#include <algorithm>
#include <cassert>

#include "util/clock.h"
#include "util/log.h"

namespace faasvisor::pool {

Pool::Pool(io::Ring &ring, io::TimerQueue &timers, PoolOptions options)
    : ring_(ring), timers_(timers), options_(options) {
  started_ns_ = monotonic_ns();
  sample_timer_.owner = this;
  sample_timer_.callback = &Pool::on_sample;
  timers_.start(sample_timer_, monotonic_ns() + options_.memory_sample_ms * 1'000'000ull);
}

Pool::~Pool() {
  timers_.stop(sample_timer_);
  for (auto &[name, fn] : functions_) timers_.stop(fn->prewarm_timer);
  // The node stops every instance and waits for them before destroying the pool.
  assert(live_instances_ == 0 && "pool destroyed with live instances");
}

void Pool::add_backend(std::unique_ptr<backend::Backend> backend) {
  backend->set_secrets(secrets_);
  backend->set_network(network_);
  backends_.push_back(std::move(backend));
}

void Pool::set_network(net::Network *network) {
  network_ = network;
  if (network_ != nullptr) network_->set_on_ready([this] { retry_waiting(); });
}

bool Pool::network_ready(const FunctionSpec &spec) {
  if (!spec.network.egress || network_ == nullptr) return true;
  if (network_->ready(spec.network)) return true;
  (void)network_->want(spec.network);  // on its way (checked at deploy)
  return false;
}

backend::Backend *Pool::find_backend(std::string_view name) const {
  for (const auto &b : backends_)
    if (name == b->name()) return b.get();
  return nullptr;
}

Function *Pool::find(std::string_view name) const {
  auto it = functions_.find(name);
  return it == functions_.end() ? nullptr : it->second.get();
}

namespace {
PoolError check_backend(const Pool &pool, const FunctionSpec &spec, backend::Backend **out) {
  backend::Backend *b = pool.find_backend(spec.backend);
  if (b == nullptr) {
    std::string known;
    for (const auto &each : pool.backends()) known += (known.empty() ? "" : ", ") + std::string(each->name());
    return {Outcome::bad_backend, "field 'annotations.faasvisor.backend': unknown backend '" +
                                      spec.backend + "' (this node has: " + known + ")"};
  }
  std::string why;
  if (!b->available(&why))
    return {Outcome::bad_backend, "backend '" + spec.backend + "' cannot run on this host: " + why};
  Status st = b->validate(spec);
  if (!st.ok()) return {Outcome::bad_backend, st.error().message()};
  if (spec.network.egress) {
    const char *field = "field 'annotations.faasvisor.network': ";
    if (!b->network_support(&why)) return {Outcome::bad_backend, field + why};
    if (pool.network() == nullptr) return {Outcome::bad_backend, std::string(field) + "this node has no instance networking"};
    if (!pool.network()->available(&why))
      return {Outcome::bad_backend, field + ("instance networking is unavailable on this node: " + why)};
  }
  *out = b;
  return {Outcome::ok, {}};
}
}  // namespace

namespace {
// A backend whose instances boot slowly (a Linux guest under TCG) sets its own default.
// Each instance holds its memory limit against the node's budget, plus what the backend
// itself costs per instance (a VMM beside its guest's RAM).
void apply_backend_defaults(FunctionSpec &spec, const backend::Backend &b) {
  uint64_t boot_ms = b.default_boot_timeout_ms();
  if (boot_ms > 0 && spec.annotations.count("faasvisor.boot_timeout") == 0) spec.boot_timeout_ms = boot_ms;
  spec.reservation_bytes = spec.memory_bytes + b.memory_overhead_bytes(spec);
  b.settle(spec);
}

PoolError check_budget(const FunctionSpec &spec, uint64_t budget) {
  uint64_t need = std::max(spec.memory_bytes, spec.reservation_bytes);
  if (need <= budget) return {Outcome::ok, {}};
  std::string overhead = need > spec.memory_bytes
                             ? " (+" + std::to_string((need - spec.memory_bytes) >> 20) + " MiB for the backend)"
                             : "";
  return {Outcome::bad_backend, "field 'limits.memory': " + std::to_string(spec.memory_bytes >> 20) + " MiB" +
                                    overhead + " is more than the node's whole memory budget (" +
                                    std::to_string(budget >> 20) + " MiB)"};
}
}  // namespace

PoolError Pool::deploy(std::shared_ptr<FunctionSpec> spec) {
  if (find(spec->name) != nullptr)
    return {Outcome::exists, "function '" + spec->name + "' already exists (use PUT to update)"};
  if (PoolError e = check_budget(*spec, options_.memory_budget_bytes); e.outcome != Outcome::ok) return e;
  backend::Backend *b = nullptr;
  PoolError err = check_backend(*this, *spec, &b);
  if (err.outcome != Outcome::ok) return err;
  apply_backend_defaults(*spec, *b);  // settles spec->network.tap
  if (spec->network.egress) (void)network_->want(spec->network);  // prepared from now on
  if (PoolError e = check_budget(*spec, options_.memory_budget_bytes); e.outcome != Outcome::ok) return e;
  std::string name = spec->name;
  auto fn = std::make_shared<Function>(std::move(spec), *b);
  fn->owner_pool = this;
  fn->prewarm_timer.owner = fn.get();
  fn->prewarm_timer.callback = &Pool::on_prewarm;
  functions_.emplace(name, fn);
  fn->backend().prepare(fn->spec());
  ensure_min(*fn);
  FV_INFO("deployed function %s", name.c_str());
  return {Outcome::ok, {}};
}

PoolError Pool::update(std::shared_ptr<FunctionSpec> spec) {
  Function *fn = find(spec->name);
  if (fn == nullptr) return {Outcome::not_found, "function '" + spec->name + "' not found"};
  if (PoolError e = check_budget(*spec, options_.memory_budget_bytes); e.outcome != Outcome::ok) return e;
  backend::Backend *b = nullptr;
  PoolError err = check_backend(*this, *spec, &b);
  if (err.outcome != Outcome::ok) return err;
  apply_backend_defaults(*spec, *b);  // settles spec->network.tap
  if (spec->network.egress) (void)network_->want(spec->network);  // prepared from now on
  if (PoolError e = check_budget(*spec, options_.memory_budget_bytes); e.outcome != Outcome::ok) return e;
  fn->backend().retire(fn->spec());  // e.g. its template: the new definition gets its own
  fn->replace_spec(std::move(spec), *b);
  fn->backend().prepare(fn->spec());
  // Warm instances of the old definition retire now; busy and booting ones when they
  // next become idle (dispatch checks the generation).
  while (Instance *inst = fn->warm_list.pop_front()) inst->stop("function updated");
  ensure_capacity(*fn);
  ensure_min(*fn);
  FV_INFO("updated function %s (generation %llu)", fn->name().c_str(),
          static_cast<unsigned long long>(fn->generation()));
  return {Outcome::ok, {}};
}

PoolError Pool::remove(std::string_view name) {
  auto it = functions_.find(name);
  if (it == functions_.end())
    return {Outcome::not_found, "function '" + std::string(name) + "' not found"};
  std::shared_ptr<Function> fn = it->second;
  functions_.erase(it);
  fn->deleted = true;
  fn->backend().retire(fn->spec());
  timers_.stop(fn->prewarm_timer);
  fail_queued(*fn, 503, "function '" + fn->name() + "' was deleted", SIZE_MAX);
  // Busy instances finish their invocation first; dispatch stops them then.
  fn->instances.for_each([](Instance &inst) {
    if (inst.state() != InstanceState::busy) inst.stop("function deleted");
  });
  FV_INFO("removed function %s", fn->name().c_str());
  return {Outcome::ok, {}};
}

PoolError Pool::scale(std::string_view name, uint64_t replicas) {
  Function *fn = find(name);
  if (fn == nullptr) return {Outcome::not_found, "function '" + std::string(name) + "' not found"};
  uint64_t target = std::min<uint64_t>(replicas, fn->spec().max_instances);
  // Pre-booting uses free budget only: it never evicts other functions' instances.
  while (fn->active() < target && !shutting_down_ &&
         reserved_bytes_ + fn->spec().reservation_bytes <= options_.memory_budget_bytes) {
    if (!spawn_instance(*fn)) break;
  }
  // Scaling down stops idle instances, least recently used first, then booting ones that
  // no invocation waits for (they would only become idle). Busy instances finish.
  while (fn->active() > target) {
    Instance *inst = fn->warm_list.pop_back();
    if (inst == nullptr) break;
    inst->stop("scaled down");
  }
  if (fn->queue.empty()) {
    fn->instances.for_each([&](Instance &inst) {
      if (fn->active() > target && inst.state() == InstanceState::booting) inst.stop("scaled down");
    });
  }
  if (fn->active() < target && !shutting_down_) {
    return {Outcome::ok, "started " + std::to_string(fn->active()) + " of " + std::to_string(target) +
                             " instances: the node's memory budget (" +
                             std::to_string(options_.memory_budget_bytes >> 20) + " MiB) is full"};
  }
  return {Outcome::ok, {}};
}

void Pool::reset_stats() {
  for (auto &[name, fn] : functions_) fn->stats.reset();
}

void Pool::invoke(Function &fn, Invocation &inv) {
  assert(inv.state == Invocation::State::idle);
  assert(inv.sink != nullptr);
  inv.function = &fn;
  inv.counted = false;
  ++fn.invocation_count;
  ++running_;
  inv.state = Invocation::State::queued;  // until assigned or answered
  if (shutting_down_) return answer(inv, 503, "the node is shutting down", 1);
  Instance *inst = fn.warm_list.pop_front();
  if (inst == nullptr && fn.queue.size() >= fn.spec().queue_limit) {
    return answer(inv, 429,
                  "too many invocations waiting for '" + fn.name() + "' (queue limit " +
                      std::to_string(fn.spec().queue_limit) + ")",
                  options_.retry_after_s);
  }
  // Accepted: the keep-alive policy sees it (refused invocations never ran, so they say
  // nothing about the function's idle times), and a pending pre-warm is moot.
  inv.counted = true;
  fn.policy.on_arrival(policy_now_ms(), fn.in_flight);
  ++fn.in_flight;
  timers_.stop(fn.prewarm_timer);
  if (inst != nullptr) {
    inv.state = Invocation::State::running;
    inst->assign(inv, monotonic_ns(), false);
    return;
  }
  inv.deadline.callback = &Pool::on_deadline;
  inv.deadline.owner = this;
  timers_.start(inv.deadline, inv.arrival_ns + fn.spec().timeout_ms * 1'000'000ull);
  fn.queue.push_back(inv);
  ensure_capacity(fn);
}

void Pool::abandon(Invocation &inv) {
  switch (inv.state) {
    case Invocation::State::idle: return;
    case Invocation::State::queued:
      if (inv.queue_hook.linked()) inv.function->queue.remove(inv);
      break;
    case Invocation::State::running:
      if (inv.instance != nullptr) inv.instance->abandon(inv);
      break;
  }
  end_invocation(inv);
}

// The bookkeeping every invocation ends with, answered or abandoned.
void Pool::end_invocation(Invocation &inv) {
  timers_.stop(inv.deadline);
  inv.state = Invocation::State::idle;
  inv.instance = nullptr;
  --running_;
  if (inv.counted) {
    Function &fn = *inv.function;
    --fn.in_flight;
    fn.policy.on_completion(policy_now_ms(), fn.in_flight);
  }
}

void Pool::on_deadline(io::Timer &t) {
  auto &pool = t.owner_as<Pool>();
  // The timer is embedded in the invocation: recover it.
  auto *inv = reinterpret_cast<Invocation *>(reinterpret_cast<char *>(&t) -
                                             offsetof(Invocation, deadline));
  assert(inv->state == Invocation::State::queued);
  Function &fn = *inv->function;
  fn.queue.remove(*inv);
  std::string waited = std::to_string(fn.spec().timeout_ms) + " ms";
  if (fn.booting == 0 && fn.active() < fn.spec().max_instances) {
    // Nothing was booting for it although the function had room: the memory budget held it.
    pool.answer(*inv, 503,
                "no memory for an instance of '" + fn.name() + "' within " + waited +
                    " (the node's memory budget is taken by busy instances)",
                pool.options_.retry_after_s);
    return;
  }
  pool.answer(*inv, 504, "timed out after " + waited + " waiting for an instance of '" + fn.name() + "'");
}

void Pool::ensure_capacity(Function &fn) {
  if (shutting_down_ || fn.deleted) return;
  while (fn.queue.size() > fn.booting && fn.active() < fn.spec().max_instances) {
    if (!spawn_instance(fn)) break;
  }
}

bool Pool::reserve(uint64_t need) {
  uint64_t budget = options_.memory_budget_bytes;
  if (reserved_bytes_ + need <= budget) return true;
  // Stop idle instances, least recently used first, until what stops would make room. The
  // room exists only once they have exited (stopping instances still hold their memory), so
  // the caller waits for instance_finished to retry: the budget is never overcommitted.
  uint64_t freeing = 0;
  all_.for_each([&](Instance &inst) {
    if (inst.state() == InstanceState::stopping) freeing += inst.reserved_bytes();
  });
  while (reserved_bytes_ - freeing + need > budget) {
    Instance *victim = nullptr;
    for (auto &[name, f] : functions_) {
      Instance *candidate = f->warm_list.back();  // the least recently used of that function
      if (candidate == nullptr || f->warm <= f->spec().min_instances) continue;
      if (victim == nullptr || candidate->last_used_ns() < victim->last_used_ns()) victim = candidate;
    }
    if (victim == nullptr) {
      budget_blocked_ = true;  // retry when an instance goes idle or exits
      return false;
    }
    ++victim->function().stats.evictions;
    freeing += victim->reserved_bytes();
    victim->stop("evicted to make room under the memory budget");
  }
  return false;
}

void Pool::retry_waiting() {
  budget_blocked_ = false;
  for (auto &[name, fn] : functions_)
    if (!fn->queue.empty()) ensure_capacity(*fn);
}

void Pool::on_sample(io::Timer &t) {
  auto &pool = t.owner_as<Pool>();
  // Measuring reads /proc (smaps_rollup walks the page tables): a bounded batch per tick,
  // round robin, keeps the loop responsive with thousands of instances.
  constexpr size_t kBatch = 64;
  size_t n = pool.all_.size(), index = 0, taken = 0;
  if (pool.sample_cursor_ >= n) pool.sample_cursor_ = 0;
  pool.all_.for_each([&](Instance &inst) {
    if (index++ >= pool.sample_cursor_ && taken < kBatch) {
      inst.sample_memory();
      ++taken;
    }
  });
  pool.sample_cursor_ += taken;
  // Replace scale.min instances that died, at most once a tick (a function that cannot
  // start does not spin).
  for (auto &[name, fn] : pool.functions_) pool.ensure_min(*fn);
  uint64_t rounds = std::max<uint64_t>(1, (n + kBatch - 1) / kBatch);
  pool.timers_.start(pool.sample_timer_,
                     monotonic_ns() + pool.options_.memory_sample_ms * 1'000'000ull / rounds);
}

bool Pool::spawn_instance(Function &fn) {
  if (!network_ready(fn.spec())) return false;
  if (!reserve(fn.spec().reservation_bytes)) return false;
  std::shared_ptr<Function> owner = functions_.at(fn.name());
  auto *inst = new Instance(*this, std::move(owner), next_instance_id_++);
  all_.push_back(*inst);
  ++live_instances_;
  reserved_bytes_ += inst->reserved_bytes();
  if (observer_ != nullptr) observer_->instance_changed(*inst, InstanceChange::started, {}, false, 0);
  Status st = inst->start(monotonic_ns());
  // On failure the instance is already stopping and reported through instance_stopping.
  return st.ok();
}

void Pool::instance_ready(Instance &inst, uint64_t init_ns) {
  inst.function().stats.init_ms.add(static_cast<double>(init_ns) / 1e6);
  inst.function().stats.init_seconds.observe(static_cast<double>(init_ns) / 1e9);
  if (observer_ != nullptr) observer_->instance_changed(inst, InstanceChange::ready, {}, false, init_ns);
  dispatch(inst, false);
}

void Pool::instance_idle(Instance &inst) { dispatch(inst, true); }

uint64_t Pool::policy_now_ms() const {
  return static_cast<uint64_t>(static_cast<double>(monotonic_ns() - started_ns_) *
                               options_.policy_time_scale / 1e6);
}

uint64_t Pool::policy_ms_to_ns(uint64_t policy_ms) const {
  return static_cast<uint64_t>(static_cast<double>(policy_ms) * 1e6 / options_.policy_time_scale);
}

// After an instance goes idle: the function's keep-alive policy says how long it stays.
void Pool::apply_keepalive(Instance &inst, bool after_invocation) {
  Function &fn = inst.function();
  if (fn.warm <= fn.spec().min_instances) return;  // scale.min instances are always kept
  // Released at concurrency in_flight + 1 (keepalive.h: per-rank histograms); an instance
  // that never served (pre-warmed, or booted for an invocation another one took) is rank 1.
  uint32_t rank = after_invocation ? fn.in_flight + 1 : 1;
  KeepAliveWindows w = fn.policy.windows(rank);
  if (w.prewarm_ms > 0 && rank > 1) {
    // Rank `rank` is not expected back before the pre-warm window, and only rank 1
    // pre-warms: unload it now.
    fn.warm_list.remove(inst);
    ++fn.stats.keepalive_stops;
    inst.stop("keep-alive: unloaded, its concurrency rank not expected back soon");
    return;
  }
  if (w.prewarm_ms > 0 && after_invocation) {
    // The next arrival is expected no sooner than the pre-warm window: unload now and
    // bring one instance back just before it. That holds for every idle instance of the
    // function (those a concurrency peak left behind too), not only the one just released.
    fn.warm_list.remove(inst);
    ++fn.stats.keepalive_stops;
    inst.stop("keep-alive: unloaded until the pre-warm window");
    while (fn.warm > fn.spec().min_instances) {
      Instance *other = fn.warm_list.pop_back();  // least recently used first
      if (other == nullptr) break;
      ++fn.stats.keepalive_stops;
      other->stop("keep-alive: unloaded until the pre-warm window");
    }
    timers_.start(fn.prewarm_timer, monotonic_ns() + policy_ms_to_ns(w.prewarm_ms));
    return;
  }
  inst.set_idle_deadline(monotonic_ns() + policy_ms_to_ns(w.keepalive_ms));
}

void Pool::on_prewarm(io::Timer &t) {
  auto &fn = t.owner_as<Function>();
  Pool &pool = *fn.owner_pool;
  if (fn.deleted || pool.shutting_down_ || fn.warm > 0 || fn.booting > 0) return;
  if (fn.active() >= fn.spec().max_instances) return;
  if (pool.reserved_bytes_ + fn.spec().reservation_bytes > pool.options_.memory_budget_bytes) return;
  if (pool.spawn_instance(fn)) {
    ++fn.stats.prewarms;
    fn.instances.back()->prewarmed = true;
  }
}

void Pool::instance_idle_expired(Instance &inst) {
  Function &fn = inst.function();
  if (fn.warm <= fn.spec().min_instances) return;
  fn.warm_list.remove(inst);
  ++fn.stats.keepalive_stops;
  inst.stop("keep-alive expired");
}

void Pool::ensure_min(Function &fn) {
  while (!shutting_down_ && !fn.deleted && fn.active() < fn.spec().min_instances &&
         reserved_bytes_ + fn.spec().reservation_bytes <= options_.memory_budget_bytes) {
    if (!spawn_instance(fn)) break;
  }
}

void Pool::dispatch(Instance &inst, bool after_invocation) {
  Function &fn = inst.function();
  assert(inst.state() == InstanceState::warm);
  // While shutting down, instances still serve what was queued before the signal.
  if (fn.deleted || (shutting_down_ && fn.queue.empty()) || inst.generation() != fn.generation()) {
    inst.stop(fn.deleted ? "function deleted" : shutting_down_ ? "node shutting down" : "function updated");
    ensure_capacity(fn);
    return;
  }
  bool prewarmed = inst.prewarmed;
  inst.prewarmed = false;
  if (Invocation *inv = fn.queue.pop_front()) {
    timers_.stop(inv->deadline);
    inv->state = Invocation::State::running;
    // Cold: it waited for this instance to boot (a pre-warmed one booted for nobody in
    // particular, so an invocation that meets it at READY did not wait for its whole boot,
    // but it did wait: still cold).
    inst.assign(*inv, monotonic_ns(), !after_invocation);
    return;
  }
  fn.warm_list.push_front(inst);
  apply_keepalive(inst, after_invocation && !prewarmed);
  // An invocation of another function may be waiting for memory this idle instance holds.
  if (budget_blocked_) retry_waiting();
}

void Pool::instance_stopping(Instance &inst, bool failed_boot, const std::string &reason) {
  Function &fn = inst.function();
  if (observer_ != nullptr) observer_->instance_changed(inst, InstanceChange::stopping, reason, failed_boot, 0);
  if (inst.warm_hook.linked()) fn.warm_list.remove(inst);
  if (failed_boot) {
    // The instance that was to serve the oldest waiting invocation failed: answer that one,
    // so a function that never boots drains its queue instead of respawning forever.
    fail_queued(fn, 502, "instance of '" + fn.name() + "' failed to start: " + reason, 1);
  }
  ensure_capacity(fn);
}

void Pool::instance_finished(Instance &inst) {
  Function &fn = inst.function();
  assert(inst.state() == InstanceState::stopping && fn.stopping > 0);
  --fn.stopping;
  if (observer_ != nullptr) observer_->instance_changed(inst, InstanceChange::stopped, {}, false, 0);
  fn.instances.remove(inst);
  all_.remove(inst);
  --live_instances_;
  reserved_bytes_ -= inst.reserved_bytes();
  delete &inst;
  // Memory came free: invocations that waited for the budget may go now.
  retry_waiting();
}

void Pool::deliver(Invocation &inv, InvocationResult &result) {
  Function &fn = *inv.function;
  uint64_t now = monotonic_ns();
  result.duration_ns = now - inv.arrival_ns;
  double exec_ms = static_cast<double>(result.duration_ns) / 1e6;
  if (result.error.empty()) {
    if (result.cold) {
      ++fn.stats.cold;
      fn.stats.exec_cold_ms.add(exec_ms);
    } else {
      ++fn.stats.warm;
      fn.stats.exec_warm_ms.add(exec_ms);
    }
  }
  if (result.status >= 500 || result.status == 429) ++fn.stats.errors;
  ++fn.stats.by_status[result.status];
  fn.stats.exec_seconds.observe(exec_ms / 1e3);
  end_invocation(inv);
  inv.sink->invocation_done(inv, result);
}

void Pool::answer(Invocation &inv, int status, std::string error, uint32_t retry_after_s) {
  InvocationResult result;
  result.status = status;
  result.error = std::move(error);
  result.retry_after_s = retry_after_s;
  deliver(inv, result);
}

void Pool::fail_queued(Function &fn, int status, const std::string &reason, size_t max_count) {
  for (size_t i = 0; i < max_count; ++i) {
    Invocation *inv = fn.queue.pop_front();
    if (inv == nullptr) break;
    answer(*inv, status, reason);
  }
}

void Pool::begin_shutdown() {
  shutting_down_ = true;
  for (const auto &b : backends_) b->drain();
  // Idle instances can go now; queued invocations are still served by busy ones.
  for (auto &[name, fn] : functions_) {
    if (!fn->queue.empty()) continue;
    while (Instance *inst = fn->warm_list.pop_front()) inst->stop("node shutting down");
  }
}

bool Pool::drained() const { return running_ == 0; }

void Pool::stop_all(const char *why) {
  for (auto &[name, fn] : functions_) fail_queued(*fn, 503, "the node is shutting down", SIZE_MAX);
  // Every instance, including those of functions already deleted.
  all_.for_each([&](Instance &inst) {
    if (inst.state() == InstanceState::busy) inst.kill(503, "the node is shutting down");
    else if (inst.state() != InstanceState::stopping) inst.stop(why);
  });
}

}  // namespace faasvisor::pool
