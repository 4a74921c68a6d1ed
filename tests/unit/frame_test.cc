// Frame codec tests (src/proto/frame.c). Buffers handed to decoders are heap copies of
// exactly the bytes under test, so an out-of-bounds read shows up under ASan.
#include <doctest/doctest.h>

#include <cstdint>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <string_view>
#include <vector>

#include "faasvisor/frame.h"

namespace {

using Bytes = std::vector<uint8_t>;

fv_str str_of(std::string_view s) { return fv_str{s.data(), static_cast<uint32_t>(s.size())}; }

std::string_view view_of(fv_str s) { return std::string_view(s.ptr, s.len); }

void put_u32(Bytes &b, uint32_t v) {
  for (int i = 0; i < 4; i++) b.push_back(static_cast<uint8_t>(v >> (8 * i)));
}

void put_u16(Bytes &b, uint16_t v) {
  b.push_back(static_cast<uint8_t>(v));
  b.push_back(static_cast<uint8_t>(v >> 8));
}

void put_str(Bytes &b, std::string_view s) {
  put_u32(b, static_cast<uint32_t>(s.size()));
  b.insert(b.end(), s.begin(), s.end());
}

Bytes header_bytes(uint8_t type, uint32_t length) {
  Bytes b(FV_FRAME_HEADER_SIZE);
  fv_frame_header_write(b.data(), type, length);
  return b;
}

// A request with headers, an empty query-less field and a body holding NUL and high bytes.
struct SampleRequest {
  std::string body = std::string("hello\0world\xff", 12);
  fv_request_view view{};
  SampleRequest() {
    view.method = str_of("POST");
    view.path = str_of("/items/42");
    view.query = str_of("a=1&b=two");
    view.header_count = 3;
    view.headers[0] = {str_of("Content-Type"), str_of("text/plain")};
    view.headers[1] = {str_of("X-Empty"), str_of("")};
    view.headers[2] = {str_of("Accept"), str_of("*/*")};
    view.body = str_of(body);
  }
};

struct SampleResponse {
  fv_response_view view{};
  SampleResponse() {
    view.status = 201;
    view.header_count = 2;
    view.headers[0] = {str_of("Content-Type"), str_of("application/json")};
    view.headers[1] = {str_of("Location"), str_of("/items/43")};
    view.body = str_of("{\"ok\":true}");
  }
};

Bytes encode_request(const fv_request_view &req) {
  Bytes out(FV_FRAME_HEADER_SIZE + fv_request_payload_size(&req));
  long n = fv_request_encode(out.data(), out.size(), &req);
  REQUIRE(n == static_cast<long>(out.size()));
  return out;
}

Bytes encode_response(const fv_response_view &resp) {
  Bytes out(FV_FRAME_HEADER_SIZE + fv_response_payload_size(&resp));
  long n = fv_response_encode(out.data(), out.size(), &resp);
  REQUIRE(n == static_cast<long>(out.size()));
  return out;
}

Bytes payload_of(const Bytes &frame) {
  return Bytes(frame.begin() + FV_FRAME_HEADER_SIZE, frame.end());
}

// Decoders get a heap buffer of exactly len bytes (nullptr when empty) so reads past the end
// are caught by ASan rather than landing in a vector's spare capacity. The copy is kept
// until the same helper runs again, because decoded views point into it.
struct ExactCopy {
  std::unique_ptr<uint8_t[]> bytes;
  const uint8_t *set(const uint8_t *data, size_t len) {
    bytes.reset(len ? new uint8_t[len] : nullptr);
    if (len) std::memcpy(bytes.get(), data, len);
    return bytes.get();
  }
};

int decode_request_exact(const uint8_t *data, size_t len, fv_request_view *out) {
  static ExactCopy copy;
  return fv_request_decode(copy.set(data, len), static_cast<uint32_t>(len), out);
}

int decode_response_exact(const uint8_t *data, size_t len, fv_response_view *out) {
  static ExactCopy copy;
  return fv_response_decode(copy.set(data, len), static_cast<uint32_t>(len), out);
}

int parse_header_exact(const uint8_t *data, size_t len, uint32_t max_payload,
                       fv_frame_header *out) {
  static ExactCopy copy;
  return fv_frame_header_parse(copy.set(data, len), len, max_payload, out);
}

// A REQUEST payload written by hand, independent of the encoder.
Bytes hand_request_payload(uint32_t header_count) {
  Bytes b;
  put_str(b, "GET");
  put_str(b, "/");
  put_str(b, "");
  put_u32(b, header_count);
  for (uint32_t i = 0; i < header_count; i++) {
    put_str(b, "h");
    put_str(b, "v");
  }
  put_str(b, "body");
  return b;
}

Bytes hand_response_payload(uint16_t status, uint16_t reserved, uint32_t header_count) {
  Bytes b;
  put_u16(b, status);
  put_u16(b, reserved);
  put_u32(b, header_count);
  for (uint32_t i = 0; i < header_count; i++) {
    put_str(b, "h");
    put_str(b, "v");
  }
  put_str(b, "body");
  return b;
}

}  // namespace

