// The node's durable state: API changes are answered once the store has them on disk, and at
// start every function comes back from the store before the node serves (docs/store.md).
#include <unistd.h>

#include <algorithm>
#include <cassert>
#include <map>
#include <set>

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
  if (std::string why = state->unavailable(); !why.empty()) {
    conn.respond_error(503, why, "Retry-After: 1\r\n");
    return false;
  }
  if (!state->full()) return true;
  conn.respond_error(503, "the node's store has too many changes waiting to be durable; retry",
                     "Retry-After: 1\r\n");
  return false;
}

void NodeImpl::persist_function(Connection &conn, const std::string &name, std::string reply_body) {
  pool::Function *fn = pool->find(name);
  assert(fn != nullptr);
  FunctionRecord record{fn->generation(), fn->spec().deploy_json, fn->spec().image_json, fn->spec().created_ns};
  Status st = state->put(store::kind::function, name, encode_function_record(record),
                         conn.durable_reply(202, std::move(reply_body)));
  if (!st.ok())
    conn.respond_error(503, "the change is in effect but could not be made durable: " + st.error().message());
}

void NodeImpl::persist_removal(Connection &conn, const std::string &name) {
  Status st = state->remove(store::kind::function, name, conn.durable_reply(202, "{\"status\":\"accepted\"}"));
  if (!st.ok())
    return conn.respond_error(503, "the function is deleted but its removal could not be made durable: " +
                                       st.error().message());
  // Best effort: a scale record left by a crash here is removed at the next start.
  (void)state->remove(store::kind::scale, name, log_failure("remove scale record of " + name));
}

void NodeImpl::persist_scale(Connection &conn, std::string_view name, uint64_t replicas, std::string reply_body) {
  Status st = state->put(store::kind::scale, name, encode_scale_record(replicas),
                         conn.durable_reply(202, std::move(reply_body)));
  if (!st.ok())
    conn.respond_error(503, "the scale is in effect but could not be made durable: " + st.error().message());
}

namespace {
// Attempts to fetch an uploaded image from the peers: 0.5 s, 1 s, 2 s, ... at most 8 s apart.
constexpr uint64_t kRefillRetryNs = 500'000'000, kRefillRetryMaxNs = 8'000'000'000;
}  // namespace

ImageRefill::ImageRefill(NodeImpl &n, std::shared_ptr<FunctionSpec> s, uint64_t gen)
    : node(n), spec(std::move(s)), generation(gen) {
  retry.owner = this;
  retry.callback = &ImageRefill::on_retry;
}

ImageRefill::~ImageRefill() {
  node.images->cancel(*this);
  node.timers->stop(retry);
}

Status ImageRefill::start() { return node.images->resolve(spec->image, *this); }

void ImageRefill::on_retry(io::Timer &t) {
  auto &self = t.owner_as<ImageRefill>();
  if (Status st = self.start(); !st.ok()) {
    Result<image::Resolved> failed = st.error();
    self.image_ready(failed, false);
  }
}

ImageRefill *NodeImpl::find_refill(std::string_view name) {
  for (auto &r : refills)
    if (r->spec->name == name) return r.get();
  return nullptr;
}

void NodeImpl::drop_refill(std::string_view name) {
  refills.erase(std::remove_if(refills.begin(), refills.end(), [&](const auto &r) { return r->spec->name == name; }),
                refills.end());
}

void NodeImpl::refill_image(std::shared_ptr<FunctionSpec> spec, uint64_t generation) {
  // The backend cannot take the function without its rootfs: it comes back once the image is
  // unpacked again (seconds), or fetched from a peer, not before the node serves.
  FV_WARN("state: function %s: its image's rootfs %s is not in the cache: %s %s", spec->name.c_str(),
          spec->rootfs.c_str(), image::valid_digest(spec->image) ? "fetching from a peer" : "unpacking again",
          spec->image.c_str());
  drop_refill(spec->name);  // an older record's wait
  auto waiter = std::make_unique<ImageRefill>(*this, std::move(spec), generation);
  if (Status st = waiter->start(); !st.ok()) {
    if (!image::valid_digest(waiter->spec->image)) {
      FV_ERROR("state: function %s not restored: cannot unpack its image again (%s)", waiter->spec->name.c_str(),
               st.error().message().c_str());
      return;
    }
    waiter->last_error = st.error().message();
    timers->start(waiter->retry, monotonic_ns() + kRefillRetryNs);
  }
  refills.push_back(std::move(waiter));
}

