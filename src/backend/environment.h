// The environment every backend gives an instance: an OCI image's Env, the function's envVars, fallbacks for
// PATH, HOME and LANG where the function sets none, and FAASVISOR_FUNCTION/INSTANCE.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "api/deploy.h"

namespace faasvisor::backend {

std::vector<std::string> instance_environment(const FunctionSpec &spec,
                                              std::string_view instance_name);

}  // namespace faasvisor::backend