TEST_CASE("frame header is written as little-endian FVP1, type, zero flags, length") {
  uint8_t out[FV_FRAME_HEADER_SIZE];
  fv_frame_header_write(out, FV_FRAME_RESPONSE, 0x01020304u);
  const uint8_t expected[FV_FRAME_HEADER_SIZE] = {'F', 'V', 'P', '1', 3, 0, 0, 0, 4, 3, 2, 1};
  CHECK(std::memcmp(out, expected, sizeof out) == 0);
}

TEST_CASE("frame header round-trips through parse for every known type") {
  for (uint8_t type = FV_FRAME_READY; type <= FV_FRAME_SECRETS; type++) {
    bool empty = type == FV_FRAME_SHUTDOWN || type == FV_FRAME_GET_SECRETS;
    uint32_t length = empty ? 0 : (type == FV_FRAME_READY ? 256 : 4096);
    Bytes b = header_bytes(type, length);
    fv_frame_header h{};
    REQUIRE(parse_header_exact(b.data(), b.size(), 1u << 24, &h) == FV_OK);
    CHECK(h.type == type);
    CHECK(h.length == length);
  }
}

TEST_CASE("frame header parse asks for more bytes on every prefix shorter than 12") {
  Bytes b = header_bytes(FV_FRAME_REQUEST, 10);
  for (size_t len = 0; len < FV_FRAME_HEADER_SIZE; len++) {
    fv_frame_header h{};
    CHECK(parse_header_exact(b.data(), len, 1u << 24, &h) == FV_NEED_MORE);
  }
}

TEST_CASE("frame header parse reports TOO_LARGE from the header alone, before any payload") {
  Bytes b = header_bytes(FV_FRAME_RESPONSE, (1u << 24) + 1);
  fv_frame_header h{};
  CHECK(parse_header_exact(b.data(), b.size(), 1u << 24, &h) == FV_TOO_LARGE);
  Bytes at_limit = header_bytes(FV_FRAME_RESPONSE, 1u << 24);
  CHECK(parse_header_exact(at_limit.data(), at_limit.size(), 1u << 24, &h) == FV_OK);
  Bytes huge = header_bytes(FV_FRAME_REQUEST, 0xffffffffu);
  CHECK(parse_header_exact(huge.data(), huge.size(), 1u << 24, &h) == FV_TOO_LARGE);
}

TEST_CASE("READY longer than 256 bytes is TOO_LARGE and SHUTDOWN with a payload is MALFORMED") {
  fv_frame_header h{};
  Bytes ready = header_bytes(FV_FRAME_READY, FV_FRAME_READY_MAX + 1);
  CHECK(parse_header_exact(ready.data(), ready.size(), 1u << 24, &h) == FV_TOO_LARGE);
  Bytes shutdown = header_bytes(FV_FRAME_SHUTDOWN, 1);
  CHECK(parse_header_exact(shutdown.data(), shutdown.size(), 1u << 24, &h) == FV_MALFORMED);
}

TEST_CASE("frame header parse rejects a bad magic in any byte") {
  for (size_t i = 0; i < 4; i++) {
    Bytes b = header_bytes(FV_FRAME_REQUEST, 0);
    b[i] ^= 0x20;
    fv_frame_header h{};
    CHECK(parse_header_exact(b.data(), b.size(), 1u << 24, &h) == FV_BAD_MAGIC);
  }
}

