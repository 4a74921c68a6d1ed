#include "model/function_spec.h"

namespace faasvisor {

const char *to_string(FunctionSpec::Mode mode) {
  switch (mode) {
    case FunctionSpec::Mode::protocol: return "protocol";
    case FunctionSpec::Mode::http: return "http";
    case FunctionSpec::Mode::stdio: return "stdio";
  }
  return "?";
}

}  // namespace faasvisor
