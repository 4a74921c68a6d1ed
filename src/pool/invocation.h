// One invocation of a function: owned by the HTTP connection that received it, lent to the
// pool until it completes. The request parts are views into the connection's parsed request
// and stay valid until the sink is told the result.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "io/timer.h"
#include "model/header.h"
#include "util/intrusive_list.h"

namespace faasvisor::pool {

class Function;
class Instance;
struct Invocation;

struct InvocationResult {
  int status = 200;
  // Response headers and body from the function (views into the instance's buffer, valid
  // only during the sink call), or an error message made by the node.
  std::vector<std::pair<std::string_view, std::string_view>> headers;
  std::string_view body;
  std::string error;  // non-empty: the node answers {"error": error} with `status`
  bool cold = false;
  uint64_t instance_id = 0;
  uint32_t retry_after_s = 0;  // for 429/503
  uint64_t duration_ns = 0;    // arrival to this result (the node's execution time)
};

class InvocationSink {
 public:
  virtual void invocation_done(Invocation &inv, const InvocationResult &result) = 0;

 protected:
  ~InvocationSink() = default;
};

struct Invocation {
  // answered: the result waits in the pool's completed queue for its sink.
  enum class State { idle, queued, running, answered };

  // Request, as views into the connection's request.
  std::string_view method;
  std::string_view path;  // after /function/NAME, starts with '/'
  std::string_view query;
  std::span<const Header> headers;
  std::string_view body;

  uint64_t arrival_ns = 0;
  InvocationSink *sink = nullptr;

  // Pool's bookkeeping.
  State state = State::idle;
  bool counted = false;  // accepted, and seen by the keep-alive policy
  Function *function = nullptr;
  Instance *instance = nullptr;
  ListHook queue_hook;
  io::Timer deadline;  // from arrival: queue wait plus execution
};

}  // namespace faasvisor::pool