TEST_CASE("frame header parse rejects unknown types") {
  for (unsigned type : {0u, 8u, 9u, 128u, 255u}) {
    Bytes b = header_bytes(static_cast<uint8_t>(type), 0);
    fv_frame_header h{};
    CHECK(parse_header_exact(b.data(), b.size(), 1u << 24, &h) == FV_BAD_TYPE);
  }
}

TEST_CASE("frame header parse rejects non-zero flags or reserved bytes") {
  for (size_t i = 5; i < 8; i++) {
    Bytes b = header_bytes(FV_FRAME_REQUEST, 0);
    b[i] = 1;
    fv_frame_header h{};
    CHECK(parse_header_exact(b.data(), b.size(), 1u << 24, &h) == FV_BAD_RESERVED);
  }
}

TEST_CASE("request encodes to the documented byte layout") {
  fv_request_view req{};
  req.method = str_of("GET");
  req.path = str_of("/");
  req.query = str_of("");
  req.header_count = 1;
  req.headers[0] = {str_of("h"), str_of("v")};
  req.body = str_of("body");
  Bytes frame = encode_request(req);
  Bytes expected = header_bytes(FV_FRAME_REQUEST, 0);
  Bytes payload = hand_request_payload(1);
  fv_put_u32(expected.data() + 8, static_cast<uint32_t>(payload.size()));
  expected.insert(expected.end(), payload.begin(), payload.end());
  CHECK(frame == expected);
}

TEST_CASE("response encodes to the documented byte layout") {
  fv_response_view resp{};
  resp.status = 404;
  resp.header_count = 1;
  resp.headers[0] = {str_of("h"), str_of("v")};
  resp.body = str_of("body");
  Bytes frame = encode_response(resp);
  Bytes payload = hand_response_payload(404, 0, 1);
  Bytes expected = header_bytes(FV_FRAME_RESPONSE, static_cast<uint32_t>(payload.size()));
  expected.insert(expected.end(), payload.begin(), payload.end());
  CHECK(frame == expected);
}

TEST_CASE("request round-trips through encode and decode") {
  SampleRequest sample;
  Bytes frame = encode_request(sample.view);
  fv_frame_header h{};
  REQUIRE(fv_frame_header_parse(frame.data(), frame.size(), 1u << 24, &h) == FV_OK);
  CHECK(h.type == FV_FRAME_REQUEST);
  CHECK(h.length == frame.size() - FV_FRAME_HEADER_SIZE);
  CHECK(h.length == fv_request_payload_size(&sample.view));

  fv_request_view got{};
  REQUIRE(fv_request_decode(frame.data() + FV_FRAME_HEADER_SIZE, h.length, &got) == FV_OK);
  CHECK(view_of(got.method) == "POST");
  CHECK(view_of(got.path) == "/items/42");
  CHECK(view_of(got.query) == "a=1&b=two");
  REQUIRE(got.header_count == 3);
  for (uint32_t i = 0; i < 3; i++) {
    CHECK(view_of(got.headers[i].name) == view_of(sample.view.headers[i].name));
    CHECK(view_of(got.headers[i].value) == view_of(sample.view.headers[i].value));
  }
  CHECK(view_of(got.body) == sample.body);
  // Views point into the caller's buffer, not copies.
  CHECK(reinterpret_cast<const uint8_t *>(got.body.ptr) >= frame.data());
  CHECK(reinterpret_cast<const uint8_t *>(got.body.ptr) < frame.data() + frame.size());
}

TEST_CASE("response round-trips through encode and decode") {
  SampleResponse sample;
  Bytes frame = encode_response(sample.view);
  Bytes payload = payload_of(frame);
  CHECK(payload.size() == fv_response_payload_size(&sample.view));
  fv_response_view got{};
  REQUIRE(decode_response_exact(payload.data(), payload.size(), &got) == FV_OK);
  CHECK(got.status == 201);
  REQUIRE(got.header_count == 2);
  CHECK(view_of(got.headers[0].name) == "Content-Type");
  CHECK(view_of(got.headers[0].value) == "application/json");
  CHECK(view_of(got.headers[1].name) == "Location");
  CHECK(view_of(got.headers[1].value) == "/items/43");
  CHECK(view_of(got.body) == "{\"ok\":true}");
}

