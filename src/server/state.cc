// The node's durable state: API changes are answered once the store has them on disk, and at
// start every function comes back from the store before the node serves (docs/store.md).
#include <unistd.h>

#include <algorithm>
#include <cassert>

#include "api/deploy.h"
#include "image/layout.h"
#include "server/node_impl.h"
#include "server/records.h"
#include "util/clock.h"
#include "util/log.h"

namespace faasvisor {
namespace {

// For a change the client does not wait on (the scale record of a deleted function).
store::Done log_failure(std::string what) {
  return [what = std::move(what)](Status st) {
    if (!st.ok()) FV_WARN("state: %s: %s", what.c_str(), st.error().message().c_str());
  };
}

}  // namespace

bool NodeImpl::state_has_room(Connection &conn) {
  if (!state->full()) return true;
  conn.respond_error(503, "the node's store has too many changes waiting to be durable; retry",
                     "Retry-After: 1\r\n");
  return false;
}

void NodeImpl::persist_function(Connection &conn, const std::string &name, std::string reply_body) {
  pool::Function *fn = pool->find(name);
  assert(fn != nullptr);
  FunctionRecord record{fn->generation(), fn->spec().deploy_json, fn->spec().image_json};
  Status st = state->put(store::kind::function, name, encode_function_record(record),
                         conn.durable_reply(202, std::move(reply_body)));
  if (!st.ok())
    conn.respond_error(503, "the change is in effect but could not be made durable: " + st.error().message());
}

void NodeImpl::persist_removal(Connection &conn, const std::string &name) {
  (void)state->remove(store::kind::scale, name, log_failure("remove scale record of " + name));
  Status st = state->remove(store::kind::function, name, conn.durable_reply(202, "{\"status\":\"accepted\"}"));
  if (!st.ok())
    conn.respond_error(503, "the function is deleted but its removal could not be made durable: " +
                                st.error().message());
}

void NodeImpl::persist_scale(Connection &conn, std::string_view name, uint64_t replicas, std::string reply_body) {
  Status st = state->put(store::kind::scale, name, encode_scale_record(replicas),
                         conn.durable_reply(202, std::move(reply_body)));
  if (!st.ok())
    conn.respond_error(503, "the scale is in effect but could not be made durable: " + st.error().message());
}

Status NodeImpl::restore_state() {
  uint64_t start_ns = monotonic_ns();
  auto loaded = state->load_all();
  if (!loaded) return loaded.error();
  DeployLimits limits = deploy_limits();
  size_t functions = 0, failed = 0;
  std::vector<std::pair<std::string, uint64_t>> scales;
  for (store::Record &rec : loaded->records) {
    if (rec.kind == store::kind::scale) {
      auto replicas = decode_scale_record(rec.value);
      if (replicas) scales.emplace_back(rec.key, *replicas);
      else FV_WARN("state: skipping scale/%s: %s", rec.key.c_str(), replicas.error().message().c_str());
      continue;
    }
    if (rec.kind != store::kind::function) continue;  // other kinds belong to other subsystems
    auto record = decode_function_record(rec.value);
    Result<std::shared_ptr<FunctionSpec>> spec =
        record ? parse_deploy(record->deploy_json, limits) : Result<std::shared_ptr<FunctionSpec>>(record.error());
    if (spec && (*spec)->name != rec.key)
      spec = plain_error("function record", "names '" + (*spec)->name + "'");
    if (spec && !record->image_json.empty()) {
      auto image = image::decode_resolved(record->image_json);
      Status applied = image ? image::apply_image(**spec, *image) : Status(image.error());
      if (!applied.ok()) spec = applied.error();
      else if (access(image->rootfs.c_str(), F_OK) != 0)
        FV_WARN("state: function %s: its image's rootfs %s is gone from the cache; deploy it again",
                rec.key.c_str(), image->rootfs.c_str());
    }
    if (!spec) {
      // A record this node cannot use (damaged, or its image directory is gone): the node
      // starts without the function; a new deploy of the name replaces the record.
      FV_ERROR("state: cannot restore function %s: %s", rec.key.c_str(), spec.error().message().c_str());
      ++failed;
      continue;
    }
    (*spec)->deploy_json = std::move(record->deploy_json);
    (*spec)->image_json = std::move(record->image_json);
    pool::PoolError err = pool->deploy(*spec);
    if (err.outcome != pool::Outcome::ok) {
      FV_ERROR("state: cannot restore function %s: %s", rec.key.c_str(), err.message.c_str());
      ++failed;
      continue;
    }
    pool->find(rec.key)->restore_generation(record->generation);
    ++functions;
  }
  for (const auto &[name, replicas] : scales) {
    if (pool->find(name) == nullptr) {
      // The function's removal was durable and this record's was not yet: finish it.
      (void)state->remove(store::kind::scale, name, log_failure("remove stale scale record of " + name));
      continue;
    }
    pool::PoolError err = pool->scale(name, replicas);
    if (!err.message.empty()) FV_WARN("state: scale %s: %s", name.c_str(), err.message.c_str());
  }
  FV_INFO("state: restored %zu functions and %zu scale targets from %s in %.1f ms (%zu not restored, %u "
          "corrupt records skipped, %u interrupted writes removed)",
          functions, scales.size(), state->describe().c_str(), static_cast<double>(monotonic_ns() - start_ns) / 1e6,
          failed, loaded->skipped, loaded->temp_removed);
  return {};
}

}  // namespace faasvisor
