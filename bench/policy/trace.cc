#include "trace.h"

#include <algorithm>
#include <charconv>
#include <cstdio>
#include <string_view>
#include <unordered_map>

namespace faasvisor::bench {

namespace {

bool parse_u64(std::string_view text, uint64_t *out) {
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), *out);
  return ec == std::errc() && end == text.data() + text.size();
}

// Splits "a,b,c" into exactly three fields.
bool split3(std::string_view line, std::string_view fields[3]) {
  for (int i = 0; i < 2; ++i) {
    size_t comma = line.find(',');
    if (comma == std::string_view::npos) return false;
    fields[i] = line.substr(0, comma);
    line.remove_prefix(comma + 1);
  }
  fields[2] = line;
  return fields[2].find(',') == std::string_view::npos;
}

}  // namespace

bool load_trace(const std::string &path, Trace *trace, std::string *error) {
  FILE *file = std::fopen(path.c_str(), "r");
  if (file == nullptr) {
    *error = path + ": cannot open";
    return false;
  }
  std::unordered_map<std::string, uint32_t> ids;
  char buf[4096];
  uint64_t line_no = 0;
  bool ok = true;
  while (std::fgets(buf, sizeof buf, file) != nullptr) {
    ++line_no;
    std::string_view line(buf);
    while (!line.empty() && (line.back() == '\n' || line.back() == '\r')) line.remove_suffix(1);
    if (line.empty()) continue;
    if (line_no == 1 && line.substr(0, 9) == "function,") continue;  // header
    std::string_view f[3];
    TraceInvocation inv{};
    if (!split3(line, f) || f[0].empty() || !parse_u64(f[1], &inv.arrival_ms) ||
        !parse_u64(f[2], &inv.duration_ms)) {
      *error = path + ":" + std::to_string(line_no) +
               ": expected function,arrival_ms,duration_ms (integers)";
      ok = false;
      break;
    }
    auto [it, added] = ids.try_emplace(std::string(f[0]), static_cast<uint32_t>(ids.size()));
    if (added) trace->functions.push_back(it->first);
    inv.function = it->second;
    trace->end_ms = std::max(trace->end_ms, inv.arrival_ms + inv.duration_ms);
    trace->invocations.push_back(inv);
  }
  std::fclose(file);
  std::stable_sort(trace->invocations.begin(), trace->invocations.end(),
                   [](const TraceInvocation &a, const TraceInvocation &b) {
                     return a.arrival_ms < b.arrival_ms;
                   });
  return ok;
}

}  // namespace faasvisor::bench
