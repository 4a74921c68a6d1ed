// A node in a cluster (--store etcd://): other nodes' changes arrive from the shared store's
// watch and are applied here as the node that took them applied them, and the membership
// record says what this node is and how loaded (docs/cluster.md).
#include <unistd.h>

#include "api/json.h"
#include "server/node_impl.h"
#include "util/log.h"

namespace faasvisor {

void NodeImpl::record_put(const store::Record &rec) {
  if (rec.kind == store::kind::scale) {
    auto replicas = decode_scale_record(rec.value);
    if (!replicas || pool->find(rec.key) == nullptr) return;  // the function's record comes first
    pool::PoolError err = pool->scale(rec.key, *replicas);
    if (!err.message.empty()) FV_WARN("cluster: scale %s: %s", rec.key.c_str(), err.message.c_str());
    return;
  }
  if (rec.kind != store::kind::function) return;
  pool::Function *fn = pool->find(rec.key);
  if (fn != nullptr) {
    FunctionRecord current{fn->generation(), fn->spec().deploy_json, fn->spec().image_json, fn->spec().created_ns};
    if (encode_function_record(current) == rec.value) return;  // already so here
  }
  DeployLimits limits;
  limits.default_queue_limit = options.max_queue_per_function;
  FunctionRecord record;
  bool refill = false;
  auto spec = spec_from_record(rec, limits, record, refill);
  if (!spec) {
    FV_ERROR("cluster: cannot apply function %s from the store: %s", rec.key.c_str(), spec.error().message().c_str());
    return;
  }
  if (refill) {
    // This node has not unpacked the image yet: the function serves here once it has.
    if (fn != nullptr) (void)pool->remove(rec.key);
    refill_image(std::move(*spec), record.generation);
    return;
  }
  pool::PoolError err = fn != nullptr ? pool->update(*spec) : pool->deploy(*spec);
  if (err.outcome != pool::Outcome::ok) {
    FV_ERROR("cluster: cannot apply function %s from the store: %s", rec.key.c_str(), err.message.c_str());
    return;
  }
  pool->find(rec.key)->restore_generation(record.generation);
  FV_INFO("cluster: function %s %s from the store (generation %llu)", rec.key.c_str(),
          fn != nullptr ? "updated" : "deployed", static_cast<unsigned long long>(record.generation));
}

void NodeImpl::record_removed(std::string_view kind, std::string_view key) {
  if (kind != store::kind::function || pool->find(key) == nullptr) return;
  pool::PoolError err = pool->remove(key);
  if (err.outcome == pool::Outcome::ok) FV_INFO("cluster: function %.*s removed through the store", int(key.size()), key.data());
}

std::string NodeImpl::member_json() {
  size_t functions = 0;
  pool->for_each_function([&](const pool::Function &) { ++functions; });
  std::string out;
  api::JsonWriter w(out);
  w.begin_object().field("url", "http://" + advertised).field("pid", static_cast<uint64_t>(getpid()));
  w.field("capacity_bytes", pool->options().memory_budget_bytes).field("reserved_bytes", pool->reserved_bytes());
  w.field("instances", pool->live_instances()).field("in_flight", pool->running_invocations());
  w.field("functions", static_cast<uint64_t>(functions)).end_object();
  return out;
}

}  // namespace faasvisor