TEST_CASE("empty request and response (all strings empty, no headers) round-trip") {
  fv_request_view req{};
  Bytes frame = encode_request(req);
  CHECK(frame.size() == FV_FRAME_HEADER_SIZE + 20);
  fv_request_view got{};
  Bytes payload = payload_of(frame);
  CHECK(decode_request_exact(payload.data(), payload.size(), &got) == FV_OK);
  CHECK(got.header_count == 0);
  CHECK(got.body.len == 0);

  fv_response_view resp{};
  resp.status = 204;
  Bytes rframe = encode_response(resp);
  CHECK(rframe.size() == FV_FRAME_HEADER_SIZE + 12);
  fv_response_view rgot{};
  Bytes rpayload = payload_of(rframe);
  CHECK(decode_response_exact(rpayload.data(), rpayload.size(), &rgot) == FV_OK);
  CHECK(rgot.status == 204);
}

TEST_CASE("request with the maximum 128 headers round-trips") {
  fv_request_view req{};
  req.method = str_of("GET");
  req.path = str_of("/");
  req.header_count = FV_FRAME_MAX_HEADERS;
  for (uint32_t i = 0; i < FV_FRAME_MAX_HEADERS; i++) req.headers[i] = {str_of("k"), str_of("v")};
  Bytes payload = payload_of(encode_request(req));
  fv_request_view got{};
  CHECK(decode_request_exact(payload.data(), payload.size(), &got) == FV_OK);
  CHECK(got.header_count == FV_FRAME_MAX_HEADERS);
}

TEST_CASE("every truncation of a valid request payload is MALFORMED") {
  SampleRequest sample;
  Bytes payload = payload_of(encode_request(sample.view));
  for (size_t len = 0; len < payload.size(); len++) {
    fv_request_view got{};
    CAPTURE(len);
    CHECK(decode_request_exact(payload.data(), len, &got) == FV_MALFORMED);
  }
}

TEST_CASE("every truncation of a valid response payload is MALFORMED") {
  SampleResponse sample;
  Bytes payload = payload_of(encode_response(sample.view));
  for (size_t len = 0; len < payload.size(); len++) {
    fv_response_view got{};
    CAPTURE(len);
    CHECK(decode_response_exact(payload.data(), len, &got) == FV_MALFORMED);
  }
}

TEST_CASE("trailing bytes after a valid payload are MALFORMED") {
  SampleRequest sample;
  Bytes req = payload_of(encode_request(sample.view));
  req.push_back(0);
  fv_request_view rq{};
  CHECK(decode_request_exact(req.data(), req.size(), &rq) == FV_MALFORMED);

  SampleResponse rsample;
  Bytes resp = payload_of(encode_response(rsample.view));
  resp.insert(resp.end(), {1, 2, 3, 4});
  fv_response_view rs{};
  CHECK(decode_response_exact(resp.data(), resp.size(), &rs) == FV_MALFORMED);
}

TEST_CASE("a string length that overruns the payload is MALFORMED") {
  Bytes b;
  put_u32(b, 0xffffffffu);  // method claims 4 GiB
  b.insert(b.end(), {'G', 'E', 'T'});
  fv_request_view got{};
  CHECK(decode_request_exact(b.data(), b.size(), &got) == FV_MALFORMED);

  Bytes body_overrun = hand_request_payload(0);
  fv_put_u32(body_overrun.data() + body_overrun.size() - 8, 5);  // body says 5, has 4
  CHECK(decode_request_exact(body_overrun.data(), body_overrun.size(), &got) == FV_MALFORMED);
}

