#include "model/units.h"

#include <cctype>
#include <cmath>
#include <cstdlib>
#include <string>
#include <utility>

namespace faasvisor {

namespace {

Result<double> parse_number_with_suffix(std::string_view text, std::string_view *suffix) {
  size_t i = 0;
  while (i < text.size() && (std::isdigit(static_cast<unsigned char>(text[i])) || text[i] == '.'))
    ++i;
  if (i == 0) return plain_error("number", "expected digits");
  std::string digits(text.substr(0, i));
  char *end = nullptr;
  double value = std::strtod(digits.c_str(), &end);
  if (end != digits.c_str() + digits.size() || !std::isfinite(value) || value < 0)
    return plain_error("number", "not a number");
  *suffix = text.substr(i);
  return value;
}

}  // namespace

Result<uint64_t> parse_duration_ms(std::string_view text) {
  std::string_view suffix;
  auto number = parse_number_with_suffix(text, &suffix);
  if (!number) return number.error();
  double scale;
  if (suffix == "ms") scale = 1;
  else if (suffix == "s" || suffix.empty()) scale = 1000;
  else if (suffix == "m") scale = 60'000;
  else if (suffix == "h") scale = 3'600'000;
  else return plain_error("duration", "unknown unit");
  double ms = *number * scale;
  if (ms > 1e15) return plain_error("duration", "too large");
  return static_cast<uint64_t>(std::llround(ms));
}

Result<uint64_t> parse_memory_bytes(std::string_view text) {
  std::string_view suffix;
  auto number = parse_number_with_suffix(text, &suffix);
  if (!number) return number.error();
  static const std::pair<std::string_view, double> kUnits[] = {
      {"", 1},          {"k", 1e3},         {"K", 1e3},          {"M", 1e6},
      {"G", 1e9},       {"T", 1e12},        {"Ki", 1024.0},      {"Mi", 1048576.0},
      {"Gi", 1073741824.0}, {"Ti", 1099511627776.0}};
  for (const auto &[unit, scale] : kUnits) {
    if (suffix == unit) {
      double bytes = *number * scale;
      if (bytes > 1e15) return plain_error("memory", "too large");
      return static_cast<uint64_t>(bytes);
    }
  }
  return plain_error("memory", "unknown unit");
}

Result<uint32_t> parse_cpu_millis(std::string_view text) {
  std::string_view suffix;
  auto number = parse_number_with_suffix(text, &suffix);
  if (!number) return number.error();
  double millis;
  if (suffix == "m") millis = *number;
  else if (suffix.empty()) millis = *number * 1000;
  else return plain_error("cpu", "unknown unit");
  if (millis > 1e6) return plain_error("cpu", "too large");
  return static_cast<uint32_t>(std::llround(millis));
}

}  // namespace faasvisor
