// Async invocations (POST /async-function/NAME): accepted once durable in the journal, run
// under the function's normal scheduling, their result POSTed to X-Callback-Url with
// retries (docs/async.md).
//
// A call's life: accepting (its record on its way to disk; the client waits) -> waiting (in
// its function's FIFO) -> running (an Invocation in the pool, at most the function's
// async concurrency at once, so async work cannot take every instance from sync traffic)
// -> calling back (CallbackClient, retried with exponential backoff) -> done (a done record
// in the journal, memory released). A call the pool refuses because the function's own
// queue is full goes back to the head of its FIFO and tries again shortly. Shutdown and
// kill -9 leave calls not done in the journal; the next start runs them again (at least
// once).
//
// Results from the pool are queued and handled on the next loop turn (a NOP), never from
// inside Pool::invoke or an instance's callback (STYLE.md: no re-entrant sinks).
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <string_view>

#include "async/callback.h"
#include "async/journal.h"
#include "async/record.h"
#include "http/parser.h"
#include "io/ring.h"
#include "io/timer.h"
#include "pool/scheduler.h"
#include "util/intrusive_list.h"

namespace faasvisor::async {

struct AsyncOptions {
  uint64_t max_memory_bytes = 256ull << 20;  // requests and results held by live calls, all functions
  uint32_t callback_attempts = 5;            // then the result is dropped, with a log line
  uint64_t callback_backoff_ms = 1000;       // before the 2nd attempt; doubles after each failure
  uint64_t callback_max_backoff_ms = 60'000;
  uint64_t callback_timeout_ms = 10'000;     // connect to response head, per attempt
  uint64_t pool_retry_ms = 100;              // after the pool refused a call (its queue was full)
  uint32_t retry_after_s = 1;                // Retry-After on 429
};

// The connection waiting for its 202.
class AcceptWaiter {
 public:
  virtual void call_accepted(std::string_view call_id) = 0;
  virtual void call_failed(int status, std::string_view message) = 0;

 protected:
  ~AcceptWaiter() = default;
};

class AsyncCalls;
struct FunctionCalls;

struct Call final : pool::InvocationSink, JournalWaiter {
  enum class State { accepting, waiting, running, result, calling_back, backoff };

  explicit Call(AsyncCalls &owner);
  ~Call();
  Call(const Call &) = delete;
  Call &operator=(const Call &) = delete;

  void journal_done(Status status, uint64_t segment) override;
  void invocation_done(pool::Invocation &inv, const pool::InvocationResult &result) override;
  static void on_callback(CallbackClient &client, Result<int> status);

  AsyncCalls &owner;
  CallRecord record;       // owns every byte the Invocation's views point at
  CallbackUrl url;
  bool has_callback = false;
  uint64_t segment = 0;    // the journal segment holding its accept record
  State state = State::accepting;
  AcceptWaiter *waiter = nullptr;
  FunctionCalls *function = nullptr;
  pool::Invocation inv;
  int status = 0;          // the function's (or the node's) answer
  std::string request;     // the callback request, made once the result is in
  uint32_t attempts = 0;   // callback attempts made
  size_t footprint = 0;    // bytes counted against AsyncOptions::max_memory_bytes
  CallbackClient client;
  io::Timer retry_timer;
  ListHook queue_hook;     // its function's waiting FIFO, or the results queue
  ListHook all_hook;
};

// Per function, kept while the function exists or any call of it is live.
struct FunctionCalls {
  IntrusiveList<Call, &Call::queue_hook> waiting;  // oldest first
  uint32_t running = 0;   // in the pool now
  uint32_t live = 0;      // accepted (or being accepted) and not done
  bool pool_blocked = false;  // the pool refused one: wait for retry_timer
  io::Timer retry_timer;
  std::string name;
  AsyncCalls *owner = nullptr;
  // Counters for /metrics.
  uint64_t accepted = 0, completed = 0, refused = 0;
  uint64_t callbacks = 0, callback_retries = 0, callback_dropped = 0;

  FunctionCalls();
  ~FunctionCalls();
};

struct Refusal {
  int status = 0;  // 0: accepted (the waiter hears later)
  std::string message;
  uint32_t retry_after_s = 0;
};

class AsyncCalls {
 public:
  AsyncCalls(io::Ring &ring, io::TimerQueue &timers, pool::Pool &pool, std::unique_ptr<Journal> journal,
             AsyncOptions options);
  ~AsyncCalls();
  AsyncCalls(const AsyncCalls &) = delete;
  AsyncCalls &operator=(const AsyncCalls &) = delete;

  // A refusal is answered at once; otherwise *call is set and `waiter` hears once the call
  // is durable (or could not be made so).
  Refusal accept(AcceptWaiter &waiter, const http::Request &request, std::string_view function,
                 std::string_view subpath, Call **call);
  // The waiter went away (its connection closed): the call goes on without it.
  void forget(Call &call);
  // Queues the calls the journal found pending at start. Call once the functions are back.
  void replay(Replay &replay);

  void begin_shutdown();
  bool idle() const;

  const Journal &journal() const { return *journal_; }
  uint64_t memory_bytes() const { return memory_bytes_; }
  const FunctionCalls *find(std::string_view function) const;
  const AsyncOptions &options() const { return options_; }

  // Used by Call.
  void journaled(Call &call, Status status, uint64_t segment);
  void result_in(Call &call, const pool::InvocationResult &result);
  void callback_over(Call &call, Result<int> status);
  static void on_call_retry(io::Timer &t);

 private:
  static void on_drain(io::Completion &c, int result, uint32_t flags);
  static void on_function_retry(io::Timer &t);
  FunctionCalls &calls_of(std::string_view function);
  void pump(FunctionCalls &fc);
  void run(Call &call, pool::Function &fn);
  void finish_without_pool(Call &call, int status, std::string error);
  void completed(Call &call);
  void start_callback(Call &call);
  void done(Call &call);
  void drop_if_unused(FunctionCalls &fc);
  std::string new_call_id();

  io::Ring &ring_;
  io::TimerQueue &timers_;
  pool::Pool &pool_;
  std::unique_ptr<Journal> journal_;
  AsyncOptions options_;
  std::map<std::string, std::unique_ptr<FunctionCalls>, std::less<>> functions_;
  IntrusiveList<Call, &Call::queue_hook> results_;   // results waiting for the drain
  IntrusiveList<Call, &Call::all_hook> all_;         // every live call
  io::Completion drain_op_{};
  uint64_t memory_bytes_ = 0;
  uint64_t callbacks_in_flight_ = 0;
  bool shutting_down_ = false;
  std::mt19937_64 random_;
};

}  // namespace faasvisor::async
