#include "backend/environment.h"

#include <unistd.h>

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

Status check_adapter(const FunctionSpec &spec, const std::string &adapter_path) {
  if (spec.mode == FunctionSpec::Mode::protocol || access(adapter_path.c_str(), X_OK) == 0) return {};
  return plain_error("annotations.faasvisor.mode", std::string(to_string(spec.mode)) + " needs " + adapter_path +
                                                       ", which is missing on this node");
}

std::vector<std::string> instance_argv(const FunctionSpec &spec, std::string_view adapter_path) {
  if (spec.mode == FunctionSpec::Mode::protocol) return spec.argv;
  std::vector<std::string> argv{std::string(adapter_path)};
  if (spec.mode == FunctionSpec::Mode::http) {
    argv.emplace_back("http");
    argv.push_back(std::to_string(spec.port));
    argv.push_back(spec.ready_path.empty() ? "-" : spec.ready_path);
  } else {
    argv.emplace_back("stdio");
  }
  argv.emplace_back("--");
  argv.insert(argv.end(), spec.argv.begin(), spec.argv.end());
  return argv;
}

}  // namespace faasvisor::backend
