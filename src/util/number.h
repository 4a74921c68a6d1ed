// Whole numbers in text: the one parser for command-line values, labels, headers and records.
#pragma once

#include <charconv>
#include <cstdint>
#include <optional>
#include <string_view>

namespace faasvisor {

// Decimal digits only (no sign, no spaces), and no more than fits in 64 bits.
inline std::optional<uint64_t> parse_decimal(std::string_view text) {
  uint64_t value = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (text.empty() || ec != std::errc() || end != text.data() + text.size()) return std::nullopt;
  return value;
}

}  // namespace faasvisor
