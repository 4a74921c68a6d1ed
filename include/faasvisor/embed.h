// The embedding API's plain types (docs/embedding.md): what a program that embeds a Node
// passes in (a function's configuration, an invocation) and gets back (results, statistics,
// instance events, log lines). Standard C++ only: nothing here needs a header from src/.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <utility>
#include <vector>

namespace faasvisor {

// The outcome of an API call: status 0 is success; otherwise the HTTP status the same call
// on the HTTP API would answer (400 bad input, 404 no such function, 409 exists, 503 the node
// cannot take it now) and a message that says what was wrong.
struct ApiError {
  int status = 0;
  std::string message;
  bool ok() const { return status == 0; }
};

// A function, as POST /system/functions takes it (docs/api.md); every field is checked as
// that route checks it. Empty or zero fields take the node's defaults.
struct FunctionConfig {
  std::string name;     // [a-z0-9-], as the HTTP API
  std::string image;    // a host directory holding the program (process backend)
  std::string command;  // envProcess, run in `image`: "./echo"
  std::vector<std::pair<std::string, std::string>> env;
  std::string memory;  // limits.memory, e.g. "128Mi"
  std::string cpu;     // limits.cpu, e.g. "1" or "500m"
  uint32_t min_instances = 0;  // com.openfaas.scale.min
  uint32_t max_instances = 0;  // com.openfaas.scale.max; 0: the node's default
  // Any other setting as its annotation (faasvisor.backend, faasvisor.queue,
  // faasvisor.timeout, faasvisor.keepalive, ...) or label.
  std::vector<std::pair<std::string, std::string>> annotations;
  std::vector<std::pair<std::string, std::string>> labels;
  std::vector<std::string> secrets;
};

struct InvokeHeader {
  std::string name;
  std::string value;
};

// One in-process invocation: what an HTTP request to /function/NAME/PATH would carry.
struct InvokeRequest {
  std::string method = "POST";
  std::string path = "/";  // after /function/NAME, starts with '/'
  std::string query;       // without '?'
  std::vector<InvokeHeader> headers;
  std::string body;
};

struct InvokeResult {
  int status = 0;      // the function's status, or the node's (429 queue full, 502, 503, 504)
  std::string body;    // the function's body, or {"error": "..."} made by the node
  std::vector<InvokeHeader> headers;  // the function's headers
  std::string error;   // non-empty: the node answered instead of the function
  bool cold = false;   // an instance booted for it
  uint64_t instance_id = 0;
  uint64_t duration_ns = 0;  // arrival to answer, as the node's statistics count it
};
// Called exactly once on the loop thread, possibly before invoke() returns (the queue is
// full, the node stops) or later from run_once()/poll().
using InvokeCallback = std::function<void(const InvokeResult &)>;

struct FunctionStats {
  std::string name;
  uint64_t invocations = 0;  // accepted (queued or run)
  uint64_t cold = 0, warm = 0;  // answered by the function, after a cold start or warm
  uint64_t errors = 0;          // answered 5xx or 429
  uint32_t booting = 0, idle = 0, busy = 0, stopping = 0;  // instances now
  uint32_t queued = 0;  // waiting for an instance
  double warm_p50_ms = 0, warm_p99_ms = 0;  // execution time, arrival to answer
  double init_p50_ms = 0;                   // instance start to READY
};

struct NodeStats {
  uint64_t instances = 0;               // live, every function
  uint64_t running_invocations = 0;     // queued or running
  uint64_t reserved_bytes = 0;          // memory limits of live instances
  uint64_t memory_budget_bytes = 0;
  std::vector<FunctionStats> functions;
};

struct InstanceEvent {
  enum class Kind { started, ready, stopping, stopped };
  Kind kind = Kind::started;
  std::string function;
  uint64_t instance_id = 0;
  // stopping and stopped: why ("idle", "keep-alive: ...", "crashed: ...", "node shutting
  // down"); ready: empty.
  std::string reason;
  bool failed_boot = false;  // stopping/stopped before it was ever ready
  uint64_t init_ns = 0;      // ready: start to READY
};
using InstanceEventCallback = std::function<void(const InstanceEvent &)>;

struct LogLine {
  std::string function;
  std::string instance;  // the instance's name in GET /system/logs
  uint64_t realtime_ns = 0;
  std::string text;
};
// ended: the function was deleted (no more lines come; the subscription is gone).
using LogCallback = std::function<void(const LogLine &line, bool ended)>;

const char *to_string(InstanceEvent::Kind kind);

}  // namespace faasvisor
