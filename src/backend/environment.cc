#include "backend/environment.h"

namespace faasvisor::backend {
namespace {
bool has_env(const std::vector<std::string> &env, std::string_view name) {
  for (const std::string &e : env)
    if (e.size() > name.size() && e.compare(0, name.size(), name) == 0 && e[name.size()] == '=')
      return true;
  return false;
}
}  // namespace

std::vector<std::string> instance_environment(const FunctionSpec &spec,
                                              std::string_view instance_name) {
  // The image's Env (what the deployment's envVars did not override; empty but for OCI
  // images), then envVars.
  std::vector<std::string> env = spec.image_env;
  for (const auto &[name, value] : spec.env_vars) env.push_back(name + "=" + value);
  for (const char *fallback : {"PATH=/usr/local/bin:/usr/bin:/bin", "HOME=/tmp", "LANG=C.UTF-8"}) {
    std::string_view f = fallback;
    if (!has_env(env, f.substr(0, f.find('=')))) env.emplace_back(f);
  }
  env.push_back("FAASVISOR_FUNCTION=" + spec.name);
  env.push_back("FAASVISOR_INSTANCE=" + std::string(instance_name));
  return env;
}

}  // namespace faasvisor::backend
