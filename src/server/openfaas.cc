// The parts of the HTTP API that exist for OpenFaaS's clients (docs/openfaas.md): the
// provider's /system/info, the one namespace, NAME.NAMESPACE invocations, X-Call-Id and
// X-Start-Time, and the X-OpenFaaS-Internal mark on the node's own error answers.
#include <sys/random.h>
#include <sys/utsname.h>

#include <cstdio>

#include "util/json.h"
#include "api/openfaas.h"
#include "server/logs.h"
#include "server/node_impl.h"
#include "version.h"  // generated in the build directory
#include "util/clock.h"
#include "util/number.h"

namespace faasvisor {
namespace {

constexpr const char *kJson = "application/json";
// faas-provider's proxy puts this on the answers it makes itself (function not found, not
// reachable), so that the gateway and its users can tell them from a function's own errors.
constexpr const char *kInternalMark = "X-OpenFaaS-Internal: proxy\r\n";

void append_header(http::Request &req, std::string_view name, std::string value) {
  if (req.header_count == req.headers.size()) req.headers.emplace_back();
  http::Header &h = req.headers[req.header_count++];
  h.name.assign(name);
  h.value = std::move(value);
}

// A version 4 UUID, as the gateway's call-id middleware makes. Random bits from a per-node
// seed advanced per call (getrandom once: it does not block after boot).
std::string make_call_id() {
  static uint64_t state = [] {
    uint64_t seed = 0;
    if (getrandom(&seed, sizeof seed, GRND_NONBLOCK) != sizeof seed) seed = realtime_ns() ^ monotonic_ns();
    return seed;
  }();
  auto next = [] {  // splitmix64
    uint64_t z = (state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
  };
  uint64_t hi = next(), lo = next();
  hi = (hi & ~0xf000ull) | 0x4000ull;                      // version 4
  lo = (lo & ~(0xc000ull << 48)) | (0x8000ull << 48);      // variant 10
  char out[40];
  std::snprintf(out, sizeof out, "%08llx-%04llx-%04llx-%04llx-%012llx",
                static_cast<unsigned long long>(hi >> 32), static_cast<unsigned long long>((hi >> 16) & 0xffff),
                static_cast<unsigned long long>(hi & 0xffff), static_cast<unsigned long long>(lo >> 48),
                static_cast<unsigned long long>(lo & 0xffffffffffffull));
  return out;
}

}  // namespace

void write_openfaas_fields(JsonWriter &w, const FunctionSpec &spec) {
  w.field("image", spec.image_reference.empty() ? spec.image : spec.image_reference);
  w.field("createdAt", api::format_rfc3339_ns(spec.created_ns));
  if (!spec.constraints.empty()) {
    w.key("constraints").begin_array();
    for (const std::string &c : spec.constraints) w.string(c);
    w.end_array();
  }
  if (!spec.requests_memory.empty()) w.key("requests").begin_object().field("memory", spec.requests_memory).end_object();
  if (spec.read_only_root_fs) w.field("readOnlyRootFilesystem", true);
}

void NodeImpl::stamp_created(FunctionSpec &spec) {
  const pool::Function *old = pool->find(spec.name);
  spec.created_ns = old != nullptr ? old->spec().created_ns : realtime_ns();
}

bool NodeImpl::check_query_namespace(Connection &conn, http::Request &req) {
  std::string ns;
  if (!query_param(req.query(), "namespace", &ns)) return true;
  Status st = api::check_namespace(ns, "query parameter 'namespace'");
  if (st.ok()) return true;
  conn.respond_error(400, st.error().message());
  return false;
}

pool::Function *NodeImpl::find_invoked(Connection &conn, std::string_view full_name) {
  api::QualifiedName q = api::split_function_name(full_name, [&](std::string_view n) {
    return pool->find(n) != nullptr;
  });
  pool::Function *fn = nullptr;
  if (q.namespace_name.empty() || q.namespace_name == api::kNamespace) fn = pool->find(q.name);
  if (fn != nullptr) return fn;
  if (ImageRefill *waiting = find_refill(q.name); waiting != nullptr && q.namespace_name.empty()) {
    // Deployed in the cluster, but its image is not on this node yet (docs/cluster.md).
    conn.respond_error(503, "function '" + std::string(q.name) + "' is waiting for its image " + waiting->spec->image +
                                " on this node" + (waiting->last_error.empty() ? ": fetching it from a peer" : ": " + waiting->last_error),
                       std::string("Retry-After: 1\r\n") + std::string(kInternalMark));
    return nullptr;
  }
  std::string what = "function '" + std::string(q.name) + "' not found";
  if (!q.namespace_name.empty()) what += " in namespace '" + std::string(q.namespace_name) + "'";
  conn.respond_error(404, what, kInternalMark);
  return nullptr;
}

void NodeImpl::prepare_invocation(http::Request &req, pool::Invocation &inv, const pool::Function &fn) {
  if (const http::Header *id = req.find("X-Call-Id"); id == nullptr)
    append_header(req, "X-Call-Id", make_call_id());
  else if (id->value.empty())
    const_cast<http::Header *>(id)->value = make_call_id();  // req is ours to change
  // The gateway stamps X-Start-Time (Unix ns) as the call reaches it, before any
  // scale-from-zero wait. Honoured: the function's timeout and X-Duration-Seconds count from
  // it when it is plausible, not ahead of this clock and younger than the timeout (an older
  // one would expire the call before it starts). Otherwise the call counts from now and the
  // header passes on as it came.
  uint64_t now_real = realtime_ns();
  const http::Header *start = req.find("X-Start-Time");
  std::optional<uint64_t> start_at = start != nullptr ? parse_decimal(start->value) : std::nullopt;
  if (!start_at) {
    if (start == nullptr) append_header(req, "X-Start-Time", std::to_string(now_real));
    inv.arrival_ns = monotonic_ns();
    return;
  }
  uint64_t start_ns = *start_at;
  uint64_t now_mono = monotonic_ns();
  uint64_t timeout_ns = fn.spec().timeout_ms * 1'000'000ull;
  bool plausible = start_ns <= now_real && now_real - start_ns < timeout_ns && now_real - start_ns < now_mono;
  inv.arrival_ns = plausible ? now_mono - (now_real - start_ns) : now_mono;
}

std::string_view openfaas_error_mark(const http::Request &req) {
  return std::string_view(req.target).starts_with("/function/") ? kInternalMark : "";
}

std::string openfaas_response_headers(const http::Request &req, bool node_error,
                                      const std::vector<std::pair<std::string_view, std::string_view>> &from_function) {
  std::string extra;
  for (std::string_view name : {std::string_view("X-Call-Id"), std::string_view("X-Start-Time")}) {
    const http::Header *h = req.find(name);
    if (h == nullptr) continue;
    bool function_set_it = false;
    for (const auto &[n, v] : from_function) function_set_it = function_set_it || http::iequals(n, name);
    if (function_set_it) continue;
    extra += name;
    extra += ": ";
    extra += h->value;
    extra += "\r\n";
  }
  if (node_error) extra += kInternalMark;
  return extra;
}

void NodeImpl::handle_info(Connection &conn, http::Request &req) {
  std::string body;
  JsonWriter w(body);
  utsname u{};
  uname(&u);
  auto provider = [&] {
    w.field("provider", "faasvisor").field("orchestration", "faasvisor");
    w.key("version").begin_object().field("sha", FAASVISOR_GIT_SHA).field("release", FAASVISOR_VERSION);
    w.end_object();
  };
  // faas-provider's shape is what the gateway reads (and wraps as {provider, version, arch}).
  // faas-cli reads the gateway's shape, whose "provider" is an object: a request from
  // faas-cli that no gateway forwarded (gateways add X-Forwarded-For) gets that one, with
  // faasvisor standing in for the gateway, so `faas-cli version` works pointed at the node.
  const http::Header *agent = req.find("User-Agent");
  bool direct_faas_cli = agent != nullptr && agent->value.starts_with("faas-cli/") &&
                         req.find("X-Forwarded-For") == nullptr;
  w.begin_object();
  if (direct_faas_cli) {
    w.key("provider").begin_object();
    provider();
    w.end_object();
    w.key("version").begin_object().field("sha", FAASVISOR_GIT_SHA).field("release", FAASVISOR_VERSION);
    w.end_object();
    w.field("arch", std::string_view(u.machine));
  } else {
    provider();
  }
  w.key("faasvisor");
  write_node_facts(w);
  w.end_object();
  conn.respond(200, kJson, body);
}

void NodeImpl::handle_namespaces(Connection &conn, api::Route &r) {
  std::string body;
  JsonWriter w(body);
  if (r.kind == api::RouteKind::namespaces) {
    w.begin_array().string(api::kNamespace).end_array();
    return conn.respond(200, kJson, body);
  }
  if (r.name != api::kNamespace)
    return conn.respond_error(404, "namespace '" + std::string(r.name) + "' not found: this node has one, " +
                                       std::string(api::kNamespace));
  // faas-provider's FunctionNamespace; faasd marks its function namespaces with this label.
  w.begin_object().field("name", api::kNamespace);
  w.key("labels").begin_object().field("openfaas", "1").end_object();
  w.end_object();
  conn.respond(200, kJson, body);
}

}  // namespace faasvisor
