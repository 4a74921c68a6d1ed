// Tests for the llhttp adapter (http/parser.h) and the response writer (http/response.h).
#include <doctest/doctest.h>

#include <cstdint>
#include <random>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "http/parser.h"
#include "http/response.h"

namespace http = faasvisor::http;
using Status = http::RequestParser::Status;

namespace {

// A Request's observable content, copied out so requests can be compared after next().
struct Snapshot {
  std::string method;
  std::string target;
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;
  bool keep_alive = false;
  int http_minor = -1;
  bool operator==(const Snapshot&) const = default;
};

Snapshot snapshot(const http::Request& r) {
  Snapshot s{r.method, r.target, {}, r.body, r.keep_alive, r.http_minor};
  for (const http::Header& h : r.header_list()) s.headers.emplace_back(h.name, h.value);
  return s;
}

// What a connection would see after feeding `wire` split into pieces.
struct Outcome {
  std::vector<Snapshot> requests;
  int error_status = 0;
  std::string error_message;
  int continue_requests = 0;
  bool in_message_at_end = false;
  bool consumed_ok = true;  // every feed() respected its consumed contract
  bool operator==(const Outcome&) const = default;
};

// Plays the connection: keeps the unconsumed tail, calls next() after each request, and
// feeds the tail again. `piece_sizes` splits `wire` (the remainder goes in one last piece).
Outcome drive(http::RequestParser& parser, std::string_view wire, const std::vector<size_t>& piece_sizes) {
  Outcome out;
  std::string buffer;
  size_t pos = 0;
  size_t piece = 0;
  while (pos < wire.size()) {
    size_t n = piece < piece_sizes.size() ? std::min(piece_sizes[piece], wire.size() - pos) : wire.size() - pos;
    ++piece;
    buffer.append(wire.substr(pos, n));
    pos += n;
    while (!buffer.empty()) {
      http::RequestParser::Result r = parser.feed(buffer.data(), buffer.size());
      if (r.consumed > buffer.size()) out.consumed_ok = false;
      if (r.status == Status::error) {
        out.error_status = parser.error().status;
        out.error_message = parser.error().message;
        return out;
      }
      if (r.status == Status::need_more) {
        if (r.consumed != buffer.size()) out.consumed_ok = false;
        buffer.clear();
        if (parser.take_continue_request()) ++out.continue_requests;
        break;
      }
      out.requests.push_back(snapshot(parser.request()));
      buffer.erase(0, r.consumed);
      parser.next();
    }
  }
  out.in_message_at_end = parser.in_message();
  return out;
}

Outcome drive_whole(std::string_view wire, const http::Limits& limits = {}) {
  http::RequestParser parser(limits);
  return drive(parser, wire, {});
}

Outcome drive_bytewise(std::string_view wire, const http::Limits& limits = {}) {
  http::RequestParser parser(limits);
  return drive(parser, wire, std::vector<size_t>(wire.size(), 1));
}

// Feeds `wire` whole, one byte at a time, and in every 2-way split; all must agree.
void check_split_invariance(std::string_view wire, const http::Limits& limits = {}) {
  Outcome whole = drive_whole(wire, limits);
  CHECK(whole.consumed_ok);
  Outcome bytewise = drive_bytewise(wire, limits);
  CHECK(bytewise.requests == whole.requests);
  CHECK(bytewise.error_status == whole.error_status);
  CHECK(bytewise.consumed_ok);
  for (size_t cut = 1; cut < wire.size(); ++cut) {
    http::RequestParser parser(limits);
    Outcome split = drive(parser, wire, {cut});
    if (!(split.requests == whole.requests) || split.error_status != whole.error_status || !split.consumed_ok) {
      FAIL_CHECK("split at byte " << cut << " differs for: " << std::string(wire));
      return;
    }
  }
}

std::string repeat(std::string_view s, size_t n) {
  std::string out;
  for (size_t i = 0; i < n; ++i) out.append(s);
  return out;
}

const char kPostWithHeaders[] =
    "POST /function/echo/a/b?x=1&y=2 HTTP/1.1\r\n"
    "Host: example.com\r\n"
    "User-Agent: test/1.0\r\n"
    "X-Padded:   spaced value \t \r\n"
    "Content-Type: text/plain\r\n"
    "Content-Length: 11\r\n"
    "\r\n"
    "hello world";

const char kChunked[] =
    "POST /function/sum HTTP/1.1\r\n"
    "Host: x\r\n"
    "Transfer-Encoding: chunked\r\n"
    "\r\n"
    "5;name=\"quoted value\"\r\n"
    "hello\r\n"
    "1;flag\r\n"
    " \r\n"
    "A\r\n"
    "0123456789\r\n"
    "0\r\n"
    "X-Trailer: one\r\n"
    "X-Other: two\r\n"
    "\r\n";

}  // namespace

