// The node's private state, shared by the connection and the request handlers.
#pragma once

#include <netinet/in.h>
#include <sys/signalfd.h>

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "async/calls.h"
#include "util/json.h"
#include "api/router.h"
#include "api/auth.h"
#include "api/image_roots.h"
#include "faasvisor/node.h"
#include "http/parser.h"
#include "image/store.h"
#include "io/ring.h"
#include "io/timer.h"
#include "pool/scheduler.h"
#include "proc/cgroup.h"
#include "secrets/table.h"
#include "net/network.h"
#include "server/connection.h"
#include "server/records.h"
#include "store/store.h"
#include "util/intrusive_list.h"

namespace faasvisor {

struct NodeImpl;
struct EmbedState;  // server/embed.h
std::string render_metrics(NodeImpl &node);  // server/metrics.cc
// A helper program (faasvisor-stem, -unpack, -adapter) beside the running one, or in
// options.helper_dir (server/node.cc).
std::string helper_path(const NodeOptions &options, const char *name);
// The headers an invocation's answer carries for OpenFaaS (server/openfaas.cc): X-Call-Id and
// X-Start-Time as the function saw them unless it set its own, and X-OpenFaaS-Internal on an
// answer the node made itself.
// FunctionStatus's image (as deployed), createdAt, constraints, requests and
// readOnlyRootFilesystem.
void write_openfaas_fields(JsonWriter &w, const FunctionSpec &spec);
// X-OpenFaaS-Internal for an error the connection makes itself (a malformed, oversized or
// unfinished request) when the request was for /function/.
std::string_view openfaas_error_mark(const http::Request &req);
std::string openfaas_response_headers(const http::Request &req, bool node_error,
                                      const std::vector<std::pair<std::string_view, std::string_view>> &from_function);

// A function restored from the store whose OCI image's rootfs is gone from the image cache
// (wiped, or another --image-cache): the image is resolved again in the background
// (server/state.cc).
// In a cluster the same holds for a function whose uploaded image ("sha256:...") this node
// lacks: the helper fetches it from a peer; until one attempt succeeds the function's
// invocations here answer 503 naming the image (find_invoked), and failed attempts are
// retried, backed off (docs/cluster.md).
struct ImageRefill final : image::Waiter {
  ImageRefill(NodeImpl &n, std::shared_ptr<FunctionSpec> s, uint64_t gen);
  ~ImageRefill();
  void image_ready(Result<image::Resolved> &result, bool image_fault) override;
  Status start();
  static void on_retry(io::Timer &t);
  NodeImpl &node;
  std::shared_ptr<FunctionSpec> spec;  // as restored, waiting for its image
  uint64_t generation;
  uint64_t replicas = 0;  // its scale record, if any
  io::Timer retry;        // the next attempt (uploaded images only)
  uint32_t attempts = 0;
  std::string last_error;  // why the last attempt failed, for the 503
};

// NodeImpl hears other nodes' changes through a shared store (server/cluster.cc).
struct NodeImpl final : store::ChangeListener {
  enum class Phase { running, draining, stopping, stopped };

  NodeOptions options;
  std::unique_ptr<io::Ring> ring;
  std::unique_ptr<io::TimerQueue> timers;
  // The embedding API's state (server/embed.h): declared before the pool, so destroyed after
  // it; the pool reports to it until then.
  std::unique_ptr<EmbedState> embed;
  proc::CgroupTree cgroups;
  // Declared before the pool: destroyed after it, once no instance holds a namespace.
  std::unique_ptr<net::Network> network;  // faasvisor.network=egress (net/network.h)
  std::unique_ptr<pool::Pool> pool;
  std::unique_ptr<image::Store> images;
  std::unique_ptr<store::Store> state;  // durable records (--state-dir); MemoryStore for "none"
  secrets::SecretTable secret_table;     // what is durable in `state`; read by backends at launch
  std::unique_ptr<async::AsyncCalls> async;  // POST /async-function (async/calls.h)
  std::vector<std::unique_ptr<ImageRefill>> refills;  // each frees itself when its image is back
  http::Limits http_limits;
  std::optional<api::BasicAuthCredentials> basic_auth;  // set: /system/* needs it (server/node.cc)
  api::ImageRoots image_roots;
  std::string node_name;
  std::string bound_address;
  std::string advertised;  // --advertise, else bound_address: the membership's url and name
  uint64_t started_ns = 0;

