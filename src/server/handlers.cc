// The HTTP API: a typed route, then one small handler per resource.
#include <dirent.h>
#include <unistd.h>

#include "api/deploy.h"
#include "util/json.h"
#include "api/router.h"
#include "image/layout.h"
#include "server/node_impl.h"
#include "util/clock.h"
#include "util/log.h"

namespace faasvisor {
namespace {

// A definition's template (docs/templates.md), if the backend keeps one.
void write_template(JsonWriter &w, pool::Function &fn) {
  backend::Backend::KeptFacts t = fn.backend().kept_facts(fn.spec());
  if (t.state == nullptr) return;
  w.key("template").begin_object();
  w.field("state", t.state).field("pid", t.pid).field("memoryBytes", t.memory_bytes);
  w.field("forks", t.forks).field("builds", t.builds).field("primed", t.primed);
  w.field("primedTarget", t.primed_target);
  w.end_object();
}


constexpr const char *kJson = "application/json";

int status_for(pool::Outcome outcome) {
  switch (outcome) {
    case pool::Outcome::ok: return 200;
    case pool::Outcome::exists: return 409;
    case pool::Outcome::not_found: return 404;
    case pool::Outcome::bad_backend: return 400;
  }
  return 500;
}

void write_function(JsonWriter &w, const pool::Function &fn) {
  const FunctionSpec &spec = fn.spec();
  w.begin_object();
  w.field("name", spec.name).field("namespace", spec.namespace_name);
  w.field("envProcess", spec.env_process);
  write_openfaas_fields(w, spec);
  w.key("envVars").begin_object();
  for (const auto &[k, v] : spec.env_vars) w.field(k, v);
  w.end_object();
  w.key("labels").begin_object();
  for (const auto &[k, v] : spec.labels) w.field(k, v);
  w.end_object();
  w.key("annotations").begin_object();
  for (const auto &[k, v] : spec.annotations) w.field(k, v);
  w.end_object();
  w.key("secrets").begin_array();
  for (const std::string &name : spec.secrets) w.string(name);  // names only, never values
  w.end_array();
  w.key("limits").begin_object();
  w.field("memory", spec.limits_memory.empty() ? std::to_string(spec.memory_bytes) : spec.limits_memory);
  w.field("cpu", spec.limits_cpu.empty() ? std::to_string(spec.cpu_millis) + "m" : spec.limits_cpu);
  w.end_object();
  w.field("replicas", fn.active());
  w.field("availableReplicas", fn.warm + fn.busy);
  w.field("invocationCount", fn.invocation_count);
  w.key("usage").begin_object();
  auto &mutable_fn = const_cast<pool::Function &>(fn);
  w.field("totalMemoryBytes", static_cast<double>(mutable_fn.memory_total_bytes() +
                                                  mutable_fn.backend().kept_facts(fn.spec()).memory_bytes));
  w.end_object();
  w.key("faasvisor").begin_object();
  w.field("backend", spec.backend).field("generation", fn.generation());
  w.field("mode", to_string(spec.mode));
  if (spec.mode == FunctionSpec::Mode::http) w.field("port", spec.port);
  if (!spec.image_reference.empty()) w.field("imagePath", spec.image);  // the :TAG resolved away
  if (!spec.image_digest.empty()) w.field("imageDigest", spec.image_digest).field("rootfs", spec.rootfs);
  w.field("maxInstances", spec.max_instances).field("timeoutMs", spec.timeout_ms);
  w.field("queued", fn.queue.size());
  write_template(w, mutable_fn);
  w.key("instances").begin_array();
  const_cast<pool::Function &>(fn).instances.for_each([&](pool::Instance &inst) {
    w.begin_object().field("id", inst.id()).field("state", pool::to_string(inst.state()));
    w.field("pid", static_cast<int64_t>(inst.pid())).field("served", inst.served());
    if (inst.init_ns() != 0) w.field("initMs", static_cast<double>(inst.init_ns()) / 1e6);
    w.field("memoryBytes", inst.memory_bytes()).end_object();
  });
  w.end_array();
  w.end_object();
  w.end_object();
}

void write_stats(JsonWriter &w, pool::Function &fn) {
  w.begin_object();
  w.key("instances").begin_object();
  w.field("booting", fn.booting).field("warm", fn.warm).field("busy", fn.busy);
  w.field("stopping", fn.stopping);
  w.end_object();
  w.key("invocations").begin_object();
  w.field("cold", fn.stats.cold).field("warm", fn.stats.warm).field("errors", fn.stats.errors);
  w.field("queued", fn.queue.size());
  w.end_object();
  std::string s;
  stats::append_json(s, fn.stats.init_ms.view());
  w.key("init_ms").raw(s);
  w.key("exec_ms").begin_object();
  s.clear();
  stats::append_json(s, fn.stats.exec_cold_ms.view());
  w.key("cold").raw(s);
  s.clear();
  stats::append_json(s, fn.stats.exec_warm_ms.view());
  w.key("warm").raw(s);
  w.end_object();
  uint64_t total = fn.memory_total_bytes();
  uint32_t sampled = fn.memory_sampled_instances();
  uint64_t kept = fn.backend().kept_facts(fn.spec()).memory_bytes;
  w.key("memory_bytes").begin_object();
  w.field("per_instance_mean", sampled ? total / sampled : 0).field("total", total + kept);
  w.field("template", kept);
  w.end_object();
  write_template(w, fn);
  pool::Utilisation u = fn.utilisation(monotonic_ns());
  w.key("utilisation").begin_object();
  w.field("boot_instance_s", u.boot_s).field("idle_instance_s", u.idle_s);
  w.field("busy_instance_s", u.busy_s).field("idle_memory_byte_s", u.idle_memory_byte_s);
  w.end_object();
  w.field("evictions", fn.stats.evictions).field("keepalive_stops", fn.stats.keepalive_stops);
  w.field("prewarms", fn.stats.prewarms);
  pool::KeepAliveWindows kw = fn.policy.windows();
  w.key("keepalive").begin_object();
  w.field("policy", fn.spec().keepalive.kind == pool::KeepAliveSpec::Kind::adaptive ? "adaptive" : "fixed");
  w.field("from_histogram", kw.from_histogram).field("prewarm_ms", kw.prewarm_ms);
  w.field("keepalive_ms", kw.keepalive_ms).field("idle_times", fn.policy.histogram().total());
  w.end_object();
  w.end_object();
}

}  // namespace

// The node's own facts: /system/info's "faasvisor" object.
void NodeImpl::write_node_facts(JsonWriter &w) {
  w.begin_object();
  w.field("pid", static_cast<int64_t>(getpid()));
  w.field("uptime_s", static_cast<double>(monotonic_ns() - started_ns) / 1e9);
  w.field("cgroups", proc::to_string(cgroups.mode()));
  if (cgroups.mode() == proc::CgroupMode::none) w.field("cgroups_why_none", cgroups.why_none());
  w.key("cgroup_roots").begin_array();
  for (const std::string &root : cgroups.roots()) w.string(root);
  w.end_array();
  w.key("backends").begin_array();
  for (const auto &b : pool->backends()) {
    std::string why;
    bool ok = b->available(&why);
    w.begin_object().field("name", b->name()).field("available", ok);
    if (!ok) w.field("why_not", why);
    std::string no_network;
    bool network = b->network_support(&no_network);
    w.field("network", network);
    if (!network) w.field("network_why_not", no_network);
    std::vector<std::pair<std::string, std::string>> facts;
    b->describe(facts);
    for (const auto &[name, value] : facts) w.field(name, value);
    w.end_object();
  }
  w.end_array();
  {
    std::string why;
    bool ok = network->available(&why);
    w.key("network").begin_object().field("available", ok);
    if (ok) {
      w.field("subnet", network->subnet()).field("resolv_conf", network->resolv_conf());
      w.field("namespaces_ready", static_cast<uint64_t>(network->ready_count()));
    }
    else w.field("why_not", why);
    w.end_object();
  }
  w.field("instances", pool->live_instances());
  w.field("memory_budget_bytes", pool->options().memory_budget_bytes);
  w.field("memory_sample_ms", pool->options().memory_sample_ms);
  w.field("memory_reserved_bytes", pool->reserved_bytes());
  w.field("connections", connections.size());
  const image::StoreStats &is = images->stats();
  const store::StoreStats &ss = state->stats();
  w.key("state").begin_object().field("store", state->describe()).field("durable", state->durable());
  w.field("unavailable", state->unavailable());  // empty, or why changes answer 503 (etcd unreachable)
  w.field("puts", ss.puts).field("removes", ss.removes).field("failed", ss.failed);
  w.field("pending", ss.queued_now).field("refused", ss.refused).end_object();
  w.key("images").begin_object().field("cache", images->options().cache_dir);
  w.field("unpacking", images->running()).field("resolved", is.resolved);
  w.field("unpacked", is.unpacked).field("failed", is.failed);
  w.field("max_upload_bytes", options.max_image_bytes).field("cache_max_bytes", options.image_cache_max_bytes);
  w.field("registry_auth", !options.registry_auth.empty());
  w.key("insecure_registries").begin_array();
  for (const std::string &host : options.insecure_registries) w.string(host);
  w.end_array().end_object();
  w.end_object();
}

void NodeImpl::deploy(Connection &conn, std::shared_ptr<FunctionSpec> spec, bool update) {
  if (Status st = secret_table.check_function(spec->secrets); !st.ok()) return conn.respond_error(400, st.error().message());
  if (!state_has_room(conn)) return;
  if (image::is_oci_image(*spec) || image::is_registry_reference(spec->image) || image::valid_digest(spec->image)) {
    if (Status st = image::check_runs_images(*spec); !st.ok()) return conn.respond_error(400, st.error().message());
    // Unpacking may take seconds: the helper does it, this request is answered when it exits.
    if (Status st = images->resolve(spec->image, conn); !st.ok()) return conn.respond_error(503, st.error().message());
    return conn.await_image(std::move(spec), update);
  }
  std::string name = spec->name;
  pool::PoolError err = update ? pool->update(std::move(spec)) : pool->deploy(std::move(spec));
  if (err.outcome != pool::Outcome::ok) return conn.respond_error(status_for(err.outcome), err.message);
  persist_function(conn, name, "{\"status\":\"accepted\"}");
}

void NodeImpl::image_resolved(Connection &conn, std::shared_ptr<FunctionSpec> spec, bool update,
                              Result<image::Resolved> &image, bool image_fault) {
  if (!image) return conn.respond_error(image_fault ? 400 : 503, image.error().message());
  if (Status st = image::apply_image(*spec, *image); !st.ok()) return conn.respond_error(400, st.error().message());
  // Again: a secret may have been deleted while the image was unpacked.
  if (Status st = secret_table.check_function(spec->secrets); !st.ok()) return conn.respond_error(400, st.error().message());
  if (!state_has_room(conn)) return;
  spec->image_json = image::encode_resolved(*image);
  std::string name = spec->name;
  pool::PoolError err = update ? pool->update(std::move(spec)) : pool->deploy(std::move(spec));
  if (err.outcome != pool::Outcome::ok) return conn.respond_error(status_for(err.outcome), err.message);
  std::string body;
  JsonWriter w(body);
  w.begin_object().field("status", "accepted");
  w.key("image").begin_object().field("digest", image->digest).field("rootfs", image->rootfs);
  w.field("unpacked", image->unpacked).end_object();
  w.end_object();
  persist_function(conn, name, std::move(body));
}

bool NodeImpl::upload_allowed(const http::Request &head) const {
  if (!basic_auth) return true;
  const http::Header *header = head.find("authorization");
  return header != nullptr && api::basic_auth_matches(header->value, *basic_auth);
}

// The image cache's entries (CACHE/sha256/<hex>, each complete: renamed into place whole),
// and which functions use them. A readdir of one directory of the cache, bounded.
void NodeImpl::handle_images(Connection &conn, const api::Route &r) {
  std::string body;
  JsonWriter w(body);
  auto users = [&](std::string_view digest) {
    std::vector<std::string> names;
    pool->for_each_function([&](const pool::Function &fn) {
      if (fn.spec().image_digest == digest) names.push_back(fn.name());
    });
    return names;
  };
  if (r.kind == api::RouteKind::get_image) {
    // For peers (docs/cluster.md): the tar an uploaded image came in, which a node that
    // lacks the image unpacks with every digest checked. Streamed from disk on the ring.
    std::string digest(r.name);
    if (!image::valid_digest(digest)) return conn.respond_error(400, "'" + digest + "' is not a sha256:<64 hex> digest");
    return conn.send_file(image::layout_tar_path(images->options().cache_dir, digest), "application/x-tar",
                          "image " + digest + " is not on this node as an uploaded layout");
  }
  if (r.kind == api::RouteKind::remove_image) {
    std::string digest(r.name);
    if (!image::valid_digest(digest)) return conn.respond_error(400, "'" + digest + "' is not a sha256:<64 hex> digest");
    std::string dir = images->options().cache_dir + "/sha256/" + std::string(image::digest_hex(digest));
    if (access((dir + "/config.json").c_str(), F_OK) != 0)
      return conn.respond_error(404, "image " + digest + " is not in the cache");
    std::vector<std::string> names = users(digest);
    if (!names.empty()) {
      std::string list;
      for (const std::string &n : names) list += (list.empty() ? "" : ", ") + n;
      return conn.respond_error(409, "image " + digest + " is used by " + list);
    }
    // The helper renames it out of the cache and removes it, off the loop.
    if (Status st = images->remove(digest, conn); !st.ok()) return conn.respond_error(503, st.error().message());
    return conn.await_removal();
  }
  w.begin_array();
  if (DIR *d = opendir((images->options().cache_dir + "/sha256").c_str())) {
    size_t listed = 0;
    while (dirent *e = readdir(d)) {
      std::string digest = "sha256:" + std::string(e->d_name);
      if (!image::valid_digest(digest) || ++listed > 10000) continue;
      w.begin_object().field("digest", digest);
      w.field("rootfs", images->options().cache_dir + "/sha256/" + e->d_name + "/rootfs");
      w.key("usedBy").begin_array();
      for (const std::string &n : users(digest)) w.string(n);
      w.end_array().end_object();
    }
    closedir(d);
  }
  w.end_array();
  conn.respond(200, kJson, body);
}

bool NodeImpl::authorized(Connection &conn, const http::Request &req) {
  if (!basic_auth || !api::path_needs_auth(req.path(), options.protect_metrics)) return true;
  const http::Header *header = req.find("authorization");
  if (header != nullptr && api::basic_auth_matches(header->value, *basic_auth)) return true;
  conn.respond_error(401, header == nullptr ? "authentication required: this route needs HTTP basic auth"
                                            : "invalid credentials",
                     api::kBasicAuthChallenge);
  return false;
}

DeployLimits NodeImpl::deploy_limits() const {
  DeployLimits limits;
  limits.default_queue_limit = options.max_queue_per_function;
  limits.default_async_queue_limit = options.async_queue_per_function;
  limits.default_async_concurrency = options.async_concurrency;
  limits.image_roots = &image_roots;
  return limits;
}

// POST /async-function/NAME: 202 with X-Call-Id once the call is durable (async/calls.h).
void NodeImpl::handle_async(Connection &conn, http::Request &req, std::string_view function,
                            std::string_view subpath) {
  async::Call *call = nullptr;
  async::Refusal refusal = async->accept(conn, req, function, subpath, &call);
  if (refusal.status == 0) return conn.await_call(*call);
  std::string extra;
  if (refusal.retry_after_s != 0) extra = "Retry-After: " + std::to_string(refusal.retry_after_s) + "\r\n";
  conn.respond_error(refusal.status, refusal.message, extra);
}

void NodeImpl::handle(Connection &conn, http::Request &req, pool::Invocation &inv) {
  if (!authorized(conn, req)) return;
  api::Route r = api::route(req.method, req.path());
  std::string body;
  JsonWriter w(body);
  if (r.kind != api::RouteKind::invoke && !check_query_namespace(conn, req)) return;
  switch (r.kind) {
    case api::RouteKind::invoke: {
      pool::Function *fn = find_invoked(conn, r.name);
      if (fn == nullptr) return;
      prepare_invocation(req, inv, *fn);
      inv.method = req.method;
      inv.path = r.subpath;
      inv.query = req.query();
      inv.headers = req.header_list();
      inv.body = req.body;
      return pool->invoke(*fn, inv);
    }
    case api::RouteKind::async_invoke:
      return handle_async(conn, req, r.name, r.subpath);
    case api::RouteKind::healthz:
      return conn.respond(200, kJson, "{\"status\":\"ok\"}");
    case api::RouteKind::info:
      return handle_info(conn, req);
    case api::RouteKind::namespaces:
    case api::RouteKind::namespace_info:
      return handle_namespaces(conn, r);
    case api::RouteKind::list_functions: {
      w.begin_array();
      pool->for_each_function([&](const pool::Function &fn) { write_function(w, fn); });
      w.end_array();
      return conn.respond(200, kJson, body);
    }
    case api::RouteKind::get_function: {
      pool::Function *fn = pool->find(r.name);
      if (fn == nullptr)
        return conn.respond_error(404, "function '" + std::string(r.name) + "' not found");
      write_function(w, *fn);
      return conn.respond(200, kJson, body);
    }
    case api::RouteKind::deploy:
    case api::RouteKind::update: {
      auto spec = parse_deploy(req.body, deploy_limits());
      if (!spec)
        return conn.respond_error(spec.error().context == kOutsideImageRoots ? 403 : 400, spec.error().message());
      (*spec)->deploy_json = std::string(req.body);  // what the store keeps and a restart reads
      stamp_created(**spec);
      return deploy(conn, std::move(*spec), r.kind == api::RouteKind::update);
    }
    case api::RouteKind::remove: {
      auto name = parse_delete(req.body);
      if (!name) return conn.respond_error(400, name.error().message());
      if (!state_has_room(conn)) return;
      pool::PoolError err = pool->remove(*name);
      if (err.outcome != pool::Outcome::ok) return conn.respond_error(status_for(err.outcome), err.message);
      return persist_removal(conn, *name);
    }
    case api::RouteKind::scale: {
      auto scale = parse_scale(req.body);
      if (!scale) return conn.respond_error(400, scale.error().message());
      if (!scale->service_name.empty() && scale->service_name != r.name)
        return conn.respond_error(400, "field 'serviceName': does not match the function in the path");
      if (!state_has_room(conn)) return;
      pool::PoolError err = pool->scale(r.name, scale->replicas);
      if (err.outcome != pool::Outcome::ok) return conn.respond_error(status_for(err.outcome), err.message);
      pool::Function *fn = pool->find(r.name);
      w.begin_object().field("status", "accepted").field("replicas", fn->active());
      if (!err.message.empty()) {
        FV_WARN("scale %s: %s", fn->name().c_str(), err.message.c_str());
        w.field("warning", err.message);
      }
      w.end_object();
      return persist_scale(conn, r.name, scale->replicas, std::move(body));
    }
    case api::RouteKind::stats: {
      w.begin_object().key("functions").begin_object();
      pool->for_each_function([&](pool::Function &fn) {
        w.key(fn.name());
        write_stats(w, fn);
      });
      w.end_object().end_object();
      return conn.respond(200, kJson, body);
    }
    case api::RouteKind::upload_image:
      if (!conn.upload_streamed())
        return conn.respond_error(400, "POST /system/images takes an OCI image layout as a tar body (none was sent)");
      return conn.finish_upload();
    case api::RouteKind::list_images:
    case api::RouteKind::remove_image:
    case api::RouteKind::get_image:
      return handle_images(conn, r);
    case api::RouteKind::metrics:
      return conn.respond(200, "text/plain; version=0.0.4; charset=utf-8", render_metrics(*this));
    case api::RouteKind::logs:
      return handle_logs(conn, req);
    case api::RouteKind::list_secrets:
      return list_secrets(conn);
    case api::RouteKind::create_secret:
      return change_secret(conn, req, secrets::Change::create);
    case api::RouteKind::update_secret:
      return change_secret(conn, req, secrets::Change::update);
    case api::RouteKind::delete_secret:
      return change_secret(conn, req, secrets::Change::remove);
    case api::RouteKind::reset_stats:
      pool->reset_stats();
      return conn.respond(200, kJson, "{\"status\":\"reset\"}");
    case api::RouteKind::method_not_allowed:
      return conn.respond_error(405, "method " + req.method + " not allowed on " + std::string(req.path()),
                                std::string("Allow: ") + r.allow + "\r\n");
    case api::RouteKind::not_found:
      break;
  }
  conn.respond_error(404, "no such endpoint: " + std::string(req.path()));
}

}  // namespace faasvisor
