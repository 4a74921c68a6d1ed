#include "async/calls.h"

#include <sys/random.h>

#include <algorithm>
#include <cassert>
#include <cstdio>

#include "http/response.h"
#include "util/clock.h"
#include "util/log.h"

namespace faasvisor::async {
namespace {

// The headers the node sets on a callback itself; a function's own copies are not passed.
bool reserved_callback_header(std::string_view name) {
  static constexpr std::string_view kNames[] = {
      "content-length", "transfer-encoding", "connection", "keep-alive", "upgrade", "trailer", "host",
      "x-call-id",      "x-function-status", "x-function-name", "x-duration-seconds"};
  for (std::string_view n : kNames)
    if (http::iequals(name, n)) return true;
  return false;
}

bool header_safe(std::string_view s) {
  return s.find_first_of("\r\n") == std::string_view::npos && s.find('\0') == std::string_view::npos;
}

// A client's own X-Call-Id is kept (it names the call in its logs); it must be a plain token.
bool valid_call_id(std::string_view id) {
  if (id.empty() || id.size() > 128) return false;
  for (char c : id) {
    auto u = static_cast<unsigned char>(c);
    if (u <= 0x20 || u >= 0x7f) return false;
  }
  return true;
}

void add_header(std::string &out, std::string_view name, std::string_view value) {
  out += name;
  out += ": ";
  out += value;
  out += "\r\n";
}

}  // namespace

// --- Call -------------------------------------------------------------------------------

Call::Call(AsyncCalls &o) : owner(o) {
  inv.sink = this;
  client.owner = this;
  client.callback = &Call::on_callback;
  retry_timer.owner = this;
  retry_timer.callback = &AsyncCalls::on_call_retry;
}

Call::~Call() { assert(!client.busy() && inv.state == pool::Invocation::State::idle); }

void Call::journal_done(Status st, uint64_t seg) { owner.journaled(*this, std::move(st), seg); }

void Call::invocation_done(pool::Invocation &, const pool::InvocationResult &result) {
  owner.result_in(*this, result);
}

void Call::on_callback(CallbackClient &c, Result<int> st) {
  auto &call = c.owner_as<Call>();
  call.owner.callback_over(call, std::move(st));
}

FunctionCalls::FunctionCalls() { retry_timer.owner = this; }
FunctionCalls::~FunctionCalls() { assert(waiting.empty() && !retry_timer.armed()); }

// --- AsyncCalls -------------------------------------------------------------------------

AsyncCalls::AsyncCalls(io::Ring &ring, io::TimerQueue &timers, pool::Pool &pool,
                       std::unique_ptr<Journal> journal, AsyncOptions options)
    : ring_(ring), timers_(timers), pool_(pool), journal_(std::move(journal)), options_(options) {
  drain_op_.owner = this;
  drain_op_.callback = &AsyncCalls::on_drain;
  uint64_t seed = 0;
  if (getrandom(&seed, sizeof seed, GRND_NONBLOCK) != sizeof seed) seed = realtime_ns() ^ monotonic_ns();
  random_.seed(seed);
}

AsyncCalls::~AsyncCalls() {
  assert(idle() && "async calls destroyed with I/O in flight");
  // What is left is not done: its accept record stays in the journal for the next start.
  all_.for_each([&](Call &call) {
    if (call.queue_hook.linked()) {
      if (call.function != nullptr && call.state == Call::State::waiting) call.function->waiting.remove(call);
      else results_.remove(call);
    }
    timers_.stop(call.retry_timer);
    all_.remove(call);
    delete &call;
  });
  for (auto &[name, fc] : functions_) timers_.stop(fc->retry_timer);
}

std::string AsyncCalls::new_call_id() {
  // A version 4 UUID, as the OpenFaaS gateway makes them.
  uint64_t hi = random_(), lo = random_();
  hi = (hi & ~0xf000ull) | 0x4000ull;
  lo = (lo & ~(3ull << 62)) | (2ull << 62);
  char id[40];
  std::snprintf(id, sizeof id, "%08x-%04x-%04x-%04x-%012llx", static_cast<unsigned>(hi >> 32),
                static_cast<unsigned>((hi >> 16) & 0xffff), static_cast<unsigned>(hi & 0xffff),
                static_cast<unsigned>(lo >> 48), static_cast<unsigned long long>(lo & 0xffffffffffffull));
  return id;
}

FunctionCalls &AsyncCalls::calls_of(std::string_view function) {
  auto it = functions_.find(function);
  if (it != functions_.end()) return *it->second;
  auto fc = std::make_unique<FunctionCalls>();
  fc->name = std::string(function);
  fc->owner = this;
  fc->retry_timer.callback = &AsyncCalls::on_function_retry;
  FunctionCalls &ref = *fc;
  functions_.emplace(ref.name, std::move(fc));
  return ref;
}

const FunctionCalls *AsyncCalls::find(std::string_view function) const {
  auto it = functions_.find(function);
  return it == functions_.end() ? nullptr : it->second.get();
}

Refusal AsyncCalls::accept(AcceptWaiter &waiter, const http::Request &req, std::string_view function,
                           std::string_view subpath, Call **out) {
  *out = nullptr;
  if (shutting_down_) return {503, "the node is shutting down", options_.retry_after_s};
  pool::Function *fn = pool_.find(function);
  if (fn == nullptr) return {404, "function '" + std::string(function) + "' not found", 0};
  CallbackUrl url;
  const http::Header *cb = req.find("X-Callback-Url");
  if (cb != nullptr && !cb->value.empty()) {
    auto parsed = parse_callback_url(cb->value);
    if (!parsed) return {400, parsed.error().message(), 0};
    url = std::move(*parsed);
  }
  const http::Header *given_id = req.find("X-Call-Id");
  if (given_id != nullptr && !valid_call_id(given_id->value))
    return {400, "header 'X-Call-Id': must be 1-128 visible ASCII characters", 0};

  FunctionCalls &fc = calls_of(function);
  if (fc.live >= fn->spec().async_queue_limit) {
    ++fc.refused;
    return {429,
            "too many async calls of '" + fn->name() + "' not done yet (queue limit " +
                std::to_string(fn->spec().async_queue_limit) + ")",
            options_.retry_after_s};
  }

  auto *call = new Call(*this);
  CallRecord &rec = call->record;
  rec.seq = journal_->next_seq();
  rec.id = given_id != nullptr ? given_id->value : new_call_id();
  rec.function = fn->name();
  rec.path = std::string(subpath);
  rec.query = std::string(req.query());
  if (cb != nullptr && !cb->value.empty()) rec.callback_url = cb->value;
  rec.headers.assign(req.header_list().begin(), req.header_list().end());
  // The function sees the call's id as the OpenFaaS queue-worker passes it on.
  if (given_id == nullptr) rec.headers.push_back({"X-Call-Id", rec.id});
  rec.body = req.body;
  rec.accepted_unix_ns = realtime_ns();
  call->url = std::move(url);
  call->has_callback = !rec.callback_url.empty();
  call->footprint = rec.footprint_bytes();
  if (memory_bytes_ + call->footprint > options_.max_memory_bytes) {
    ++fc.refused;
    delete call;
    return {429,
            "the node holds " + std::to_string(memory_bytes_ >> 20) + " MiB of async calls not done yet (limit " +
                std::to_string(options_.max_memory_bytes >> 20) + " MiB)",
            options_.retry_after_s};
  }
  memory_bytes_ += call->footprint;
  call->function = &fc;
  call->waiter = &waiter;
  ++fc.live;
  all_.push_back(*call);
  journal_->append_accept(rec, *call);
  *out = call;
  return {};
}

void AsyncCalls::forget(Call &call) { call.waiter = nullptr; }

void AsyncCalls::journaled(Call &call, Status st, uint64_t segment) {
  assert(call.state == Call::State::accepting);
  FunctionCalls &fc = *call.function;
  AcceptWaiter *waiter = call.waiter;
  call.waiter = nullptr;
  if (!st.ok()) {
    // Not durable, so not accepted: the client hears 503 and nothing runs.
    --fc.live;
    memory_bytes_ -= call.footprint;
    all_.remove(call);
    delete &call;
    if (waiter != nullptr) waiter->call_failed(503, "the async call could not be made durable: " + st.error().message());
    drop_if_unused(fc);
    return;
  }
  call.segment = segment;
  call.state = Call::State::waiting;
  ++fc.accepted;
  fc.waiting.push_back(call);
  if (waiter != nullptr) waiter->call_accepted(call.record.id);
  pump(fc);
}

void AsyncCalls::replay(Replay &replay) {
  for (Replay::Pending &p : replay.pending) {
    auto *call = new Call(*this);
    call->record = std::move(p.call);
    call->segment = p.segment;
    if (!call->record.callback_url.empty()) {
      auto url = parse_callback_url(call->record.callback_url);
      if (url) {
        call->url = std::move(*url);
        call->has_callback = true;
      } else {
        FV_WARN("async call %s: its callback URL no longer parses (%s): it runs without one",
                call->record.id.c_str(), url.error().message().c_str());
      }
    }
    call->footprint = call->record.footprint_bytes();
    memory_bytes_ += call->footprint;
    FunctionCalls &fc = calls_of(call->record.function);
    call->function = &fc;
    call->state = Call::State::waiting;
    ++fc.live;
    all_.push_back(*call);
    fc.waiting.push_back(*call);
  }
  if (!replay.pending.empty())
    FV_INFO("async: %zu calls from the journal queued again", replay.pending.size());
  for (auto &[name, fc] : functions_) pump(*fc);
}

// Moves waiting calls into the pool up to the function's async concurrency.
void AsyncCalls::pump(FunctionCalls &fc) {
  while (!shutting_down_ && !fc.pool_blocked && !fc.waiting.empty()) {
    pool::Function *fn = pool_.find(fc.name);
    Call &call = *fc.waiting.front();
    if (fn == nullptr) {
      fc.waiting.remove(call);
      finish_without_pool(call, 404, "function '" + fc.name + "' not found");
      continue;
    }
    if (fc.running >= std::max<uint32_t>(1, fn->spec().async_concurrency)) return;
    fc.waiting.remove(call);
    run(call, *fn);
  }
}

void AsyncCalls::run(Call &call, pool::Function &fn) {
  FunctionCalls &fc = *call.function;
  const CallRecord &rec = call.record;
  pool::Invocation &inv = call.inv;
  // The queue-worker invokes with POST; the function's timeout counts from here, not from
  // acceptance (a call may wait in the async queue far longer than any timeout).
  inv.method = "POST";
  inv.path = rec.path;
  inv.query = rec.query;
  inv.headers = {rec.headers.data(), rec.headers.size()};
  inv.body = rec.body;
  inv.arrival_ns = monotonic_ns();
  call.state = Call::State::running;
  ++fc.running;
  pool_.invoke(fn, inv);  // answered through Pool::run_completed, after the batch
}

void AsyncCalls::result_in(Call &call, const pool::InvocationResult &r) {
  assert(call.state == Call::State::running);
  FunctionCalls &fc = *call.function;
  --fc.running;
  bool refused_by_pool = r.instance_id == 0 && r.status == 429;
  if (refused_by_pool || (shutting_down_ && r.status == 503)) {
    // Not run (its function's queue was full), or cut short by the shutdown: not done. It
    // goes back to the head of its FIFO; a shutdown leaves it to the journal.
    call.state = Call::State::waiting;
    fc.waiting.push_front(call);
    if (refused_by_pool && !shutting_down_) {
      fc.pool_blocked = true;
      timers_.start(fc.retry_timer, monotonic_ns() + options_.pool_retry_ms * 1'000'000ull);
    }
    return;
  }
  call.status = r.status;
  if (call.has_callback) {
    // The result's views die with this call: the callback request is made now.
    const CallRecord &rec = call.record;
    std::string &out = call.request;
    std::string_view body = r.body;
    std::string error_body;
    out.clear();
    out += "POST ";
    out += call.url.target;
    out += " HTTP/1.1\r\n";
    add_header(out, "Host", call.url.host_header);
    add_header(out, "User-Agent", "faasvisor");
    if (!r.error.empty()) {
      error_body = "{\"error\":";
      http::append_json_string(error_body, r.error);
      error_body += "}";
      body = error_body;
      add_header(out, "Content-Type", "application/json");
    } else {
      for (const auto &[name, value] : r.headers)
        if (!name.empty() && !reserved_callback_header(name) && header_safe(name) && header_safe(value))
          add_header(out, name, value);
    }
    char duration[32];
    std::snprintf(duration, sizeof duration, "%f", static_cast<double>(r.duration_ns) / 1e9);
    add_header(out, "X-Call-Id", rec.id);
    add_header(out, "X-Function-Name", rec.function);
    add_header(out, "X-Function-Status", std::to_string(r.status));
    add_header(out, "X-Duration-Seconds", duration);
    add_header(out, "Content-Length", std::to_string(body.size()));
    out += "Connection: close\r\n\r\n";
    out += body;
    memory_bytes_ += out.size();
    call.footprint += out.size();
  }
  // The request is in the journal should the call have to run again: memory holds only
  // what the callback needs from here on.
  size_t before = call.record.footprint_bytes();
  std::string().swap(call.record.body);
  std::vector<http::Header>().swap(call.record.headers);
  memory_bytes_ -= before - call.record.footprint_bytes();
  call.footprint -= before - call.record.footprint_bytes();
  completed(call);
}

void AsyncCalls::finish_without_pool(Call &call, int status, std::string error) {
  pool::InvocationResult r;
  r.status = status;
  r.error = std::move(error);
  call.state = Call::State::running;
  ++call.function->running;
  result_in(call, r);
}

// Queues a call whose result is in for the next loop turn.
void AsyncCalls::completed(Call &call) {
  call.state = Call::State::result;
  results_.push_back(call);
  if (!drain_op_.in_flight) ring_.nop(drain_op_);
}

void AsyncCalls::on_drain(io::Completion &c, int, uint32_t) {
  auto &self = c.owner_as<AsyncCalls>();
  while (Call *call = self.results_.pop_front()) {
    std::string name = call->function->name;  // done() may drop the function's entry
    if (call->has_callback && !self.shutting_down_) {
      self.start_callback(*call);
    } else if (call->has_callback) {
      call->state = Call::State::backoff;  // left for the journal: the next start calls back
    } else {
      self.done(*call);
    }
    if (auto it = self.functions_.find(name); it != self.functions_.end()) self.pump(*it->second);
  }
}

void AsyncCalls::start_callback(Call &call) {
  call.state = Call::State::calling_back;
  ++call.attempts;
  ++call.function->callbacks;
  ++callbacks_in_flight_;
  call.client.start(ring_, timers_, call.url, call.request, options_.callback_timeout_ms);
}

void AsyncCalls::callback_over(Call &call, Result<int> st) {
  --callbacks_in_flight_;
  FunctionCalls &fc = *call.function;
  const CallRecord &rec = call.record;
  bool failed = !st.ok() || *st >= 500;
  if (!failed) {
    if (*st >= 400)
      FV_WARN("async call %s of %s: the callback URL answered %d (not retried)", rec.id.c_str(),
              rec.function.c_str(), *st);
    return done(call);
  }
  std::string why = st.ok() ? "status " + std::to_string(*st) : st.error().message();
  if (shutting_down_) {
    call.state = Call::State::backoff;  // left for the journal: the next start calls back
    return;
  }
  if (call.attempts >= options_.callback_attempts) {
    ++fc.callback_dropped;
    FV_WARN("async call %s of %s: callback to %s dropped after %u attempts (last: %s)", rec.id.c_str(),
            rec.function.c_str(), rec.callback_url.c_str(), call.attempts, why.c_str());
    return done(call);
  }
  ++fc.callback_retries;
  uint64_t delay_ms = options_.callback_backoff_ms;
  for (uint32_t i = 1; i < call.attempts && delay_ms < options_.callback_max_backoff_ms; ++i) delay_ms *= 2;
  delay_ms = std::min(delay_ms, options_.callback_max_backoff_ms);
  FV_INFO("async call %s of %s: callback failed (%s), attempt %u of %u in %llu ms", rec.id.c_str(),
          rec.function.c_str(), why.c_str(), call.attempts + 1, options_.callback_attempts,
          static_cast<unsigned long long>(delay_ms));
  call.state = Call::State::backoff;
  timers_.start(call.retry_timer, monotonic_ns() + delay_ms * 1'000'000ull);
}

void AsyncCalls::on_call_retry(io::Timer &t) {
  auto &call = t.owner_as<Call>();
  if (call.owner.shutting_down_) return;
  call.owner.start_callback(call);
}

void AsyncCalls::on_function_retry(io::Timer &t) {
  auto &fc = t.owner_as<FunctionCalls>();
  fc.pool_blocked = false;
  fc.owner->pump(fc);
}

void AsyncCalls::done(Call &call) {
  FunctionCalls &fc = *call.function;
  journal_->append_done(call.record.seq, call.segment);
  ++fc.completed;
  --fc.live;
  memory_bytes_ -= call.footprint;
  timers_.stop(call.retry_timer);
  all_.remove(call);
  delete &call;
  drop_if_unused(fc);
}

void AsyncCalls::drop_if_unused(FunctionCalls &fc) {
  // Counters of a deleted function go with its last call.
  if (fc.live != 0 || pool_.find(fc.name) != nullptr) return;
  timers_.stop(fc.retry_timer);
  functions_.erase(fc.name);
}

void AsyncCalls::begin_shutdown() {
  shutting_down_ = true;
  all_.for_each([&](Call &call) {
    timers_.stop(call.retry_timer);
    call.client.cancel();
  });
  for (auto &[name, fc] : functions_) timers_.stop(fc->retry_timer);
}

bool AsyncCalls::idle() const { return journal_->idle() && callbacks_in_flight_ == 0 && !drain_op_.in_flight; }

}  // namespace faasvisor::async
