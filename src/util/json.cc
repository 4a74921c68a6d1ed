#include "util/json.h"

#include <cmath>
#include <cstdio>


namespace faasvisor {

namespace {

// Length of the valid UTF-8 sequence starting at s[i], or 0 if it is invalid there. On 0,
// *invalid_len is the length of the maximal subpart to replace with one U+FFFD (at least 1).
size_t utf8_sequence_length(std::string_view s, size_t i, size_t* invalid_len) {
  auto byte = [&](size_t k) { return static_cast<uint8_t>(s[k]); };
  uint8_t lead = byte(i);
  size_t need;            // continuation bytes after the lead
  uint8_t lo = 0x80, hi = 0xBF;  // allowed range of the first continuation byte
  if (lead >= 0xC2 && lead <= 0xDF) {
    need = 1;
  } else if (lead >= 0xE0 && lead <= 0xEF) {
    need = 2;
    if (lead == 0xE0) lo = 0xA0;  // overlong
    if (lead == 0xED) hi = 0x9F;  // UTF-16 surrogates
  } else if (lead >= 0xF0 && lead <= 0xF4) {
    need = 3;
    if (lead == 0xF0) lo = 0x90;  // overlong
    if (lead == 0xF4) hi = 0x8F;  // above U+10FFFF
  } else {
    *invalid_len = 1;  // stray continuation byte, C0/C1 overlong lead, or F5..FF
    return 0;
  }
  for (size_t k = 1; k <= need; ++k) {
    if (i + k >= s.size()) {
      *invalid_len = k;  // truncated at the end of the input
      return 0;
    }
    uint8_t b = byte(i + k);
    bool ok = k == 1 ? (b >= lo && b <= hi) : (b >= 0x80 && b <= 0xBF);
    if (!ok) {
      *invalid_len = k;
      return 0;
    }
  }
  return need + 1;
}

bool needs_json_attention(uint8_t b) { return b < 0x20 || b == '"' || b == '\\' || b >= 0x80; }

}  // namespace

void append_json_string(std::string& out, std::string_view s) {
  static constexpr char kHex[] = "0123456789abcdef";
  out.reserve(out.size() + s.size() + 2);
  out.push_back('"');
  size_t run_start = 0;  // plain ASCII is copied in runs, not byte by byte
  size_t i = 0;
  while (i < s.size()) {
    uint8_t b = static_cast<uint8_t>(s[i]);
    if (!needs_json_attention(b)) {
      ++i;
      continue;
    }
    if (b >= 0x80) {
      size_t invalid_len = 0;
      size_t valid_len = utf8_sequence_length(s, i, &invalid_len);
      if (valid_len != 0) {
        i += valid_len;  // valid multi-byte sequence: part of the run
        continue;
      }
      out.append(s.substr(run_start, i - run_start));
      out.append("\xEF\xBF\xBD");  // U+FFFD
      i += invalid_len;
      run_start = i;
      continue;
    }
    out.append(s.substr(run_start, i - run_start));
    if (b == '"' || b == '\\') {
      out.push_back('\\');
      out.push_back(static_cast<char>(b));
    } else {
      char escape[6] = {'\\', 'u', '0', '0', kHex[b >> 4], kHex[b & 0xF]};
      out.append(escape, sizeof escape);
    }
    ++i;
    run_start = i;
  }
  out.append(s.substr(run_start));
  out.push_back('"');
}


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

JsonWriter &JsonWriter::open(char bracket) {
  comma();
  out_ += bracket;
  first_.push_back(true);
  return *this;
}

JsonWriter &JsonWriter::close(char bracket) {
  out_ += bracket;
  first_.pop_back();
  return *this;
}

JsonWriter &JsonWriter::key(std::string_view k) {
  comma();
  append_json_string(out_, k);
  out_ += ':';
  after_key_ = true;
  return *this;
}

JsonWriter &JsonWriter::string(std::string_view v) {
  comma();
  append_json_string(out_, v);
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

}  // namespace faasvisor