  int listen_fd = -1;
  io::Completion accept_op{};
  io::Timer accept_retry_timer;  // after an accept error such as EMFILE: wait, then re-arm
  bool accept_failing = false;    // warned about it already
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
  // False (and the request answered 401) if the route needs credentials the request lacks.
  bool authorized(Connection &conn, const http::Request &request);
  // Whether an upload's head carries what authorized() will accept (checked before its body).
  bool upload_allowed(const http::Request &head) const;
  void handle_images(Connection &conn, const api::Route &route);
  void handle_logs(Connection &conn, http::Request &request);  // server/logs.cc
  // The node's defaults for what a deployment leaves out (its flags).
  DeployLimits deploy_limits() const;
  void handle_async(Connection &conn, http::Request &request, std::string_view function,
                    std::string_view subpath);
  void write_node_facts(JsonWriter &w);                    // server/handlers.cc
  // OpenFaaS (server/openfaas.cc). The two that can refuse answer the request and return
  // false / nullptr when they do.
  void handle_info(Connection &conn, http::Request &request);
  void handle_namespaces(Connection &conn, api::Route &route);
  bool check_query_namespace(Connection &conn, http::Request &request);
  // createdAt: now for a new function, the first deploy's for an update.
  void stamp_created(FunctionSpec &spec);
  pool::Function *find_invoked(Connection &conn, std::string_view full_name);
  void prepare_invocation(http::Request &request, pool::Invocation &invocation, const pool::Function &fn);
  // Deploys (POST) or updates (PUT) a parsed spec; an OCI image is resolved first, off the
  // loop, and the request answered when that is done (server/handlers.cc).
  void deploy(Connection &conn, std::shared_ptr<FunctionSpec> spec, bool update);
  void image_resolved(Connection &conn, std::shared_ptr<FunctionSpec> spec, bool update,
                      Result<image::Resolved> &image, bool image_fault);

  // /system/secrets (server/secrets_api.cc).
  void list_secrets(Connection &conn);
  void change_secret(Connection &conn, http::Request &request, secrets::Change change);
  void secret_stored(const std::string &name, secrets::Change change, std::string &value,
                     const Status &stored);
  void restore_secrets(const std::vector<const store::Record *> &records);  // from restore_state
  // The durable store's side of the API (server/state.cc). Each answers the request once
  // the change is durable.
  bool state_has_room(Connection &conn);  // false: answered 503, change nothing
  void persist_function(Connection &conn, const std::string &name, std::string reply_body);
  void persist_removal(Connection &conn, const std::string &name);
  void persist_scale(Connection &conn, std::string_view name, uint64_t replicas, std::string reply_body);
  // At start, before the node serves: every function and scale target comes back.
  Status restore_state();
  enum class Restored { now, later, failed };  // later: once its image is unpacked again
  Restored restore_function(const store::Record &rec, const DeployLimits &limits);
  Result<std::shared_ptr<FunctionSpec>> spec_from_record(const store::Record &rec, const DeployLimits &limits,
                                                         FunctionRecord &record, bool &refill);
  // Changes another node made to the shared store (--store etcd://), applied here as that
  // node applied them (server/cluster.cc).
  void record_put(const store::Record &rec) override;
  void record_removed(std::string_view kind, std::string_view key) override;
  // This node's membership record: its address, memory budget and load.
  std::string member_json();
  void apply_remote_secret(const std::string &name, const std::string *value);  // null: deleted
  void restore_scale(const store::Record &rec, bool has_function_record);
  void refill_image(std::shared_ptr<FunctionSpec> spec, uint64_t generation);
  // The function waiting for its image here, if any; dropped when its record changes or goes.
  ImageRefill *find_refill(std::string_view name);
  void drop_refill(std::string_view name);

  void begin_shutdown();
  friend std::string render_metrics(NodeImpl &node);
  void step_shutdown();
  void connection_closed(Connection &conn);
};

}  // namespace faasvisor