TEST_CASE("a simple GET parses into method, target, version, headers and keep-alive") {
  http::RequestParser parser(http::Limits{});
  std::string wire = "GET /function/hello HTTP/1.1\r\nHost: localhost:8080\r\nAccept: */*\r\n\r\n";
  http::RequestParser::Result r = parser.feed(wire.data(), wire.size());
  REQUIRE(r.status == Status::complete);
  CHECK(r.consumed == wire.size());
  const http::Request& req = parser.request();
  CHECK(req.method == "GET");
  CHECK(req.target == "/function/hello");
  CHECK(req.path() == "/function/hello");
  CHECK(req.query().empty());
  CHECK(req.http_minor == 1);
  CHECK(req.keep_alive);
  CHECK(req.body.empty());
  REQUIRE(req.header_list().size() == 2);
  CHECK(req.header_list()[0].name == "Host");
  CHECK(req.header_list()[0].value == "localhost:8080");
  CHECK(req.header_list()[1].name == "Accept");
  CHECK(req.header_list()[1].value == "*/*");
  CHECK_FALSE(parser.in_message());
}

TEST_CASE("path and query split at the first question mark") {
  auto parse_target = [](std::string_view target) {
    http::Request req;
    req.target = target;
    return std::pair{std::string(req.path()), std::string(req.query())};
  };
  CHECK(parse_target("/function/echo/a/b?x=1&y=2") == std::pair<std::string, std::string>{"/function/echo/a/b", "x=1&y=2"});
  CHECK(parse_target("/plain") == std::pair<std::string, std::string>{"/plain", ""});
  CHECK(parse_target("/empty?") == std::pair<std::string, std::string>{"/empty", ""});
  CHECK(parse_target("/two?a=1?b=2") == std::pair<std::string, std::string>{"/two", "a=1?b=2"});
  CHECK(parse_target("?q") == std::pair<std::string, std::string>{"", "q"});

  Outcome out = drive_whole("GET /f/x?k=v HTTP/1.1\r\nHost: x\r\n\r\n");
  REQUIRE(out.requests.size() == 1);
  CHECK(out.requests[0].target == "/f/x?k=v");
}

TEST_CASE("find() matches header names case-insensitively, first match wins, values are trimmed") {
  http::RequestParser parser(http::Limits{});
  std::string wire = "GET / HTTP/1.1\r\nHost: x\r\nX-Dup: first\r\ncontent-TYPE: a/b  \r\nx-dup: second\r\n\r\n";
  REQUIRE(parser.feed(wire.data(), wire.size()).status == Status::complete);
  const http::Request& req = parser.request();
  REQUIRE(req.find("Content-Type") != nullptr);
  CHECK(req.find("Content-Type")->value == "a/b");
  REQUIRE(req.find("X-DUP") != nullptr);
  CHECK(req.find("X-DUP")->value == "first");
  CHECK(req.find("missing") == nullptr);
  CHECK(req.find("X-Du") == nullptr);
}

TEST_CASE("a request split at every byte boundary gives the same Request") {
  check_split_invariance(kPostWithHeaders);
  Outcome out = drive_whole(kPostWithHeaders);
  REQUIRE(out.requests.size() == 1);
  const Snapshot& s = out.requests[0];
  CHECK(s.method == "POST");
  CHECK(s.target == "/function/echo/a/b?x=1&y=2");
  CHECK(s.body == "hello world");
  REQUIRE(s.headers.size() == 5);
  CHECK(s.headers[2] == std::pair<std::string, std::string>{"X-Padded", "spaced value"});
  CHECK(s.headers[4] == std::pair<std::string, std::string>{"Content-Length", "11"});
}

TEST_CASE("pipelined requests in one buffer come out one per feed with exact consumed counts") {
  std::string first = "GET /a HTTP/1.1\r\nHost: x\r\n\r\n";
  std::string second = "POST /b HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nxyz";
  std::string third = "GET /c?q HTTP/1.1\r\nHost: x\r\n\r\n";
  std::string wire = first + second + third;

  http::RequestParser parser(http::Limits{});
  size_t offset = 0;
  http::RequestParser::Result r = parser.feed(wire.data() + offset, wire.size() - offset);
  REQUIRE(r.status == Status::complete);
  CHECK(r.consumed == first.size());
  CHECK(parser.request().target == "/a");
  offset += r.consumed;
  parser.next();

  r = parser.feed(wire.data() + offset, wire.size() - offset);
  REQUIRE(r.status == Status::complete);
  CHECK(r.consumed == second.size());
  CHECK(parser.request().target == "/b");
  CHECK(parser.request().body == "xyz");
  CHECK(parser.request().header_list().size() == 2);
  offset += r.consumed;
  parser.next();

  r = parser.feed(wire.data() + offset, wire.size() - offset);
  REQUIRE(r.status == Status::complete);
  CHECK(r.consumed == third.size());
  CHECK(parser.request().path() == "/c");
  CHECK(parser.request().header_list().size() == 1);
  parser.next();

  check_split_invariance(wire);
  CHECK(drive_whole(wire).requests.size() == 3);
}

