#include "model/keepalive_spec.h"

#include <string>

#include "model/units.h"

namespace faasvisor::pool {

namespace {

constexpr std::string_view kExpected =
    "expected \"fixed:DURATION\" (such as \"fixed:10m\"), "
    "\"adaptive\" or \"adaptive:DURATION\"";

Result<uint64_t> parse_keepalive_duration(std::string_view text) {
  if (text.empty()) return plain_error("keepalive", "missing duration after ':'");
  auto ms = parse_duration_ms(text);
  if (!ms)
    return plain_error("keepalive",
                       "bad duration \"" + std::string(text) + "\": " + ms.error().message());
  if (*ms > kMaxKeepAliveMs) return plain_error("keepalive", "duration longer than 24h");
  return *ms;
}

}  // namespace

Result<KeepAliveSpec> parse_keepalive(std::string_view text) {
  size_t colon = text.find(':');
  std::string_view kind = text.substr(0, colon);
  KeepAliveSpec spec;
  if (kind == "fixed") {
    spec.kind = KeepAliveSpec::Kind::fixed;
    if (colon == std::string_view::npos) return plain_error("keepalive", std::string(kExpected));
  } else if (kind == "adaptive") {
    spec.kind = KeepAliveSpec::Kind::adaptive;
    if (colon == std::string_view::npos) return spec;  // fallback: the default fixed_ms
  } else {
    return plain_error("keepalive",
                       "unknown policy \"" + std::string(kind) + "\": " + std::string(kExpected));
  }
  auto ms = parse_keepalive_duration(text.substr(colon + 1));
  if (!ms) return ms.error();
  spec.fixed_ms = *ms;
  return spec;
}

}  // namespace faasvisor::pool
