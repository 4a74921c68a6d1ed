// Quantities as OpenFaaS writes them in a deployment ("128Mi", "500m", "30s"), parsed. Pure.
#pragma once

#include <cstdint>
#include <string_view>

#include "util/result.h"

namespace faasvisor {

Result<uint64_t> parse_duration_ms(std::string_view text);  // "500ms", "30s", "2m", "1h", "1.5s"
Result<uint64_t> parse_memory_bytes(std::string_view text);  // "128Mi", "1G", "1048576"
Result<uint32_t> parse_cpu_millis(std::string_view text);    // "1", "0.5", "500m"

}  // namespace faasvisor