TEST_CASE("blank lines between pipelined requests are skipped") {
  Outcome out = drive_whole("GET /a HTTP/1.1\r\nHost: x\r\n\r\n\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\n\r\n");
  REQUIRE(out.requests.size() == 2);
  CHECK(out.requests[1].target == "/b");
}

TEST_CASE("keep-alive follows HTTP/1.0 and HTTP/1.1 rules and the Connection header") {
  auto keep_alive = [](std::string_view wire) {
    Outcome out = drive_whole(wire);
    REQUIRE(out.requests.size() == 1);
    return out.requests[0].keep_alive;
  };
  CHECK_FALSE(keep_alive("GET / HTTP/1.0\r\n\r\n"));
  CHECK(keep_alive("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"));
  CHECK(keep_alive("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n"));
  CHECK(keep_alive("GET / HTTP/1.1\r\nHost: x\r\n\r\n"));
  CHECK_FALSE(keep_alive("GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"));
  CHECK_FALSE(keep_alive("GET / HTTP/1.1\r\nHost: x\r\nConnection: Close\r\n\r\n"));
  CHECK(drive_whole("GET / HTTP/1.0\r\n\r\n").requests[0].http_minor == 0);
}

TEST_CASE("bytes after a request without keep-alive are discarded, never parsed as a request") {
  Outcome out = drive_whole("GET /a HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\n\r\n");
  REQUIRE(out.requests.size() == 1);
  CHECK_FALSE(out.requests[0].keep_alive);
  CHECK(out.error_status == 0);
}

TEST_CASE("a Content-Length body is read exactly, also when it arrives in pieces") {
  http::RequestParser parser(http::Limits{});
  std::string head = "PUT /f HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n";
  http::RequestParser::Result r = parser.feed(head.data(), head.size());
  CHECK(r.status == Status::need_more);
  CHECK(r.consumed == head.size());
  CHECK(parser.in_message());
  r = parser.feed("01234", 5);
  CHECK(r.status == Status::need_more);
  std::string rest = "56789GET";
  r = parser.feed(rest.data(), rest.size());
  REQUIRE(r.status == Status::complete);
  CHECK(r.consumed == 5);
  CHECK(parser.request().body == "0123456789");
  CHECK_FALSE(parser.in_message());
}

TEST_CASE("a chunked body is de-chunked; extensions and trailers are dropped; any split gives the same") {
  Outcome out = drive_whole(kChunked);
  REQUIRE(out.requests.size() == 1);
  CHECK(out.error_status == 0);
  CHECK(out.requests[0].body == "hello 0123456789");
  REQUIRE(out.requests[0].headers.size() == 2);  // Host, Transfer-Encoding; no trailers
  CHECK(out.requests[0].headers[1].first == "Transfer-Encoding");
  check_split_invariance(kChunked);
  check_split_invariance(std::string(kChunked) + kPostWithHeaders + kChunked);
}

TEST_CASE("413 from Content-Length is reported right after the headers, before any body") {
  http::Limits limits;
  limits.max_body_bytes = 10;
  Outcome ok = drive_whole("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n0123456789", limits);
  CHECK(ok.error_status == 0);
  REQUIRE(ok.requests.size() == 1);

  http::RequestParser parser(limits);
  std::string head = "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 11\r\n\r\n";
  http::RequestParser::Result r = parser.feed(head.data(), head.size());
  CHECK(r.status == Status::error);
  CHECK(parser.error().status == 413);
  CHECK(parser.feed("x", 1).status == Status::error);  // stays failed

  http::RequestParser huge(http::Limits{});
  std::string huge_head = "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999\r\n\r\n";
  CHECK(huge.feed(huge_head.data(), huge_head.size()).status == Status::error);
  CHECK(huge.error().status == 413);
}