void ImageRefill::image_ready(Result<image::Resolved> &result, bool) {
  NodeImpl &n = node;
  const std::string &name = spec->name;
  if (!result && image::valid_digest(spec->image) && n.phase == NodeImpl::Phase::running) {
    // An uploaded image no peer could give yet (none has it, one sent a bad copy, one was
    // down): the function answers 503 here until a later attempt succeeds.
    last_error = result.error().message();
    uint64_t delay = std::min(kRefillRetryMaxNs, kRefillRetryNs << std::min<uint32_t>(attempts, 5));
    if (attempts++ == 0 || delay == kRefillRetryMaxNs)
      FV_ERROR("state: function %s waits for its image %s (attempt %u; next in %.1f s): %s", name.c_str(),
               spec->image.c_str(), attempts, static_cast<double>(delay) / 1e9, last_error.c_str());
    n.timers->start(retry, monotonic_ns() + delay);
    return;
  }
  if (!result) {
    FV_ERROR("state: function %s not restored: its image could not be unpacked again: %s", name.c_str(),
             result.error().message().c_str());
  } else if (n.pool->find(name) != nullptr) {
    FV_INFO("state: function %s was deployed anew while its image was unpacked", name.c_str());
  } else {
    // The image as it is now (a changed image at that path), as a redeploy would take it:
    // argv comes from envProcess or the new image's config. Only a new digest is a change
    // worth recording: the rootfs path is this node's (spec_from_record), not the record's.
    bool changed = result->digest != spec->image_digest;
    auto parsed = parse_deploy(spec->deploy_json, DeployLimits{});
    spec->argv = parsed ? (*parsed)->argv : std::vector<std::string>{};
    Status st = image::apply_image(*spec, *result);
    spec->image_json = image::encode_resolved(*result);
    pool::PoolError err = st.ok() ? n.pool->deploy(spec) : pool::PoolError{pool::Outcome::bad_backend, st.error().message()};
    if (err.outcome != pool::Outcome::ok) {
      FV_ERROR("state: function %s not restored: %s", name.c_str(), err.message.c_str());
    } else {
      n.pool->find(name)->restore_generation(generation);
      if (replicas > 0) (void)n.pool->scale(name, replicas);
      FV_INFO("state: function %s restored, its image unpacked again at %s", name.c_str(), result->rootfs.c_str());
      if (changed) {
        FunctionRecord record{generation, spec->deploy_json, spec->image_json, spec->created_ns};
        (void)n.state->put(store::kind::function, name, encode_function_record(record),
                           log_failure("record the re-unpacked image of " + name));
      }
    }
  }
  // Last: frees this. (Not drop_refill: a newer wait for the same name is not this one.)
  for (auto it = n.refills.begin(); it != n.refills.end(); ++it) {
    if (it->get() == this) {
      n.refills.erase(it);
      return;
    }
  }
}

// A function record as a spec ready for the pool; *refill: its OCI image's rootfs is gone
// from this node's image cache and must be unpacked again first.
Result<std::shared_ptr<FunctionSpec>> NodeImpl::spec_from_record(const store::Record &rec, const DeployLimits &limits,
                                                                 FunctionRecord &record, bool &refill) {
  auto decoded = decode_function_record(rec.value);
  if (!decoded) return decoded.error();
  record = std::move(*decoded);
  auto spec = parse_deploy(record.deploy_json, limits);
  if (spec && (*spec)->name != rec.key) spec = plain_error("function record", "names '" + (*spec)->name + "'");
  refill = false;
  if (spec && !record.image_json.empty()) {
    auto image = image::decode_resolved(record.image_json);
    // This node's copy: the record carries the rootfs path of the node that resolved it, and
    // each node has its own cache (on one machine, another node's cache would do, silently).
    if (image && image::valid_digest(image->digest))
      image->rootfs = options.image_cache_dir + "/sha256/" + std::string(image::digest_hex(image->digest)) + "/rootfs";
    Status applied = image ? image::apply_image(**spec, *image) : Status(image.error());
    if (!applied.ok()) spec = applied.error();
    else refill = access(image->rootfs.c_str(), F_OK) != 0;
  }
  if (!spec) return spec;
  (*spec)->deploy_json = record.deploy_json;
  (*spec)->image_json = record.image_json;
  (*spec)->created_ns = record.created_ns;
  return spec;
}

