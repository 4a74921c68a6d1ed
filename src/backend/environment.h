// The environment and command line every backend gives an instance: an OCI image's Env, the function's envVars, fallbacks for
// PATH, HOME and LANG where the function sets none, and FAASVISOR_FUNCTION/INSTANCE.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "model/function_spec.h"
#include "util/result.h"

namespace faasvisor::backend {

std::vector<std::string> instance_environment(const FunctionSpec &spec,
                                              std::string_view instance_name);

// The command an instance runs: the function's own for the protocol mode, else
// faasvisor-adapter (at adapter_path as the instance sees it) running it (docs/modes.md).
// An http or stdio function needs faasvisor-adapter installed beside the daemon.
Status check_adapter(const FunctionSpec &spec, const std::string &adapter_path);
std::vector<std::string> instance_argv(const FunctionSpec &spec, std::string_view adapter_path);

}  // namespace faasvisor::backend
