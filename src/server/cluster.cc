// A node in a cluster (--store etcd://): other nodes' changes arrive from the shared store's
// watch and are applied here as the node that took them applied them, and the membership
// record says what this node is and how loaded (docs/cluster.md).
#include <unistd.h>

#include <algorithm>

#include "faasvisor/frame.h"
#include "secrets/request.h"

#include "util/json.h"
#include "server/node_impl.h"
#include "util/log.h"

namespace faasvisor {

void NodeImpl::record_put(const store::Record &rec) {
  if (rec.kind == store::kind::secret) return apply_remote_secret(rec.key, &rec.value);
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
  DeployLimits limits = deploy_limits();  // this node's image roots too, not the sender's
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
  drop_refill(rec.key);  // an older record's image wait: this one has its image here
  pool::PoolError err = fn != nullptr ? pool->update(*spec) : pool->deploy(*spec);
  if (err.outcome != pool::Outcome::ok) {
    FV_ERROR("cluster: cannot apply function %s from the store: %s", rec.key.c_str(), err.message.c_str());
    return;
  }
  pool->find(rec.key)->restore_generation(record.generation);
  FV_INFO("cluster: function %s %s from the store (generation %llu)", rec.key.c_str(),
          fn != nullptr ? "updated" : "deployed", static_cast<unsigned long long>(record.generation));
}

// A secret another node stored (value) or deleted (null). As on the node that took the
// change: it enters the table, and an update retires the warm instances of the functions
// that use it. Names only in the log, never values.
void NodeImpl::apply_remote_secret(const std::string &name, const std::string *value) {
  if (!secrets::valid_secret_name(name) || (value != nullptr && value->size() > FV_SECRET_VALUE_MAX)) {
    FV_WARN("cluster: skipping secret record '%s' from the store (bad name or value too large)", name.c_str());
    return;
  }
  const std::string *current = secret_table.find(name);
  if (value == nullptr) {
    if (current == nullptr) return;
    secret_table.erase(name);
    FV_INFO("cluster: secret %s deleted through the store", name.c_str());
    return;
  }
  if (current != nullptr && *current == *value) return;
  bool update = current != nullptr;
  secret_table.set(name, *value);
  FV_INFO("cluster: secret %s %s through the store", name.c_str(), update ? "updated" : "created");
  if (!update) return;
  std::vector<std::shared_ptr<FunctionSpec>> users;  // updated after the walk, not during it
  pool->for_each_function([&](const pool::Function &fn) {
    const std::vector<std::string> &names = fn.spec().secrets;
    if (std::find(names.begin(), names.end(), name) != names.end())
      users.push_back(std::make_shared<FunctionSpec>(fn.spec()));
  });
  for (auto &spec : users) pool->update(std::move(spec));
}

void NodeImpl::record_removed(std::string_view kind, std::string_view key) {
  if (kind == store::kind::secret) return apply_remote_secret(std::string(key), nullptr);
  if (kind == store::kind::function) drop_refill(key);  // it was waiting for its image here
  if (kind != store::kind::function || pool->find(key) == nullptr) return;
  pool::PoolError err = pool->remove(key);
  if (err.outcome == pool::Outcome::ok) FV_INFO("cluster: function %.*s removed through the store", int(key.size()), key.data());
}

std::string NodeImpl::member_json() {
  size_t functions = 0;
  pool->for_each_function([&](const pool::Function &) { ++functions; });
  std::string out;
  JsonWriter w(out);
  w.begin_object().field("url", "http://" + advertised).field("pid", static_cast<uint64_t>(getpid()));
  w.field("capacity_bytes", pool->options().memory_budget_bytes).field("reserved_bytes", pool->reserved_bytes());
  w.field("instances", pool->live_instances()).field("in_flight", pool->running_invocations());
  w.field("functions", static_cast<uint64_t>(functions)).end_object();
  return out;
}

}  // namespace faasvisor
