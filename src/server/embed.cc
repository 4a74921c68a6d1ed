// In-process invocations, instance events, log subscriptions and the loop turn (embed.h).
#include "server/embed.h"

#include <linux/io_uring.h>
#include <sys/eventfd.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cassert>
#include <cerrno>
#include <cstring>

#include "util/json.h"
#include "pool/function.h"
#include "pool/instance.h"
#include "server/node_impl.h"
#include "util/clock.h"
#include "util/log.h"

namespace faasvisor {
namespace {

void arm_stop(EmbedState &e) { e.node.ring->read(e.stop_op, e.stop_fd, &e.stop_value, sizeof e.stop_value); }

void on_stop(io::Completion &c, int result, uint32_t) {
  auto &e = c.owner_as<EmbedState>();
  if (result == static_cast<int>(sizeof e.stop_value)) {
    FV_INFO("stop requested: shutting down");
    e.node.begin_shutdown();
  } else if (result < 0 && result != -EINTR && result != -EAGAIN) {
    // A read that failed fails again: re-arming would spin the loop.
    if (result != -ECANCELED) FV_ERROR("reading the stop eventfd: %s: request_stop() no longer stops the node", std::strerror(-result));
    return;
  }
  if (e.node.phase != NodeImpl::Phase::stopped) arm_stop(e);
}

void on_nop(io::Completion &, int, uint32_t) {}

InstanceEvent::Kind kind_of(pool::InstanceChange change) {
  switch (change) {
    case pool::InstanceChange::started: return InstanceEvent::Kind::started;
    case pool::InstanceChange::ready: return InstanceEvent::Kind::ready;
    case pool::InstanceChange::stopping: return InstanceEvent::Kind::stopping;
    case pool::InstanceChange::stopped: return InstanceEvent::Kind::stopped;
  }
  return InstanceEvent::Kind::stopped;
}

}  // namespace

const char *to_string(InstanceEvent::Kind kind) {
  switch (kind) {
    case InstanceEvent::Kind::started: return "started";
    case InstanceEvent::Kind::ready: return "ready";
    case InstanceEvent::Kind::stopping: return "stopping";
    case InstanceEvent::Kind::stopped: return "stopped";
  }
  return "?";
}

void EmbeddedCall::invocation_done(pool::Invocation &, const pool::InvocationResult &r) {
  // The pool's views (headers, body) are valid only during this call: copied.
  result.status = r.status;
  result.error = r.error;
  if (r.error.empty()) {
    result.body.assign(r.body);
  } else {
    result.body.clear();
    JsonWriter w(result.body);  // as the HTTP API answers it
    w.begin_object().field("error", r.error).end_object();
  }
  result.headers.clear();
  for (const auto &[name, value] : r.headers) result.headers.push_back({std::string(name), std::string(value)});
  result.cold = r.cold;
  result.instance_id = r.instance_id;
  result.duration_ns = r.duration_ns;
  state->finished.push_back(*this);
}

void LogSubscription::log_line(const pool::LogEntry &entry) {
  if (state->pending_lines.size() >= EmbedState::kMaxPendingLogLines) {
    ++state->dropped_lines;
    return;
  }
  state->pending_lines.push_back({id, LogLine{function, entry.instance, entry.realtime_ns, entry.text}, false});
}

void LogSubscription::log_ended() {
  book = nullptr;
  // Always queued, past the limit too: the subscriber must learn that it ended.
  state->pending_lines.push_back({id, LogLine{function, {}, realtime_ns(), {}}, true});
}

EmbedState::~EmbedState() {
  for (auto &[id, sub] : log_subscriptions)
    if (sub->book != nullptr) sub->book->unfollow(*sub);
  while (EmbeddedCall *call = finished.pop_front()) delete call;
  if (stop_fd >= 0) ::close(stop_fd);
  if (wake_fd >= 0) ::close(wake_fd);  // the ring keeps its own reference until it goes
}

void EmbedState::instance_changed(const pool::Instance &inst, pool::InstanceChange change, std::string_view reason,
                                  bool failed_boot, uint64_t init_ns) {
  // The reason is known at stopping; stopped repeats it.
  std::string why(reason);
  if (change == pool::InstanceChange::stopping) stop_reasons[inst.id()] = why;
  if (change == pool::InstanceChange::stopped) {
    if (auto it = stop_reasons.find(inst.id()); it != stop_reasons.end()) {
      why = std::move(it->second);
      stop_reasons.erase(it);
    }
  }
  if (event_subscribers.empty()) return;
  if (pending_events.size() >= kMaxPendingEvents) {
    ++dropped_events;
    return;
  }
  InstanceEvent event;
  event.kind = kind_of(change);
  event.function = inst.function().name();
  event.instance_id = inst.id();
  event.reason = std::move(why);
  event.failed_boot = failed_boot;
  event.init_ns = init_ns;
  pending_events.push_back(std::move(event));
}

int EmbedState::deliver() {
  // Every turn of the daemon's loop comes here: nothing to do must cost nothing (an empty
  // std::deque allocates).
  if (!has_pending()) return 0;
  int ran = 0;
  // Each queue is taken whole: a callback that causes more (an invoke answered at once)
  // adds to the next round, not to this one.
  IntrusiveList<EmbeddedCall, &EmbeddedCall::done_hook> calls;
  while (EmbeddedCall *call = finished.pop_front()) calls.push_back(*call);
  while (EmbeddedCall *call = calls.pop_front()) {
    std::unique_ptr<EmbeddedCall> owned(call);
    --live_calls;
    owned->done(owned->result);
    ++ran;
  }
  std::deque<InstanceEvent> events;
  events.swap(pending_events);
  for (const InstanceEvent &event : events) {
    // A callback may unsubscribe (itself or another): walk by id.
    for (uint64_t id = 0;;) {
      auto it = event_subscribers.upper_bound(id);
      if (it == event_subscribers.end()) break;
      id = it->first;
      InstanceEventCallback callback = it->second;  // survives its own unsubscription
      callback(event);
      ++ran;
    }
  }
  std::deque<PendingLine> lines;
  lines.swap(pending_lines);
  for (PendingLine &p : lines) {
    auto it = log_subscriptions.find(p.subscription);
    if (it == log_subscriptions.end()) continue;  // unsubscribed since
    LogCallback callback = it->second->callback;
    if (p.ended) log_subscriptions.erase(it);
    callback(p.line, p.ended);
    ++ran;
  }
  if (dropped_events + dropped_lines > 0) {
    FV_WARN("embedding: %llu instance events and %llu log lines dropped: callbacks fell behind",
            static_cast<unsigned long long>(dropped_events), static_cast<unsigned long long>(dropped_lines));
    dropped_events = dropped_lines = 0;
  }
  return ran;
}

std::string start_embedding(NodeImpl &node) {
  node.embed = std::make_unique<EmbedState>(node);
  EmbedState &e = *node.embed;
  e.stop_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (e.stop_fd < 0) return std::string("cannot create the stop eventfd: ") + std::strerror(errno);
  e.stop_op.owner = &e;
  e.stop_op.callback = &on_stop;
  e.nop_op.owner = &e;
  e.nop_op.callback = &on_nop;
  arm_stop(e);
  node.pool->set_observer(&e);
  return {};
}

int turn_loop(NodeImpl &node, bool wait) {
  EmbedState &e = *node.embed;
  if (e.wake_fd >= 0) {
    // Reset before the turn: whatever completes after this signals it again.
    uint64_t count = 0;
    (void)!::read(e.wake_fd, &count, sizeof count);
  }
  // A NOP completes at once, so the turn submits and reaps without waiting.
  if ((!wait || e.has_pending()) && !e.nop_op.in_flight) node.ring->nop(e.nop_op);
  node.timers->sync_kernel_timeout();
  int handled = node.ring->run_once();
  if (node.phase != NodeImpl::Phase::running) node.step_shutdown();
  return handled + e.deliver();
}

void stop_embedding(NodeImpl &node) {
  EmbedState &e = *node.embed;
  if (e.stop_op.in_flight) node.ring->cancel(e.stop_op);
  // Invocations the shutdown answered are handed out: each callback runs exactly once.
  e.deliver();
}

// ---- Node's embedding methods -------------------------------------------------------------

int Node::run_once() { return turn_loop(*impl_, true); }
int Node::poll() { return turn_loop(*impl_, false); }
int Node::fd() {
  EmbedState &e = *impl_->embed;
  if (e.wake_fd >= 0) return e.wake_fd;
  int efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (efd < 0) return -1;
  // liburing 2.3's io_uring_register_eventfd needs the ring's struct, private to io::Ring;
  // the system call needs only its fd.
  if (syscall(__NR_io_uring_register, impl_->ring->fd(), IORING_REGISTER_EVENTFD, &efd, 1) < 0) {
    FV_ERROR("registering an eventfd with the ring: %s", std::strerror(errno));
    ::close(efd);
    return -1;
  }
  e.wake_fd = efd;
  return efd;
}

bool Node::stopped() const { return impl_->phase == NodeImpl::Phase::stopped; }

void Node::request_stop() {
  uint64_t one = 1;
  // Thread-safe and async-signal-safe; EAGAIN only when the counter is full (already asked).
  (void)!::write(impl_->embed->stop_fd, &one, sizeof one);
}

ApiError Node::invoke(const std::string &function, InvokeRequest request, InvokeCallback done) {
  NodeImpl &node = *impl_;
  if (!done) return {400, "invoke: no callback given"};
  pool::Function *fn = node.pool->find(function);
  if (fn == nullptr) return {404, "function '" + function + "' not found"};
  if (request.path.empty() || request.path[0] != '/')
    return {400, "invoke: path must start with '/', not '" + request.path + "'"};
  if (request.method.empty()) return {400, "invoke: method is empty"};
  if (request.body.size() > node.options.max_body_bytes)
    return {413, "invoke: body of " + std::to_string(request.body.size()) + " bytes is over the node's limit of " +
                     std::to_string(node.options.max_body_bytes)};
  if (node.embed->live_calls >= EmbedState::kMaxLiveCalls)
    return {429, "invoke: " + std::to_string(node.embed->live_calls) +
                     " in-process invocations are not handed back yet; turn the loop (poll/run_once) first"};
  auto call = std::make_unique<EmbeddedCall>();
  call->state = node.embed.get();
  call->request = std::move(request);
  call->done = std::move(done);
  for (InvokeHeader &h : call->request.headers) call->headers.push_back({std::move(h.name), std::move(h.value)});
  call->request.headers.clear();
  pool::Invocation &inv = call->inv;
  inv.method = call->request.method;
  inv.path = call->request.path;
  inv.query = call->request.query;
  inv.headers = call->headers;
  inv.body = call->request.body;
  inv.arrival_ns = monotonic_ns();
  inv.sink = call.get();
  ++node.embed->live_calls;
  // The pool answers through invocation_done (perhaps at once): the call is then on
  // `finished` until the turn's deliver() runs its callback and frees it.
  node.pool->invoke(*fn, call.release()->inv);
  return {};
}

uint64_t Node::subscribe_events(InstanceEventCallback callback) {
  EmbedState &e = *impl_->embed;
  if (!callback) return 0;
  uint64_t id = e.next_subscription++;
  e.event_subscribers.emplace(id, std::move(callback));
  return id;
}

void Node::unsubscribe_events(uint64_t id) { impl_->embed->event_subscribers.erase(id); }

uint64_t Node::subscribe_logs(const std::string &function, LogCallback callback, ApiError *error) {
  EmbedState &e = *impl_->embed;
  ApiError ignored;
  if (error == nullptr) error = &ignored;
  if (!callback) {
    *error = {400, "subscribe_logs: no callback given"};
    return 0;
  }
  pool::Function *fn = impl_->pool->find(function);
  if (fn == nullptr) {
    *error = {404, "function '" + function + "' not found"};
    return 0;
  }
  auto sub = std::make_unique<LogSubscription>();
  sub->state = &e;
  sub->id = e.next_subscription++;
  sub->function = function;
  sub->callback = std::move(callback);
  sub->book = &fn->logs;
  fn->logs.follow(*sub);
  uint64_t id = sub->id;
  e.log_subscriptions.emplace(id, std::move(sub));
  *error = {};
  return id;
}

void Node::unsubscribe_logs(uint64_t id) {
  EmbedState &e = *impl_->embed;
  auto it = e.log_subscriptions.find(id);
  if (it == e.log_subscriptions.end()) return;
  if (it->second->book != nullptr) it->second->book->unfollow(*it->second);
  e.log_subscriptions.erase(it);
}

}  // namespace faasvisor
