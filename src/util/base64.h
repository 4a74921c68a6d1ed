// Standard base64 (RFC 4648): etcd's JSON gateway carries keys and values so, HTTP Basic
// auth its credentials, and a secret its rawValue.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "util/result.h"

namespace faasvisor {

inline std::string base64_encode(std::string_view in) {
  static constexpr char kAlphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  out.reserve((in.size() + 2) / 3 * 4);
  size_t i = 0;
  for (; i + 3 <= in.size(); i += 3) {
    uint32_t v = (uint32_t(uint8_t(in[i])) << 16) | (uint32_t(uint8_t(in[i + 1])) << 8) | uint8_t(in[i + 2]);
    for (int shift = 18; shift >= 0; shift -= 6) out += kAlphabet[(v >> shift) & 63];
  }
  if (size_t rest = in.size() - i; rest > 0) {
    uint32_t v = uint32_t(uint8_t(in[i])) << 16;
    if (rest == 2) v |= uint32_t(uint8_t(in[i + 1])) << 8;
    out += kAlphabet[(v >> 18) & 63];
    out += kAlphabet[(v >> 12) & 63];
    out += rest == 2 ? kAlphabet[(v >> 6) & 63] : '=';
    out += '=';
  }
  return out;
}

enum class Base64Padding {
  required,  // etcd's gateway and HTTP Basic auth (Go's base64.StdEncoding) always pad
  optional,  // a secret's rawValue: hand-written clients often leave the '=' out
};

// The one decoder (RFC 4648, standard alphabet). Canonical input only: no whitespace, the
// bits left over after the last byte zero, '=' only at the end. The error says what was wrong.
// Decoded bytes may be a password or a secret's value, so what was decoded before an error
// is overwritten before it is freed.
inline Result<std::string> base64_decode(std::string_view in, Base64Padding padding = Base64Padding::required) {
  auto digit = [](char c) -> int {
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+') return 62;
    if (c == '/') return 63;
    return -1;
  };
  size_t pad = 0;
  while (pad < 2 && pad < in.size() && in[in.size() - 1 - pad] == '=') ++pad;
  std::string_view digits = in.substr(0, in.size() - pad);
  if ((pad > 0 || padding == Base64Padding::required) && in.size() % 4 != 0)
    return plain_error("base64", pad > 0 ? "bad padding" : "the length is not a multiple of 4");
  if (digits.size() % 4 == 1) return plain_error("base64", "truncated");
  std::string out;
  out.reserve(digits.size() / 4 * 3 + 2);
  auto fail = [&out](const char *why) -> Result<std::string> {
    for (char &c : out) *static_cast<volatile char *>(&c) = 0;
    return plain_error("base64", why);
  };
  uint32_t acc = 0;
  int bits = 0;
  for (char c : digits) {
    int d = digit(c);
    if (d < 0) return fail(c == '=' ? "'=' before the end" : "a character outside the base64 alphabet");
    acc = (acc << 6) | static_cast<uint32_t>(d);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out += static_cast<char>((acc >> bits) & 0xffu);
    }
  }
  if (bits > 0 && (acc & ((1u << bits) - 1)) != 0) return fail("non-zero trailing bits");
  return out;
}

}  // namespace faasvisor