TEST_CASE("413 from a chunked body: an oversized chunk size or accumulated chunks") {
  http::Limits limits;
  limits.max_body_bytes = 10;
  std::string head = "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n";
  Outcome at_limit = drive_whole(head + "5\r\n01234\r\n5\r\n56789\r\n0\r\n\r\n", limits);
  CHECK(at_limit.error_status == 0);
  REQUIRE(at_limit.requests.size() == 1);
  CHECK(at_limit.requests[0].body == "0123456789");

  Outcome grown = drive_bytewise(head + "5\r\n01234\r\n6\r\n567890\r\n0\r\n\r\n", limits);
  CHECK(grown.error_status == 413);
  Outcome one_big = drive_whole(head + "b\r\n", limits);
  CHECK(one_big.error_status == 413);
  Outcome enormous = drive_whole(head + "ffffffffffff\r\n", limits);
  CHECK(enormous.error_status == 413);
}

TEST_CASE("431 for a head over max_header_bytes, counted exactly whatever the split") {
  std::string wire = "GET / HTTP/1.1\r\nHost: a\r\nX-Long: " + std::string(100, 'v') + "\r\n\r\n";
  http::Limits exact;
  exact.max_header_bytes = static_cast<uint32_t>(wire.size());
  CHECK(drive_whole(wire, exact).error_status == 0);
  CHECK(drive_bytewise(wire, exact).error_status == 0);
  http::Limits one_short;
  one_short.max_header_bytes = static_cast<uint32_t>(wire.size() - 1);
  CHECK(drive_whole(wire, one_short).error_status == 431);
  CHECK(drive_bytewise(wire, one_short).error_status == 431);
  check_split_invariance(wire, one_short);

  // The default limit, with an endless header: refused without parsing far beyond the limit.
  http::RequestParser parser(http::Limits{});
  std::string huge = "GET / HTTP/1.1\r\nHost: x\r\nX-Huge: " + std::string(64 * 1024, 'a');
  http::RequestParser::Result r = parser.feed(huge.data(), huge.size());
  CHECK(r.status == Status::error);
  CHECK(parser.error().status == 431);
  CHECK(r.consumed <= 16 * 1024 + 1);
  CHECK(parser.request().headers[0].value.size() <= 16 * 1024);
}

TEST_CASE("431 for more than max_headers headers") {
  http::Limits limits;
  limits.max_headers = 5;
  // Host is one of them.
  std::string five = "GET / HTTP/1.1\r\nHost: x\r\n" + repeat("A: b\r\n", 4) + "\r\n";
  std::string six = "GET / HTTP/1.1\r\nHost: x\r\n" + repeat("A: b\r\n", 5) + "\r\n";
  CHECK(drive_whole(five, limits).error_status == 0);
  Outcome out = drive_whole(six, limits);
  CHECK(out.error_status == 431);
  CHECK(out.error_message == "too many request headers");
  CHECK(drive_whole("GET / HTTP/1.1\r\nHost: x\r\n" + repeat("A: b\r\n", 101) + "\r\n").error_status == 431);
}

TEST_CASE("trailers count against the header limit") {
  http::Limits limits;
  limits.max_header_bytes = 200;
  std::string wire = "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n" +
                     repeat("X-T: " + std::string(20, 't') + "\r\n", 20) + "\r\n";
  CHECK(drive_whole(wire, limits).error_status == 431);
}

TEST_CASE("400 for malformed requests, with a message that says what is wrong") {
  auto error_of = [](std::string_view wire) {
    Outcome out = drive_whole(wire);
    CHECK(out.requests.empty());
    return std::pair{out.error_status, out.error_message};
  };
  CHECK(error_of("\x01\x02garbage\r\n\r\n").first == 400);
  CHECK(error_of("GET / HTTP/1.1\r\nHost: x\r\nBad Header: x\r\n\r\n").second.starts_with("invalid header token"));
  CHECK(error_of("GET / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding : chunked\r\n\r\n").second.starts_with("invalid header token"));
  CHECK(error_of("GET / HTTP/1.1\r\nHost: x\r\n: no name\r\n\r\n").first == 400);
  CHECK(error_of("GET / HTTP/1.1\r\nHost: x\r\nX: a\x01z\r\n\r\n").first == 400);
  CHECK(error_of("GET / HTTP/1.1\r\nHost: a\n\n").first == 400);

  auto bad_chunk = error_of("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n");
  CHECK(bad_chunk.first == 400);
  CHECK(bad_chunk.second.starts_with("invalid chunk size"));

  auto cl_te = error_of("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n");
  CHECK(cl_te.first == 400);
  CHECK(cl_te.second.starts_with("unexpected Content-Length"));
  CHECK(error_of("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n").first == 400);
  CHECK(error_of("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd").first == 400);
  CHECK(error_of("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc").first == 400);
  CHECK(error_of("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n").first == 400);
  CHECK(error_of("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1x\r\n\r\n").first == 400);
  CHECK(error_of("GET /a b HTTP/1.1\r\nHost: x\r\n\r\n").first == 400);
}