TEST_CASE("more than 128 headers is TOO_MANY_HEADERS on decode and encode") {
  Bytes req = hand_request_payload(FV_FRAME_MAX_HEADERS + 1);
  fv_request_view rq{};
  CHECK(decode_request_exact(req.data(), req.size(), &rq) == FV_TOO_MANY_HEADERS);
  Bytes ok = hand_request_payload(FV_FRAME_MAX_HEADERS);
  CHECK(decode_request_exact(ok.data(), ok.size(), &rq) == FV_OK);

  Bytes resp = hand_response_payload(200, 0, FV_FRAME_MAX_HEADERS + 1);
  fv_response_view rs{};
  CHECK(decode_response_exact(resp.data(), resp.size(), &rs) == FV_TOO_MANY_HEADERS);
  // A count of 2^32-1 with no pairs behind it must not loop or read.
  Bytes huge = hand_response_payload(200, 0, 0);
  fv_put_u32(huge.data() + 4, 0xffffffffu);
  CHECK(decode_response_exact(huge.data(), huge.size(), &rs) == FV_TOO_MANY_HEADERS);

  uint8_t out[4096];
  SampleRequest sample;
  sample.view.header_count = FV_FRAME_MAX_HEADERS + 1;
  CHECK(fv_request_encode(out, sizeof out, &sample.view) == FV_TOO_MANY_HEADERS);
  SampleResponse rsample;
  rsample.view.header_count = FV_FRAME_MAX_HEADERS + 1;
  CHECK(fv_response_encode(out, sizeof out, &rsample.view) == FV_TOO_MANY_HEADERS);
}

TEST_CASE("a status outside 100..599 is BAD_STATUS on decode and encode") {
  fv_response_view rs{};
  for (unsigned status : {0u, 1u, 99u, 600u, 999u, 65535u}) {
    CAPTURE(status);
    Bytes b = hand_response_payload(static_cast<uint16_t>(status), 0, 0);
    CHECK(decode_response_exact(b.data(), b.size(), &rs) == FV_BAD_STATUS);
    SampleResponse sample;
    sample.view.status = static_cast<uint16_t>(status);
    uint8_t out[4096];
    CHECK(fv_response_encode(out, sizeof out, &sample.view) == FV_BAD_STATUS);
  }
  for (unsigned status : {100u, 200u, 599u}) {
    Bytes b = hand_response_payload(static_cast<uint16_t>(status), 0, 0);
    CHECK(decode_response_exact(b.data(), b.size(), &rs) == FV_OK);
    CHECK(rs.status == status);
  }
}

TEST_CASE("a non-zero reserved field in a response payload is BAD_RESERVED") {
  Bytes b = hand_response_payload(200, 1, 0);
  fv_response_view rs{};
  CHECK(decode_response_exact(b.data(), b.size(), &rs) == FV_BAD_RESERVED);
}

TEST_CASE("encoders give NO_SPACE for any buffer below the frame size and write nothing past it") {
  SampleRequest sample;
  size_t need = FV_FRAME_HEADER_SIZE + fv_request_payload_size(&sample.view);
  for (size_t cap = 0; cap < need; cap++) {
    std::unique_ptr<uint8_t[]> out(new uint8_t[cap]);  // exact: ASan flags any write past cap
    CHECK(fv_request_encode(out.get(), cap, &sample.view) == FV_NO_SPACE);
  }
  std::unique_ptr<uint8_t[]> exact(new uint8_t[need]);
  CHECK(fv_request_encode(exact.get(), need, &sample.view) == static_cast<long>(need));

  SampleResponse rsample;
  size_t rneed = FV_FRAME_HEADER_SIZE + fv_response_payload_size(&rsample.view);
  for (size_t cap = 0; cap < rneed; cap++) {
    std::unique_ptr<uint8_t[]> out(new uint8_t[cap]);  // exact: ASan flags any write past cap
    CHECK(fv_response_encode(out.get(), cap, &rsample.view) == FV_NO_SPACE);
  }
  std::unique_ptr<uint8_t[]> rexact(new uint8_t[rneed]);
  CHECK(fv_response_encode(rexact.get(), rneed, &rsample.view) == static_cast<long>(rneed));
}

TEST_CASE("an encoded payload beyond the u32 length field is TOO_LARGE, not a wrap") {
  // 2 headers of 3 GiB (lengths only; the encoder must refuse before touching the data).
  fv_response_view resp{};
  resp.status = 200;
  resp.header_count = 2;
  resp.headers[0] = {fv_str{nullptr, 0xc0000000u}, fv_str{nullptr, 0}};
  resp.headers[1] = {fv_str{nullptr, 0xc0000000u}, fv_str{nullptr, 0}};
  CHECK(fv_response_payload_size(&resp) > 0xffffffffull);
  uint8_t out[64];
  CHECK(fv_response_encode(out, sizeof out, &resp) == FV_TOO_LARGE);
}

