// HTTP request -> typed route (STYLE.md 8). Pure: testable without a ring.
#pragma once

#include <string_view>

namespace faasvisor::api {

enum class RouteKind {
  healthz,
  info,
  list_functions,   // GET /system/functions
  deploy,           // POST /system/functions
  update,           // PUT /system/functions
  remove,           // DELETE /system/functions
  get_function,     // GET /system/function/NAME
  scale,            // POST /system/scale-function/NAME
  stats,            // GET /system/stats
  reset_stats,      // DELETE /system/stats
  invoke,           // any method on /function/NAME[/sub/path]
  async_invoke,     // POST /async-function/NAME[/sub/path]
  metrics,          // GET /metrics
  logs,             // GET /system/logs
  list_secrets,     // GET /system/secrets
  create_secret,    // POST /system/secrets
  update_secret,    // PUT /system/secrets
  delete_secret,    // DELETE /system/secrets
  namespaces,       // GET /system/namespaces
  namespace_info,   // GET /system/namespace/NAME
  upload_image,     // POST /system/images (an OCI layout tar, streamed)
  list_images,      // GET /system/images
  remove_image,     // DELETE /system/images/sha256:HEX
  get_image,        // GET /system/images/sha256:HEX (its layout tar, for peers)
  not_found,
  method_not_allowed,
};

struct Route {
  RouteKind kind = RouteKind::not_found;
  std::string_view name;     // function name where the path has one
  std::string_view subpath;  // invoke: the rest of the path, "/" if none
  const char *allow = "";    // method_not_allowed: the Allow header
};

Route route(std::string_view method, std::string_view path);

}  // namespace faasvisor::api