TEST_CASE("a request line without an HTTP version is refused with 400, not served as HTTP/0.9") {
  Outcome out = drive_whole("GET /healthz\r\n\r\n");
  CHECK(out.requests.empty());
  CHECK(out.error_status == 400);
  CHECK(out.error_message == "malformed request line (no HTTP version)");
  check_split_invariance("GET /healthz\r\nHost: x\r\n\r\n");
}

TEST_CASE("HTTP/1.1 needs exactly one Host header (RFC 9112 section 3.2); HTTP/1.0 none") {
  Outcome none = drive_whole("GET / HTTP/1.1\r\nAccept: */*\r\n\r\n");
  CHECK(none.requests.empty());
  CHECK(none.error_status == 400);
  CHECK(none.error_message == "missing Host header (HTTP/1.1 requires one)");
  Outcome two = drive_whole("GET / HTTP/1.1\r\nHost: a\r\nhost: b\r\n\r\n");
  CHECK(two.error_status == 400);
  CHECK(two.error_message == "more than one Host header");
  CHECK(drive_whole("GET / HTTP/1.1\r\nhOsT: a\r\n\r\n").error_status == 0);
  CHECK(drive_whole("GET / HTTP/1.1\r\nHost:\r\n\r\n").error_status == 0);  // empty is allowed
  Outcome old = drive_whole("GET / HTTP/1.0\r\n\r\n");
  CHECK(old.error_status == 0);
  CHECK(old.requests.size() == 1);
}

TEST_CASE("obs-fold (a header line continued on the next) is refused with 400 (RFC 9112 section 5.2)") {
  for (const char* wire : {"GET / HTTP/1.1\r\nHost: x\r\nX-Folded: a\r\n b\r\n\r\n",
                           "GET / HTTP/1.1\r\nHost: x\r\nX-Folded: a\r\n\tb\r\n\r\n",
                           "GET / HTTP/1.1\r\nHost: x\r\nX-Folded:\r\n b\r\n\r\n",
                           "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n 4\r\n\r\nabcd"}) {
    Outcome out = drive_whole(wire);
    CHECK_MESSAGE(out.requests.empty(), wire);
    CHECK_MESSAGE(out.error_status == 400, wire);
    CHECK_MESSAGE(out.error_message == "obsolete line folding in a header (obs-fold) is not accepted", wire);
    check_split_invariance(wire);
  }
}

TEST_CASE("request lines of other protocols llhttp knows (RTSP, ICE) are refused with 400") {
  CHECK(drive_whole("GET / RTSP/1.0\r\n\r\n").error_status == 400);
  CHECK(drive_whole("DESCRIBE / RTSP/1.0\r\n\r\n").error_status == 400);
  CHECK(drive_whole("SOURCE / ICE/1.0\r\n\r\n").error_status == 400);
  CHECK(drive_bytewise("GET / RTSP/1.0\r\n\r\n").error_status == 400);
  check_split_invariance("GET / RTSP/1.0\r\n\r\n");
  check_split_invariance("GET / HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.0\r\n\r\n");
}

TEST_CASE("501 for a Transfer-Encoding other than chunked and for CONNECT") {
  auto error_of = [](std::string_view wire) { return drive_whole(wire).error_status; };
  CHECK(error_of("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n") == 501);
  CHECK(error_of("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n") == 501);
  CHECK(error_of("CONNECT example.com:443 HTTP/1.1\r\nHost: example.com\r\n\r\n") == 501);
  CHECK(error_of("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: CHUNKED\r\n\r\n0\r\n\r\n") == 0);
}

TEST_CASE("505 for HTTP versions other than 1.0 and 1.1") {
  CHECK(drive_whole("GET / HTTP/2.0\r\n\r\n").error_status == 505);
  CHECK(drive_whole("GET / HTTP/1.2\r\n\r\n").error_status == 505);
  CHECK(drive_whole("GET / HTTP/0.9\r\n\r\n").error_status == 505);
  CHECK(drive_whole("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").error_status == 505);
}

TEST_CASE("an Upgrade offer is ignored and the request is served as HTTP/1.1") {
  std::string wire =
      "GET /f HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA\r\n\r\n"
      "GET /g HTTP/1.1\r\nHost: x\r\n\r\n";
  Outcome out = drive_whole(wire);
  CHECK(out.error_status == 0);
  REQUIRE(out.requests.size() == 2);
  CHECK(out.requests[1].target == "/g");
}

