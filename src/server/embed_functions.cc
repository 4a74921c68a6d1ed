// The embedding API's function registry and statistics (include/faasvisor/node.h): a
// FunctionConfig becomes the deploy body the HTTP API takes, so both are checked by the
// same parser and kept by the store in the same record.
#include <cassert>

#include "api/deploy.h"
#include "util/json.h"
#include "server/embed.h"
#include "image/layout.h"
#include "image/store.h"
#include "pool/function.h"
#include "server/node_impl.h"
#include "server/records.h"
#include "util/log.h"

namespace faasvisor {
namespace {

// As the HTTP API answers a pool outcome (server/handlers.cc).
int status_of(pool::Outcome outcome) {
  switch (outcome) {
    case pool::Outcome::ok: return 0;
    case pool::Outcome::exists: return 409;
    case pool::Outcome::not_found: return 404;
    case pool::Outcome::bad_backend: return 400;
  }
  return 500;
}

void write_map(JsonWriter &w, std::string_view key, const std::vector<std::pair<std::string, std::string>> &pairs,
               const std::vector<std::pair<std::string, std::string>> &extra = {}) {
  if (pairs.empty() && extra.empty()) return;
  w.key(key).begin_object();
  for (const auto &[k, v] : pairs) w.field(k, v);
  for (const auto &[k, v] : extra) w.field(k, v);
  w.end_object();
}

std::string deploy_body(const FunctionConfig &c) {
  std::string body;
  JsonWriter w(body);
  w.begin_object().field("service", c.name).field("image", c.image);
  if (!c.command.empty()) w.field("envProcess", c.command);
  write_map(w, "envVars", c.env);
  if (!c.memory.empty() || !c.cpu.empty()) {
    w.key("limits").begin_object();
    if (!c.memory.empty()) w.field("memory", c.memory);
    if (!c.cpu.empty()) w.field("cpu", c.cpu);
    w.end_object();
  }
  std::vector<std::pair<std::string, std::string>> scale;
  if (c.min_instances > 0) scale.emplace_back("com.openfaas.scale.min", std::to_string(c.min_instances));
  if (c.max_instances > 0) scale.emplace_back("com.openfaas.scale.max", std::to_string(c.max_instances));
  write_map(w, "labels", c.labels, scale);
  write_map(w, "annotations", c.annotations);
  if (!c.secrets.empty()) {
    w.key("secrets").begin_array();
    for (const std::string &s : c.secrets) w.string(s);
    w.end_array();
  }
  w.end_object();
  return body;
}

// For changes nobody waits on: the API call has returned already.
store::Done log_failure(std::string what) {
  return [what = std::move(what)](Status st) {
    if (!st.ok()) FV_WARN("state: %s: %s", what.c_str(), st.error().message().c_str());
  };
}

ApiError state_refusal(NodeImpl &node) {
  if (std::string why = node.state->unavailable(); !why.empty()) return {503, why};
  if (node.state->full()) return {503, "the node's store has too many changes waiting to be durable; retry"};
  return {};
}

ApiError change_function(NodeImpl &node, const FunctionConfig &config, bool update) {
  if (node.phase != NodeImpl::Phase::running) return {503, "the node is shutting down"};
  std::string body = deploy_body(config);
  auto spec = parse_deploy(body, node.deploy_limits());
  if (!spec) return {spec.error().context == kOutsideImageRoots ? 403 : 400, spec.error().message()};
  FunctionSpec &s = **spec;
  if (image::is_oci_image(s) || image::is_registry_reference(s.image) || image::valid_digest(s.image))
    return {400, "field 'image': the embedding API deploys host directories; an OCI image ('" + s.image +
                     "') is unpacked only by the HTTP API's deploy for now"};
  if (Status st = node.secret_table.check_function(s.secrets); !st.ok()) return {400, st.error().message()};
  if (ApiError e = state_refusal(node); !e.ok()) return e;
  s.deploy_json = body;
  node.stamp_created(s);
  pool::PoolError err = update ? node.pool->update(std::move(*spec)) : node.pool->deploy(std::move(*spec));
  if (err.outcome != pool::Outcome::ok) return {status_of(err.outcome), err.message};
  const pool::Function *fn = node.pool->find(config.name);
  assert(fn != nullptr);
  FunctionRecord record{fn->generation(), fn->spec().deploy_json, fn->spec().image_json, fn->spec().created_ns};
  Status st = node.state->put(store::kind::function, config.name, encode_function_record(record),
                              log_failure("record function " + config.name));
  if (!st.ok()) FV_WARN("state: function %s is deployed but not durable: %s", config.name.c_str(), st.error().message().c_str());
  return {};
}

}  // namespace

ApiError Node::deploy(const FunctionConfig &config) { return change_function(*impl_, config, false); }
ApiError Node::update(const FunctionConfig &config) { return change_function(*impl_, config, true); }

ApiError Node::remove(const std::string &name) {
  NodeImpl &node = *impl_;
  if (!valid_function_name(name)) return {400, "'" + name + "' is not a function name"};
  if (ApiError e = state_refusal(node); !e.ok()) return e;
  pool::PoolError err = node.pool->remove(name);
  if (err.outcome != pool::Outcome::ok) return {status_of(err.outcome), err.message};
  (void)node.state->remove(store::kind::function, name, log_failure("remove function " + name));
  (void)node.state->remove(store::kind::scale, name, log_failure("remove scale record of " + name));
  return {};
}

ApiError Node::scale(const std::string &name, uint64_t replicas) {
  NodeImpl &node = *impl_;
  if (!valid_function_name(name)) return {400, "'" + name + "' is not a function name"};
  if (ApiError e = state_refusal(node); !e.ok()) return e;
  pool::PoolError err = node.pool->scale(name, replicas);
  if (err.outcome != pool::Outcome::ok) return {status_of(err.outcome), err.message};
  if (!err.message.empty()) FV_WARN("scale %s: %s", name.c_str(), err.message.c_str());
  (void)node.state->put(store::kind::scale, name, encode_scale_record(replicas), log_failure("record scale of " + name));
  return {};
}

NodeStats Node::stats() const {
  const NodeImpl &node = *impl_;
  NodeStats out;
  out.instances = node.pool->live_instances();
  out.running_invocations = node.pool->running_invocations();
  out.reserved_bytes = node.pool->reserved_bytes();
  out.memory_budget_bytes = node.pool->options().memory_budget_bytes;
  node.pool->for_each_function([&](const pool::Function &fn) {
    FunctionStats s;
    s.name = fn.name();
    s.invocations = fn.invocation_count;
    s.cold = fn.stats.cold;
    s.warm = fn.stats.warm;
    s.errors = fn.stats.errors;
    s.booting = fn.booting;
    s.idle = fn.warm;
    s.busy = fn.busy;
    s.stopping = fn.stopping;
    s.queued = static_cast<uint32_t>(fn.queue.size());
    stats::SummaryView warm = fn.stats.exec_warm_ms.view();
    s.warm_p50_ms = warm.p50;
    s.warm_p99_ms = warm.p99;
    s.init_p50_ms = fn.stats.init_ms.view().p50;
    out.functions.push_back(std::move(s));
  });
  return out;
}

}  // namespace faasvisor
