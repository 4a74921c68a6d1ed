#include "api/router.h"

namespace faasvisor::api {
namespace {

bool starts_with(std::string_view s, std::string_view prefix) {
  return s.substr(0, prefix.size()) == prefix;
}

Route by_method(std::string_view method, const char *allow,
                std::initializer_list<std::pair<std::string_view, RouteKind>> table) {
  for (const auto &[m, kind] : table)
    if (method == m) return {kind, {}, {}, ""};
  return {RouteKind::method_not_allowed, {}, {}, allow};
}

}  // namespace

Route route(std::string_view method, std::string_view path) {
  if (starts_with(path, "/function/")) {
    std::string_view rest = path.substr(10);
    size_t slash = rest.find('/');
    Route r{RouteKind::invoke, rest.substr(0, slash), "/", ""};
    if (slash != std::string_view::npos) r.subpath = rest.substr(slash);
    if (r.name.empty()) r.kind = RouteKind::not_found;
    return r;
  }
  if (starts_with(path, "/async-function/")) {
    std::string_view rest = path.substr(16);
    size_t slash = rest.find('/');
    Route r = by_method(method, "POST", {{"POST", RouteKind::async_invoke}});
    r.name = rest.substr(0, slash);
    r.subpath = slash == std::string_view::npos ? std::string_view("/") : rest.substr(slash);
    if (r.name.empty()) r.kind = RouteKind::not_found;
    return r;
  }
  if (path == "/healthz") return by_method(method, "GET, HEAD", {{"GET", RouteKind::healthz}, {"HEAD", RouteKind::healthz}});
  if (path == "/metrics") return by_method(method, "GET", {{"GET", RouteKind::metrics}});
  if (path == "/system/logs") return by_method(method, "GET", {{"GET", RouteKind::logs}});
  if (path == "/system/info") return by_method(method, "GET", {{"GET", RouteKind::info}});
  if (path == "/system/namespaces") return by_method(method, "GET", {{"GET", RouteKind::namespaces}});
  if (starts_with(path, "/system/namespace/")) {
    // faasvisor has one namespace and changes none: GET only (faas-provider, whose providers
    // may create namespaces, routes POST, PUT and DELETE here too).
    Route r = by_method(method, "GET", {{"GET", RouteKind::namespace_info}});
    r.name = path.substr(18);
    if (r.name.empty() || r.name.find('/') != std::string_view::npos) r.kind = RouteKind::not_found;
    return r;
  }
  if (path == "/system/functions")
    return by_method(method, "GET, POST, PUT, DELETE",
                     {{"GET", RouteKind::list_functions},
                      {"POST", RouteKind::deploy},
                      {"PUT", RouteKind::update},
                      {"DELETE", RouteKind::remove}});
  if (path == "/system/secrets")
    return by_method(method, "GET, POST, PUT, DELETE",
                     {{"GET", RouteKind::list_secrets},
                      {"POST", RouteKind::create_secret},
                      {"PUT", RouteKind::update_secret},
                      {"DELETE", RouteKind::delete_secret}});
  if (path == "/system/images")
    return by_method(method, "GET, POST", {{"GET", RouteKind::list_images}, {"POST", RouteKind::upload_image}});
  if (starts_with(path, "/system/images/")) {
    Route r = by_method(method, "GET, DELETE", {{"GET", RouteKind::get_image}, {"DELETE", RouteKind::remove_image}});
    r.name = path.substr(15);
    if (r.name.empty() || r.name.find('/') != std::string_view::npos) r.kind = RouteKind::not_found;
    return r;
  }
  if (path == "/system/stats")
    return by_method(method, "GET, DELETE", {{"GET", RouteKind::stats}, {"DELETE", RouteKind::reset_stats}});
  if (starts_with(path, "/system/function/")) {
    Route r = by_method(method, "GET", {{"GET", RouteKind::get_function}});
    r.name = path.substr(17);
    if (r.name.empty() || r.name.find('/') != std::string_view::npos) r.kind = RouteKind::not_found;
    return r;
  }
  if (starts_with(path, "/system/scale-function/")) {
    Route r = by_method(method, "POST", {{"POST", RouteKind::scale}});
    r.name = path.substr(23);
    if (r.name.empty() || r.name.find('/') != std::string_view::npos) r.kind = RouteKind::not_found;
    return r;
  }
  return {};
}

}  // namespace faasvisor::api