TEST_CASE("Expect: 100-continue asks for a 100 Continue once, while the body is still to come") {
  http::RequestParser parser(http::Limits{});
  std::string head = "POST /f HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nExpect: 100-Continue\r\n\r\n";
  CHECK_FALSE(parser.take_continue_request());
  REQUIRE(parser.feed(head.data(), head.size()).status == Status::need_more);
  CHECK(parser.take_continue_request());
  CHECK_FALSE(parser.take_continue_request());
  REQUIRE(parser.feed("body", 4).status == Status::complete);
  CHECK(parser.request().body == "body");
  parser.next();

  // Body already here: nothing to wait for.
  std::string whole = head + "body";
  REQUIRE(parser.feed(whole.data(), whole.size()).status == Status::complete);
  CHECK_FALSE(parser.take_continue_request());
  parser.next();

  // Never to HTTP/1.0, never without a body.
  CHECK(drive_whole("POST / HTTP/1.0\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n").continue_requests == 0);
  CHECK(drive_whole("GET / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n\r\n").continue_requests == 0);
  CHECK(drive_whole("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nExpect: 100-continue\r\n\r\n").continue_requests == 1);

  // Refused up front: no 100 Continue, the client gets the 413 instead of sending the body.
  http::Limits small;
  small.max_body_bytes = 2;
  http::RequestParser refusing(small);
  CHECK(refusing.feed(head.data(), head.size()).status == Status::error);
  CHECK_FALSE(refusing.take_continue_request());
}

TEST_CASE("next() keeps the capacity of the request's buffers") {
  http::RequestParser parser(http::Limits{});
  std::string wire = "POST /function/with/a/long/enough/target/name HTTP/1.1\r\nHost: x\r\n"
                     "X-First-Header-Name: first header value that is long\r\n"
                     "X-Second-Header-Name: second header value that is long\r\n"
                     "Content-Length: 2000\r\n\r\n" +
                     std::string(2000, 'b');
  REQUIRE(parser.feed(wire.data(), wire.size()).status == Status::complete);
  http::Request& req = parser.request();
  const char* body_data = req.body.data();
  const char* target_data = req.target.data();
  const http::Header* headers_data = req.headers.data();
  const char* value_data = req.headers[1].value.data();
  size_t header_capacity = req.headers.capacity();
  parser.next();
  CHECK(req.header_list().empty());
  CHECK(req.body.empty());

  REQUIRE(parser.feed(wire.data(), wire.size()).status == Status::complete);
  CHECK(req.body.data() == body_data);
  CHECK(req.target.data() == target_data);
  CHECK(req.headers.data() == headers_data);
  CHECK(req.headers.capacity() == header_capacity);
  CHECK(req.headers[1].value.data() == value_data);
  CHECK(req.header_list().size() == 4);

  // A shorter request reuses the same storage and does not see stale headers.
  parser.next();
  std::string small = "GET / HTTP/1.1\r\nHost: x\r\nA: 1\r\n\r\n";
  REQUIRE(parser.feed(small.data(), small.size()).status == Status::complete);
  REQUIRE(req.header_list().size() == 2);
  CHECK(req.find("X-Second-Header-Name") == nullptr);
  CHECK(req.header_list()[1].value == "1");
}

TEST_CASE("in_message() is true only between the first byte of a request and its end") {
  http::RequestParser parser(http::Limits{});
  CHECK_FALSE(parser.in_message());
  CHECK(parser.feed("\r\n", 2).status == Status::need_more);
  CHECK_FALSE(parser.in_message());
  CHECK(parser.feed("GE", 2).status == Status::need_more);
  CHECK(parser.in_message());
  std::string rest = "T / HTTP/1.1\r\nHost: x\r\n\r\n";
  CHECK(parser.feed(rest.data(), rest.size()).status == Status::complete);
  CHECK_FALSE(parser.in_message());
  parser.next();
  CHECK_FALSE(parser.in_message());
}

TEST_CASE("reset() makes a failed parser usable for a new connection") {
  http::RequestParser parser(http::Limits{});
  CHECK(parser.feed("BAD\x01\r\n", 6).status == Status::error);
  CHECK(parser.error().status == 400);
  parser.reset();
  std::string wire = "GET /again HTTP/1.1\r\nHost: x\r\n\r\n";
  REQUIRE(parser.feed(wire.data(), wire.size()).status == Status::complete);
  CHECK(parser.request().target == "/again");
}