// One function record back into the pool. Returns what became of it.
NodeImpl::Restored NodeImpl::restore_function(const store::Record &rec, const DeployLimits &limits) {
  FunctionRecord record;
  bool refill = false;
  auto spec = spec_from_record(rec, limits, record, refill);
  if (!spec) {
    // A record this node cannot use (damaged, or its image directory is gone): the node
    // starts without the function; a new deploy of the name replaces the record.
    FV_ERROR("state: cannot restore function %s: %s", rec.key.c_str(), spec.error().message().c_str());
    return Restored::failed;
  }
  if (refill) {
    refill_image(std::move(*spec), record.generation);
    return Restored::later;
  }
  pool::PoolError err = pool->deploy(*spec);
  if (err.outcome != pool::Outcome::ok) {
    FV_ERROR("state: cannot restore function %s: %s", rec.key.c_str(), err.message.c_str());
    return Restored::failed;
  }
  pool->find(rec.key)->restore_generation(record.generation);
  return Restored::now;
}

void NodeImpl::restore_scale(const store::Record &rec, bool has_function_record) {
  auto replicas = decode_scale_record(rec.value);
  if (!replicas) {
    FV_WARN("state: skipping scale/%s: %s", rec.key.c_str(), replicas.error().message().c_str());
    return;
  }
  const std::string &name = rec.key;
  auto waiting = std::find_if(refills.begin(), refills.end(), [&](const auto &r) { return r->spec->name == name; });
  if (waiting != refills.end()) {
    (*waiting)->replicas = *replicas;  // applied once the function is back
    return;
  }
  if (pool->find(name) == nullptr && !has_function_record) {
    // The function's removal was durable and this record's was not yet: finish it. (A
    // function whose record is there but did not come back on this node, say its image
    // root is refused here, keeps its scale: in a cluster the other nodes serve it.)
    (void)state->remove(store::kind::scale, name, log_failure("remove stale scale record of " + name));
    return;
  }
  pool::PoolError err = pool->scale(name, *replicas);
  if (!err.message.empty()) FV_WARN("state: scale %s: %s", name.c_str(), err.message.c_str());
}

Status NodeImpl::restore_state() {
  uint64_t start_ns = monotonic_ns();
  auto loaded = state->load_all();
  if (!loaded) return loaded.error();
  std::map<std::string_view, std::vector<const store::Record *>> by_kind;
  for (const store::Record &rec : loaded->records) by_kind[rec.kind].push_back(&rec);
  // Each kind goes to its subsystem, in dependency order: what functions refer to (secrets)
  // must be back before the functions are; scale targets, and async calls, after them.
  // A restart with narrower image roots does not bring back what they now refuse.
  DeployLimits limits = deploy_limits();
  restore_secrets(by_kind[store::kind::secret]);  // first: the functions name them
  size_t counts[3] = {0, 0, 0};  // by Restored
  for (const store::Record *rec : by_kind[store::kind::function])
    ++counts[static_cast<int>(restore_function(*rec, limits))];
  std::set<std::string_view> recorded;
  for (const store::Record *rec : by_kind[store::kind::function]) recorded.insert(rec->key);
  for (const store::Record *rec : by_kind[store::kind::scale]) restore_scale(*rec, recorded.count(rec->key) > 0);
  FV_INFO("state: restored %zu functions and %zu scale targets from %s in %.1f ms (%zu waiting for their "
          "image to be unpacked again, %zu not restored, %u corrupt records skipped, %u interrupted writes removed)",
          counts[static_cast<int>(Restored::now)], by_kind[store::kind::scale].size(), state->describe().c_str(),
          static_cast<double>(monotonic_ns() - start_ns) / 1e6, counts[static_cast<int>(Restored::later)],
          counts[static_cast<int>(Restored::failed)], loaded->skipped, loaded->temp_removed);
  return {};
}

}  // namespace faasvisor
