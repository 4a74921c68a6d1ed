// libFuzzer entry point for the HTTP request parser and the JSON string writer.
// Build (not part of the default build):
//   clang++ -std=c++20 -g -O1 -fsanitize=fuzzer,address,undefined -Isrc -I/usr/share/include/llhttp \
//     tests/fuzz/http_parser_fuzz.cc src/http/parser.cc src/http/response.cc <llhttp objects> -o http_parser_fuzz
// The first input byte picks the limits and how the rest is split into feed() calls, so one
// corpus covers whole buffers, byte-at-a-time delivery and the small-limit paths; each input
// is also parsed whole, and both runs must agree.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "http/parser.h"
#include "http/response.h"

namespace {

namespace http = faasvisor::http;

void require(bool ok) {
  if (!ok) std::abort();
}

http::Limits limits_for(uint8_t selector) {
  http::Limits limits;
  if (selector & 0x80) {
    limits.max_header_bytes = 128;
    limits.max_headers = 4;
    limits.max_body_bytes = 16;
  }
  return limits;
}

// Size of the next feed() piece: everything, single bytes, or a small stride.
size_t piece_size(uint8_t selector, size_t remaining) {
  switch (selector & 0x3) {
    case 0: return remaining;
    case 1: return 1;
    default: return std::min<size_t>(remaining, 1 + (selector >> 2 & 0x1F));
  }
}

// What the connection saw, to check that how the bytes were split changes nothing.
struct Outcome {
  std::string requests;  // every completed request, serialized
  int error_status = 0;
  // The status may differ: with several faults in one request, a split can surface another
  // one first (e.g. the 431 of one header too many before the 400 of a bad byte in its name).
  bool same_as(const Outcome& other) const {
    return requests == other.requests && (error_status != 0) == (other.error_status != 0);
  }
};

void append_request(std::string& out, const http::Request& req) {
  out.append(req.method).append(" ").append(req.target).append(req.keep_alive ? " ka " : " close ");
  out.push_back(static_cast<char>('0' + req.http_minor));
  for (const http::Header& h : req.header_list()) out.append("\n").append(h.name).append(": ").append(h.value);
  out.append("\n\n").append(req.body).append("\n--\n");
}

void check_request(const http::Request& req, const http::Limits& limits) {
  require(!req.method.empty());
  require(req.header_count <= limits.max_headers && req.header_count <= req.headers.size());
  require(req.body.size() <= limits.max_body_bytes);
  require(req.http_minor <= 1);
  require(req.path().size() + req.query().size() <= req.target.size());
  std::string out;
  http::write_response(out, 200, req.header_list(), req.body, req.keep_alive);
}

// Plays the connection: keeps the unconsumed tail and calls next() after each request.
Outcome drive(uint8_t selector, std::string_view wire) {
  Outcome outcome;
  http::Limits limits = limits_for(selector);
  http::RequestParser parser(limits);
  std::string buffer;
  size_t pos = 0;
  while (pos < wire.size()) {
    size_t n = piece_size(selector, wire.size() - pos);
    buffer.append(wire.substr(pos, n));
    pos += n;
    while (!buffer.empty()) {
      http::RequestParser::Result r = parser.feed(buffer.data(), buffer.size());
      require(r.consumed <= buffer.size());
      if (r.status == http::RequestParser::Status::error) {
        int s = parser.error().status;
        require(s == 400 || s == 413 || s == 431 || s == 501 || s == 505);
        std::string out;
        http::write_json_error(out, s, parser.error().message, false);
        outcome.error_status = s;
        return outcome;
      }
      if (r.status == http::RequestParser::Status::need_more) {
        require(r.consumed == buffer.size());
        buffer.clear();
        (void)parser.take_continue_request();
        break;
      }
      check_request(parser.request(), limits);
      append_request(outcome.requests, parser.request());
      buffer.erase(0, r.consumed);
      parser.next();
    }
  }
  return outcome;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  std::string_view wire(reinterpret_cast<const char*>(data) + 1, size - 1);
  // Same limits, whole buffer: the result must not depend on how the bytes arrived.
  require(drive(data[0], wire).same_as(drive(static_cast<uint8_t>(data[0] & 0x80), wire)));

  std::string json;
  http::append_json_string(json, wire);
  require(json.size() >= 2 && json.front() == '"' && json.back() == '"');
  return 0;
}
