#include "api/json.h"

#include <cmath>
#include <cstdio>

#include "http/response.h"

namespace faasvisor::api {

void JsonWriter::comma() {
  if (after_key_) {
    after_key_ = false;
    return;
  }
  if (!first_.empty()) {
    if (!first_.back()) out_ += ',';
    first_.back() = false;
  }
}

JsonWriter &JsonWriter::begin_object() {
  comma();
  out_ += '{';
  first_.push_back(true);
  return *this;
}

JsonWriter &JsonWriter::end_object() {
  out_ += '}';
  first_.pop_back();
  return *this;
}

JsonWriter &JsonWriter::begin_array() {
  comma();
  out_ += '[';
  first_.push_back(true);
  return *this;
}

JsonWriter &JsonWriter::end_array() {
  out_ += ']';
  first_.pop_back();
  return *this;
}

JsonWriter &JsonWriter::key(std::string_view k) {
  comma();
  http::append_json_string(out_, k);
  out_ += ':';
  after_key_ = true;
  return *this;
}

JsonWriter &JsonWriter::string(std::string_view v) {
  comma();
  http::append_json_string(out_, v);
  return *this;
}

JsonWriter &JsonWriter::number(uint64_t v) {
  comma();
  out_ += std::to_string(v);
  return *this;
}

JsonWriter &JsonWriter::number(int64_t v) {
  comma();
  out_ += std::to_string(v);
  return *this;
}

JsonWriter &JsonWriter::number(double v) {
  comma();
  if (!std::isfinite(v)) v = 0;
  char buf[64];
  int n = std::snprintf(buf, sizeof buf, "%.4f", v);
  out_.append(buf, static_cast<size_t>(n));
  return *this;
}

JsonWriter &JsonWriter::boolean(bool v) {
  comma();
  out_ += v ? "true" : "false";
  return *this;
}

JsonWriter &JsonWriter::raw(std::string_view json) {
  comma();
  out_ += json;
  return *this;
}

}  // namespace faasvisor::api
