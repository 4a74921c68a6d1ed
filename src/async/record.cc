#include "async/record.h"

#include <zlib.h>

#include <cstring>

namespace faasvisor::async {
namespace {

constexpr char kMagic[3] = {'F', 'V', 'J'};

void put_u32(std::string &out, uint32_t v) {
  char b[4] = {static_cast<char>(v), static_cast<char>(v >> 8), static_cast<char>(v >> 16),
               static_cast<char>(v >> 24)};
  out.append(b, 4);
}

void put_u64(std::string &out, uint64_t v) {
  put_u32(out, static_cast<uint32_t>(v));
  put_u32(out, static_cast<uint32_t>(v >> 32));
}

void put_str(std::string &out, std::string_view s) {
  put_u32(out, static_cast<uint32_t>(s.size()));
  out.append(s);
}

uint32_t get_u32(const char *p) {
  const auto *u = reinterpret_cast<const unsigned char *>(p);
  return uint32_t{u[0]} | uint32_t{u[1]} << 8 | uint32_t{u[2]} << 16 | uint32_t{u[3]} << 24;
}

uint32_t checksum(std::string_view payload) {
  return static_cast<uint32_t>(
      crc32(0, reinterpret_cast<const Bytef *>(payload.data()), static_cast<uInt>(payload.size())));
}

// Reads fields off a payload; any read past its end makes ok() false for good.
class Reader {
 public:
  explicit Reader(std::string_view data) : data_(data) {}
  bool ok() const { return ok_; }
  bool at_end() const { return pos_ == data_.size(); }
  uint32_t u32() {
    if (data_.size() - pos_ < 4) return fail32();
    uint32_t v = get_u32(data_.data() + pos_);
    pos_ += 4;
    return v;
  }
  uint64_t u64() {
    uint64_t lo = u32();
    uint64_t hi = u32();
    return lo | hi << 32;
  }
  std::string str() {
    uint32_t n = u32();
    if (!ok_ || data_.size() - pos_ < n) {
      ok_ = false;
      return {};
    }
    std::string s(data_.substr(pos_, n));
    pos_ += n;
    return s;
  }

 private:
  uint32_t fail32() {
    ok_ = false;
    return 0;
  }
  std::string_view data_;
  size_t pos_ = 0;
  bool ok_ = true;
};

void begin_record(std::string &out, RecordType type, size_t *payload_at) {
  out.push_back(static_cast<char>(type));
  out.append(kMagic, 3);
  put_u32(out, 0);  // length and checksum, filled in by end_record
  put_u32(out, 0);
  *payload_at = out.size();
}

void end_record(std::string &out, size_t payload_at) {
  std::string_view payload(out.data() + payload_at, out.size() - payload_at);
  uint32_t len = static_cast<uint32_t>(payload.size());
  uint32_t sum = checksum(payload);
  char *h = out.data() + payload_at - 8;
  for (int i = 0; i < 4; ++i) h[i] = static_cast<char>(len >> (8 * i));
  for (int i = 0; i < 4; ++i) h[4 + i] = static_cast<char>(sum >> (8 * i));
}

bool decode_accept(std::string_view payload, CallRecord &c) {
  Reader r(payload);
  c.seq = r.u64();
  c.accepted_unix_ns = r.u64();
  c.id = r.str();
  c.function = r.str();
  c.path = r.str();
  c.query = r.str();
  c.callback_url = r.str();
  uint32_t n = r.u32();
  // Each header takes at least 8 bytes: a count beyond what the payload can hold is damage.
  if (!r.ok() || n > payload.size() / 8) return false;
  c.headers.resize(n);
  for (http::Header &h : c.headers) {
    h.name = r.str();
    h.value = r.str();
  }
  c.body = r.str();
  return r.ok() && r.at_end();
}

}  // namespace

size_t CallRecord::footprint_bytes() const {
  size_t n = sizeof(CallRecord) + id.size() + function.size() + path.size() + query.size() +
             callback_url.size() + body.size();
  for (const http::Header &h : headers) n += sizeof(http::Header) + h.name.size() + h.value.size();
  return n;
}

void encode_accept(std::string &out, const CallRecord &c) {
  size_t at = 0;
  begin_record(out, RecordType::accept, &at);
  put_u64(out, c.seq);
  put_u64(out, c.accepted_unix_ns);
  put_str(out, c.id);
  put_str(out, c.function);
  put_str(out, c.path);
  put_str(out, c.query);
  put_str(out, c.callback_url);
  put_u32(out, static_cast<uint32_t>(c.headers.size()));
  for (const http::Header &h : c.headers) {
    put_str(out, h.name);
    put_str(out, h.value);
  }
  put_str(out, c.body);
  end_record(out, at);
}

void encode_done(std::string &out, uint64_t seq) {
  size_t at = 0;
  begin_record(out, RecordType::done, &at);
  put_u64(out, seq);
  end_record(out, at);
}

DecodedSegment decode_segment(std::string_view bytes, uint32_t max_record_bytes) {
  DecodedSegment out;
  size_t pos = 0;
  auto damaged = [&](std::string why) {
    out.damage = std::move(why) + " at offset " + std::to_string(pos);
    return out;
  };
  while (pos < bytes.size()) {
    if (bytes.size() - pos < kRecordHeaderBytes) return damaged("truncated record header");
    const char *h = bytes.data() + pos;
    auto type = static_cast<RecordType>(static_cast<uint8_t>(h[0]));
    if (std::memcmp(h + 1, kMagic, 3) != 0 || (type != RecordType::accept && type != RecordType::done))
      return damaged("bad record header");
    uint32_t len = get_u32(h + 4);
    if (len > max_record_bytes) return damaged("record length " + std::to_string(len) + " over the limit");
    if (bytes.size() - pos - kRecordHeaderBytes < len) return damaged("truncated record");
    std::string_view payload = bytes.substr(pos + kRecordHeaderBytes, len);
    if (checksum(payload) != get_u32(h + 8)) return damaged("checksum mismatch");
    if (type == RecordType::accept) {
      CallRecord c;
      if (!decode_accept(payload, c)) return damaged("malformed accept record");
      out.accepted.push_back(std::move(c));
    } else {
      Reader r(payload);
      uint64_t seq = r.u64();
      if (!r.ok() || !r.at_end()) return damaged("malformed done record");
      out.done.push_back(seq);
    }
    pos += kRecordHeaderBytes + len;
    out.good_bytes = pos;
  }
  return out;
}

}  // namespace faasvisor::async