TEST_CASE("primitives write little-endian values and return the advanced pointer") {
  uint8_t buf[16] = {};
  uint8_t *p = fv_put_u16(buf, 0x0102);
  CHECK(p == buf + 2);
  p = fv_put_u32(p, 0x03040506u);
  CHECK(p == buf + 6);
  p = fv_put_str(p, "ab", 2);
  CHECK(p == buf + 12);
  const uint8_t expected[12] = {2, 1, 6, 5, 4, 3, 2, 0, 0, 0, 'a', 'b'};
  CHECK(std::memcmp(buf, expected, sizeof expected) == 0);
}

TEST_CASE("every result has a distinct description") {
  std::vector<std::string> seen;
  for (int rc = FV_NO_SPACE; rc <= FV_OK; rc++) {
    const char *s = fv_frame_strerror(rc);
    REQUIRE(s != nullptr);
    for (const auto &other : seen) CHECK(other != s);
    seen.emplace_back(s);
  }
  CHECK(fv_frame_strerror(12345) != nullptr);
}

TEST_CASE("random garbage and mutated frames never crash or read out of bounds") {
  std::mt19937_64 rng(0x5eedf00dULL);
  SampleRequest sreq;
  SampleResponse sresp;
  const Bytes valid_req = payload_of(encode_request(sreq.view));
  const Bytes valid_resp = payload_of(encode_response(sresp.view));
  int ok_count = 0;
  constexpr int kIterations = 100000;
  for (int i = 0; i < kIterations; i++) {
    Bytes buf;
    switch (i % 3) {
    case 0: {  // pure noise, small lengths so header counts and string sizes vary a lot
      buf.resize(rng() % 96);
      for (auto &byte : buf) byte = static_cast<uint8_t>(rng());
      break;
    }
    case 1:  // a valid request with a few bytes flipped and maybe cut
    case 2: {
      buf = (i % 3 == 1) ? valid_req : valid_resp;
      int flips = 1 + static_cast<int>(rng() % 4);
      for (int f = 0; f < flips; f++) buf[rng() % buf.size()] = static_cast<uint8_t>(rng());
      if (rng() % 4 == 0) buf.resize(rng() % (buf.size() + 1));
      break;
    }
    }
    fv_request_view rq{};
    fv_response_view rs{};
    fv_frame_header h{};
    int a = decode_request_exact(buf.data(), buf.size(), &rq);
    int b = decode_response_exact(buf.data(), buf.size(), &rs);
    int c = parse_header_exact(buf.data(), buf.size(), 1u << 24, &h);
    CHECK(a <= FV_OK);
    CHECK(a >= FV_NO_SPACE);
    if (a == FV_OK) {
      ok_count++;
      // A decoded request re-encodes to the same bytes.
      CHECK(fv_request_payload_size(&rq) == buf.size());
      Bytes again = payload_of(encode_request(rq));
      CHECK(again == buf);
    }
    if (b == FV_OK) {
      CHECK(fv_response_payload_size(&rs) == buf.size());
      CHECK(rs.status >= 100);
      CHECK(rs.status <= 599);
    }
    (void)c;
  }
  // Flipped bytes that land inside string contents keep a frame valid: the loop did
  // exercise the success path as well as the failures.
  CHECK(ok_count > 0);
}

// ---- secrets (GET_SECRETS -> SECRETS) ----

TEST_CASE("secret names are plain file names of letters, digits, '.', '-' and '_'") {
  for (std::string_view ok : {"a", "api-key", "db.password", "A_1", "9lives", std::string_view("x").data()})
    CHECK(fv_secret_name_valid(ok.data(), static_cast<uint32_t>(ok.size())));
  std::string longest(FV_SECRET_NAME_MAX, 'k');
  CHECK(fv_secret_name_valid(longest.data(), static_cast<uint32_t>(longest.size())));
  std::string too_long(FV_SECRET_NAME_MAX + 1, 'k');
  CHECK_FALSE(fv_secret_name_valid(too_long.data(), static_cast<uint32_t>(too_long.size())));
  for (std::string_view bad : {"", ".", "..", ".hidden", "-x", "_x", "a/b", "../etc", "a b", "a\\b", "\xc3\xa9"})
    CHECK_FALSE(fv_secret_name_valid(bad.data(), static_cast<uint32_t>(bad.size())));
  std::string with_nul("a\0b", 3);
  CHECK_FALSE(fv_secret_name_valid(with_nul.data(), 3));
}

