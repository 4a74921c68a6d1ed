// The node's private state, shared by the connection and the request handlers.
#pragma once

#include <netinet/in.h>
#include <sys/signalfd.h>

#include <memory>
#include <string>

#include "async/calls.h"
#include "faasvisor/node.h"
#include "http/parser.h"
#include "image/store.h"
#include "io/ring.h"
#include "io/timer.h"
#include "pool/scheduler.h"
#include "proc/cgroup.h"
#include "server/connection.h"
#include "store/store.h"
#include "util/intrusive_list.h"

namespace faasvisor {

struct NodeImpl;
std::string render_metrics(NodeImpl &node);  // server/metrics.cc

struct NodeImpl {
  enum class Phase { running, draining, stopping, stopped };

  NodeOptions options;
  std::unique_ptr<io::Ring> ring;
  std::unique_ptr<io::TimerQueue> timers;
  proc::CgroupTree cgroups;
  std::unique_ptr<pool::Pool> pool;
  std::unique_ptr<image::Store> images;
  std::unique_ptr<store::Store> state;  // durable records (--state-dir); MemoryStore for "none"
  std::unique_ptr<async::AsyncCalls> async;  // POST /async-function (async/calls.h)
  http::Limits http_limits;
  std::string node_name;
  std::string bound_address;
  uint64_t started_ns = 0;

  int listen_fd = -1;
  io::Completion accept_op{};
  int signal_fd = -1;
  io::Completion signal_op{};
  signalfd_siginfo signal_info{};  // written by the kernel while signal_op is in flight
  io::Timer shutdown_timer;

  IntrusiveList<Connection, &Connection::node_hook> connections;
  uint64_t connections_accepted = 0;
  uint64_t connections_refused = 0;
  Phase phase = Phase::running;
  bool final_deadline_armed = false;
  static constexpr uint64_t kFinalFlushNs = 1'000'000'000;
  int exit_code = 0;

  // Request handling (server/handlers.cc): answers through conn.respond*/invoke.
  void handle(Connection &conn, http::Request &request, pool::Invocation &invocation);
  void handle_logs(Connection &conn, http::Request &request);  // server/logs.cc
  // The node's defaults for what a deployment leaves out (its flags).
  DeployLimits deploy_limits() const;
  void handle_async(Connection &conn, http::Request &request, std::string_view function,
                    std::string_view subpath);
  // Deploys (POST) or updates (PUT) a parsed spec; an OCI image is resolved first, off the
  // loop, and the request answered when that is done (server/handlers.cc).
  void deploy(Connection &conn, std::shared_ptr<FunctionSpec> spec, bool update);
  void image_resolved(Connection &conn, std::shared_ptr<FunctionSpec> spec, bool update,
                      Result<image::Resolved> &image, bool image_fault);

  // The durable store's side of the API (server/state.cc). Each answers the request once
  // the change is durable.
  bool state_has_room(Connection &conn);  // false: answered 503, change nothing
  void persist_function(Connection &conn, const std::string &name, std::string reply_body);
  void persist_removal(Connection &conn, const std::string &name);
  void persist_scale(Connection &conn, std::string_view name, uint64_t replicas, std::string reply_body);
  // At start, before the node serves: every function and scale target comes back.
  Status restore_state();

  void begin_shutdown();
  friend std::string render_metrics(NodeImpl &node);
  void step_shutdown();
  void connection_closed(Connection &conn);
};

}  // namespace faasvisor
