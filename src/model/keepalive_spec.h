// A function's keep-alive policy as deployed (annotation faasvisor.keepalive), carried by
// FunctionSpec; the policies themselves are pool/keepalive.h.
#pragma once

#include <cstdint>
#include <string_view>

#include "util/result.h"

namespace faasvisor::pool {

struct KeepAliveSpec {
  enum class Kind { fixed, adaptive };
  Kind kind = Kind::fixed;
  // fixed: the keep-alive. adaptive: the keep-alive while the histogram is not representative.
  uint64_t fixed_ms = 600'000;
};

inline constexpr std::string_view kDefaultKeepAlive = "fixed:10m";
inline constexpr uint64_t kMaxKeepAliveMs = 24ull * 3'600'000;

// "fixed:10m", "fixed:90s", "adaptive", "adaptive:5m". Errors say what was expected.
Result<KeepAliveSpec> parse_keepalive(std::string_view text);

}  // namespace faasvisor::pool
