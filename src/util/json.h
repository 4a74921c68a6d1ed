// JSON output: string escaping, and a small streaming writer for API responses and stored
// records that tracks commas, so handlers read as the document they produce.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace faasvisor {

// Appends s as a JSON string: quoted, '"' and '\\' escaped, control characters (< 0x20) as
// \u00XX, each maximal invalid UTF-8 subsequence replaced by U+FFFD (Unicode 15 sec. 3.9).
void append_json_string(std::string &out, std::string_view s);

class JsonWriter {
 public:
  explicit JsonWriter(std::string &out) : out_(out) {}

  JsonWriter &begin_object() { return open('{'); }
  JsonWriter &end_object() { return close('}'); }
  JsonWriter &begin_array() { return open('['); }
  JsonWriter &end_array() { return close(']'); }
  JsonWriter &key(std::string_view k);
  JsonWriter &string(std::string_view v);
  JsonWriter &number(uint64_t v);
  JsonWriter &number(int64_t v);
  JsonWriter &number(double v);
  JsonWriter &boolean(bool v);
  JsonWriter &raw(std::string_view json);  // an already-encoded value

  template <typename T>
  JsonWriter &field(std::string_view k, const T &v) {
    key(k);
    return value(v);
  }

 private:
  JsonWriter &value(std::string_view v) { return string(v); }
  JsonWriter &value(const std::string &v) { return string(v); }
  JsonWriter &value(const char *v) { return string(v); }
  JsonWriter &value(bool v) { return boolean(v); }
  JsonWriter &value(double v) { return number(v); }
  template <typename I>
  JsonWriter &value(I v) requires std::is_integral_v<I> {
    if constexpr (std::is_signed_v<I>) return number(static_cast<int64_t>(v));
    else return number(static_cast<uint64_t>(v));
  }
  void comma();
  JsonWriter &open(char bracket);   // a nested object or array starts: no member yet
  JsonWriter &close(char bracket);

  std::string &out_;
  std::vector<bool> first_{};  // per open container: no element written yet
  bool after_key_ = false;
};

}  // namespace faasvisor
