// The embedding API's side of the node (include/faasvisor/node.h, docs/embedding.md):
// in-process invocations, instance events and log subscriptions, and the loop turn that
// run(), run_once() and poll() share.
//
// Nothing an embedder gives a callback runs from inside the pool: results, events and log
// lines are queued as they happen and handed out after the turn's completions have run
// (deliver()), so a callback may call back into the node (invoke again, deploy, stop).
#pragma once

#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <string>

#include "faasvisor/embed.h"
#include "io/ring.h"
#include "model/header.h"
#include "pool/invocation.h"
#include "pool/logbook.h"
#include "pool/observer.h"
#include "util/intrusive_list.h"

namespace faasvisor {

struct NodeImpl;
struct EmbedState;

// One in-process invocation: owns the request the pool's views point into, from invoke()
// until its callback has run.
struct EmbeddedCall final : pool::InvocationSink {
  EmbedState *state = nullptr;
  InvokeRequest request;
  std::vector<Header> headers;
  pool::Invocation inv;
  InvokeCallback done;
  InvokeResult result;
  ListHook done_hook;  // on EmbedState::finished once the pool has answered

  void invocation_done(pool::Invocation &inv, const pool::InvocationResult &r) override;
};

struct LogSubscription final : pool::LogFollower {
  EmbedState *state = nullptr;
  uint64_t id = 0;
  std::string function;
  LogCallback callback;
  pool::LogBook *book = nullptr;  // null once the function is gone

  void log_line(const pool::LogEntry &entry) override;
  void log_ended() override;
};

struct EmbedState final : pool::PoolObserver {
  // Events and log lines waiting for the end of the turn; beyond these, dropped and counted.
  static constexpr size_t kMaxPendingEvents = 65536;
  static constexpr size_t kMaxPendingLogLines = 65536;
  // In-process invocations not yet handed back (queued, running, or answered and waiting for
  // the turn's deliver()): an embedder that invokes without turning the loop is refused here.
  static constexpr uint64_t kMaxLiveCalls = 100000;

  explicit EmbedState(NodeImpl &n) : node(n) {}
  ~EmbedState();
  EmbedState(const EmbedState &) = delete;
  EmbedState &operator=(const EmbedState &) = delete;

  NodeImpl &node;
  // request_stop(): any thread writes the eventfd; a read armed on the ring sees it.
  int stop_fd = -1;
  uint64_t stop_value = 0;  // written by the kernel while stop_op is in flight
  io::Completion stop_op{};
  io::Completion nop_op{};  // armed so that a turn does not wait (poll(), pending callbacks)
  // Node::fd(): an eventfd registered with the ring, made on first use. The ring's own fd is
  // no use to wait on: with IORING_SETUP_DEFER_TASKRUN completions wait as task work that
  // wakes only a task inside io_uring_enter, never a poll(2) on the ring fd; a registered
  // eventfd is signalled when such work is queued.
  int wake_fd = -1;

  IntrusiveList<EmbeddedCall, &EmbeddedCall::done_hook> finished;
  uint64_t live_calls = 0;

  std::map<uint64_t, InstanceEventCallback> event_subscribers;
  std::map<uint64_t, std::unique_ptr<LogSubscription>> log_subscriptions;
  uint64_t next_subscription = 1;
  std::map<uint64_t, std::string> stop_reasons;  // instance id -> why, from stopping to stopped
  std::deque<InstanceEvent> pending_events;
  struct PendingLine {
    uint64_t subscription;
    LogLine line;
    bool ended;
  };
  std::deque<PendingLine> pending_lines;
  uint64_t dropped_events = 0, dropped_lines = 0;

  void instance_changed(const pool::Instance &inst, pool::InstanceChange change, std::string_view reason,
                        bool failed_boot, uint64_t init_ns) override;
  bool has_pending() const { return !finished.empty() || !pending_events.empty() || !pending_lines.empty(); }
  // Runs the callbacks of what the turn produced; returns how many ran.
  int deliver();
  bool idle() const { return !stop_op.in_flight && !nop_op.in_flight; }
};

// Sets up the stop eventfd and the pool observer (Node::create); error text on failure.
std::string start_embedding(NodeImpl &node);
// One turn of the loop: submit, wait for a completion unless `wait` is false (or callbacks
// are pending), run the completions, advance a shutdown, deliver the embedder's callbacks.
int turn_loop(NodeImpl &node, bool wait);
// Before the node is destroyed: stop watching the eventfd (the caller then turns the ring
// until idle()).
void stop_embedding(NodeImpl &node);

}  // namespace faasvisor