TEST_CASE("write_response writes status line, caller headers, Content-Length and the body") {
  std::string out = "previous";
  std::vector<http::Header> headers = {{"Content-Type", "text/plain"}, {"X-Id", "7"}};
  http::write_response(out, 200, headers, "hi", true);
  CHECK(out == "previous"
               "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nX-Id: 7\r\nContent-Length: 2\r\n\r\nhi");

  out.clear();
  http::write_response(out, 404, {}, "", false);
  CHECK(out == "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
}

TEST_CASE("write_response drops framing headers and headers that could split the response") {
  std::vector<http::Header> headers = {
      {"content-length", "999"},      {"Transfer-Encoding", "chunked"}, {"CONNECTION", "keep-alive"},
      {"X-Evil", "a\r\nSet-Cookie: x"}, {"X-Evil\r\nB", "c"},             {"X-Lf", "a\nb"},
      {"", "empty name"},             {"Bad Name", "x"},                {"X-Ok", "fine\tvalue"},
  };
  std::string out;
  http::write_response(out, 502, headers, "{}", true);
  CHECK(out == "HTTP/1.1 502 Bad Gateway\r\nX-Ok: fine\tvalue\r\nContent-Length: 2\r\n\r\n{}");
}

TEST_CASE("write_response sends no body and no Content-Length for 1xx, 204 and 304") {
  std::string out;
  http::write_response(out, 204, {}, "ignored", true);
  CHECK(out == "HTTP/1.1 204 No Content\r\n\r\n");
  out.clear();
  http::write_response(out, 304, {}, "", false);
  CHECK(out == "HTTP/1.1 304 Not Modified\r\nConnection: close\r\n\r\n");
  out.clear();
  http::write_response(out, 42, {}, "x", true);
  CHECK(out == "HTTP/1.1 500 Internal Server Error\r\nContent-Length: 1\r\n\r\nx");
  CHECK(std::string(http::reason_phrase(599)) == "Unknown");
  CHECK(std::string(http::reason_phrase(431)) == "Request Header Fields Too Large");
}

TEST_CASE("write_json_error writes a JSON body with an escaped message") {
  std::string out;
  http::write_json_error(out, 413, "request body too large", false);
  CHECK(out ==
        "HTTP/1.1 413 Content Too Large\r\nContent-Type: application/json\r\nContent-Length: 35\r\n"
        "Connection: close\r\n\r\n{\"error\": \"request body too large\"}");

  out.clear();
  std::vector<http::Header> extra = {{"Retry-After", "1"}, {"Content-Length", "1"}};
  http::write_json_error(out, 503, "say \"hi\"", true, extra);
  CHECK(out ==
        "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nRetry-After: 1\r\n"
        "Content-Length: 23\r\n\r\n{\"error\": \"say \\\"hi\\\"\"}");
}

TEST_CASE("append_json_string escapes quotes, backslashes and control characters") {
  auto json = [](std::string_view s) {
    std::string out;
    http::append_json_string(out, s);
    return out;
  };
  CHECK(json("") == "\"\"");
  CHECK(json("plain") == "\"plain\"");
  CHECK(json("a\"b\\c") == "\"a\\\"b\\\\c\"");
  CHECK(json("\n\r\t\b\f") == "\"\\u000a\\u000d\\u0009\\u0008\\u000c\"");
  CHECK(json(std::string_view("\x00\x1f\x7f", 3)) == "\"\\u0000\\u001f\x7f\"");
  CHECK(json("/") == "\"/\"");
}

TEST_CASE("append_json_string keeps valid UTF-8 and replaces each invalid subsequence by U+FFFD") {
  auto json = [](std::string_view s) {
    std::string out;
    http::append_json_string(out, s);
    return out;
  };
  const std::string fffd = "\xEF\xBF\xBD";
  CHECK(json("caf\xC3\xA9 \xE2\x82\xAC \xF0\x9F\x98\x80") == "\"caf\xC3\xA9 \xE2\x82\xAC \xF0\x9F\x98\x80\"");
  CHECK(json("\xEF\xBF\xBF\xF4\x8F\xBF\xBF") == "\"\xEF\xBF\xBF\xF4\x8F\xBF\xBF\"");  // U+FFFF, U+10FFFF
  CHECK(json("a\x80z") == "\"a" + fffd + "z\"");                     // stray continuation
  CHECK(json("\xC0\xAF") == "\"" + fffd + fffd + "\"");              // overlong lead
  CHECK(json("\xE0\x80\xAF") == "\"" + fffd + fffd + fffd + "\"");   // overlong 3-byte
  CHECK(json("\xED\xA0\x80") == "\"" + fffd + fffd + fffd + "\"");   // surrogate
  CHECK(json("\xF4\x90\x80\x80") == "\"" + fffd + fffd + fffd + fffd + "\"");  // > U+10FFFF
  CHECK(json("\xE2\x82") == "\"" + fffd + "\"");                     // truncated at end
  CHECK(json("\xE2\x82z") == "\"" + fffd + "z\"");                   // truncated, then ASCII
  CHECK(json("\xF0\x9F\x98\"") == "\"" + fffd + "\\\"\"");           // truncated, then a quote
  CHECK(json("\xFF\xFE") == "\"" + fffd + fffd + "\"");
}

namespace {

// Mutations of valid requests: most inputs get past the request line, so the fuzz reaches
// headers, chunk parsing and the limits rather than dying on the first byte.
class Mutator {
 public:
  explicit Mutator(uint64_t seed) : rng_(seed) {}

  size_t below(size_t n) { return n == 0 ? 0 : static_cast<size_t>(rng_() % n); }

  std::string mutate(std::string s) {
    static const char* const kTokens[] = {
        "\r\n", "\r\n\r\n", ":", " ", "\t", "0\r\n\r\n", "chunked", "Content-Length: ", "Transfer-Encoding: ",
        "Expect: 100-continue\r\n", "Connection: close\r\n", "ffffffff", ";ext=\"q\"", "HTTP/1.0", "\n", "\0",
        "GET / HTTP/1.1\r\nHost: x\r\n\r\n", "99999999999999999999", "\xC3\xA9", "\xFF"};
    size_t rounds = 1 + below(4);
    for (size_t k = 0; k < rounds; ++k) {
      size_t at = below(s.size() + 1);
      switch (below(6)) {
        case 0:
          if (!s.empty()) s[below(s.size())] = static_cast<char>(rng_());
          break;
        case 1: s.insert(at, 1, static_cast<char>(rng_())); break;
        case 2: s.erase(at, below(8)); break;
        case 3: {
          const char* token = kTokens[below(std::size(kTokens))];
          s.insert(at, token, token[0] == '\0' ? 1 : std::char_traits<char>::length(token));
          break;
        }
        case 4: s.insert(at, s.substr(below(s.size() + 1), below(16))); break;
        default: s.resize(at); break;
      }
    }
    return s;
  }

  std::vector<size_t> random_pieces(size_t total) {
    std::vector<size_t> pieces;
    switch (below(3)) {
      case 0: return pieces;  // whole
      case 1: return std::vector<size_t>(total, 1);
      default:
        while (total > 0) {
          size_t n = 1 + below(std::min<size_t>(total, 24));
          pieces.push_back(n);
          total -= n;
        }
        return pieces;
    }
  }

 private:
  std::mt19937_64 rng_;
};

}  // namespace

TEST_CASE("seeded fuzz: 200k mutated requests never crash, keep the feed() contract and ignore splits") {
  const std::string seeds[] = {
      kPostWithHeaders,
      kChunked,
      "GET /function/echo?x=1 HTTP/1.1\r\nHost: h\r\n\r\nGET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
      "POST /f HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\nabcde",
      "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3;a=b\r\nabc\r\n0\r\nT: v\r\n\r\n",
  };
  http::Limits small;
  small.max_header_bytes = 96;
  small.max_headers = 3;
  small.max_body_bytes = 8;

  Mutator mutator(0x5eedf00dULL);
  http::RequestParser default_parser(http::Limits{});
  http::RequestParser small_parser(small);
  size_t completed = 0, failed = 0;
  for (int i = 0; i < 200000; ++i) {
    std::string input = mutator.mutate(seeds[mutator.below(std::size(seeds))]);
    bool use_small = mutator.below(4) == 0;
    http::RequestParser& parser = use_small ? small_parser : default_parser;
    const http::Limits& limits = use_small ? small : http::Limits{};
    parser.reset();
    Outcome out = drive(parser, input, mutator.random_pieces(input.size()));
    parser.reset();
    Outcome whole = drive(parser, input, {});
    completed += out.requests.size();
    failed += out.error_status != 0;

    // How the bytes were split must not matter (the status may: with several faults in one
    // request, a split can surface another one first).
    bool ok = out.consumed_ok && whole.consumed_ok && out.requests == whole.requests &&
              (out.error_status != 0) == (whole.error_status != 0);
    if (out.error_status != 0) {
      int s = out.error_status;
      ok = ok && (s == 400 || s == 413 || s == 431 || s == 501 || s == 505) && !out.error_message.empty();
    }
    for (const Snapshot& r : out.requests) {
      ok = ok && !r.method.empty() && r.body.size() <= limits.max_body_bytes &&
           r.headers.size() <= limits.max_headers && (r.http_minor == 0 || r.http_minor == 1);
    }
    if (!ok) {
      FAIL_CHECK("contract broken for input #" << i << ": " << input);
      break;
    }
  }
  MESSAGE("fuzz: " << completed << " requests completed, " << failed << " inputs refused");
  // The mutations must exercise both outcomes, or the fuzz tests nothing.
  CHECK(completed > 1000);
  CHECK(failed > 1000);
}