TEST_CASE("GET_SECRETS must be empty and SECRETS has its own size limit") {
  fv_frame_header h{};
  Bytes get = header_bytes(FV_FRAME_GET_SECRETS, 1);
  CHECK(parse_header_exact(get.data(), get.size(), 1u << 24, &h) == FV_MALFORMED);
  Bytes big = header_bytes(FV_FRAME_SECRETS, FV_SECRETS_PAYLOAD_MAX + 1);
  CHECK(parse_header_exact(big.data(), big.size(), 1u << 24, &h) == FV_TOO_LARGE);
  Bytes at_limit = header_bytes(FV_FRAME_SECRETS, FV_SECRETS_PAYLOAD_MAX);
  CHECK(parse_header_exact(at_limit.data(), at_limit.size(), 1u << 24, &h) == FV_OK);
}

TEST_CASE("a SECRETS frame round-trips with binary values, an empty one included") {
  static fv_secrets_view in, out;
  std::string binary("\0\x01\xff secret", 10);
  in.count = 3;
  in.entries[0] = {str_of("api-key"), str_of("s3cr3t")};
  in.entries[1] = {str_of("blob"), str_of(binary)};
  in.entries[2] = {str_of("empty"), str_of("")};
  Bytes frame(FV_FRAME_HEADER_SIZE + fv_secrets_payload_size(&in));
  long n = fv_secrets_encode(frame.data(), frame.size(), &in);
  REQUIRE(n == static_cast<long>(frame.size()));
  fv_frame_header h{};
  REQUIRE(parse_header_exact(frame.data(), FV_FRAME_HEADER_SIZE, 1u << 24, &h) == FV_OK);
  CHECK(h.type == FV_FRAME_SECRETS);
  Bytes payload(frame.begin() + FV_FRAME_HEADER_SIZE, frame.end());
  REQUIRE(fv_secrets_decode(payload.data(), static_cast<uint32_t>(payload.size()), &out) == FV_OK);
  REQUIRE(out.count == 3);
  CHECK(view_of(out.entries[0].name) == "api-key");
  CHECK(view_of(out.entries[0].value) == "s3cr3t");
  CHECK(view_of(out.entries[1].value) == binary);
  CHECK(out.entries[2].value.len == 0);
  CHECK(fv_secrets_encode(frame.data(), frame.size() - 1, &in) == FV_NO_SPACE);
}

TEST_CASE("SECRETS payloads with bad names, oversize values, extra bytes or too many entries are refused") {
  static fv_secrets_view out;
  auto decode = [&](const Bytes &b) { return fv_secrets_decode(b.data(), static_cast<uint32_t>(b.size()), &out); };
  Bytes empty;
  put_u32(empty, 0);
  CHECK(decode(empty) == FV_OK);
  CHECK(out.count == 0);
  Bytes traversal;
  put_u32(traversal, 1);
  put_str(traversal, "../etc/passwd");
  put_str(traversal, "x");
  CHECK(decode(traversal) == FV_MALFORMED);
  Bytes trailing = empty;
  trailing.push_back(0);
  CHECK(decode(trailing) == FV_MALFORMED);
  Bytes cut;
  put_u32(cut, 1);
  put_str(cut, "k");
  put_u32(cut, 10);  // a value of 10 bytes, absent
  CHECK(decode(cut) == FV_MALFORMED);
  Bytes many;
  put_u32(many, FV_SECRETS_MAX_COUNT + 1);
  CHECK(decode(many) == FV_TOO_MANY_HEADERS);
  Bytes huge;
  put_u32(huge, 1);
  put_str(huge, "k");
  put_str(huge, std::string(FV_SECRET_VALUE_MAX + 1, 'v'));
  CHECK(decode(huge) == FV_MALFORMED);
}
