// HTTP/1.1 request parser: a thin adapter over llhttp that turns received bytes into one
// Request at a time. Pure code, no I/O: the connection feeds the bytes it read and keeps
// whatever feed() did not consume (the start of a pipelined request) for after next().
//
// Hot path: a RequestParser lives as long as its connection and reuses the Request's strings
// and vectors from one request to the next (clear(), never shrink), so a keep-alive
// connection stops allocating once its buffers have grown to the size of its requests.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "model/header.h"

extern "C" {
#include <llhttp.h>
}

namespace faasvisor::http {

// Every byte count a client controls is bounded; the status says which bound was hit.
struct Limits {
  uint32_t max_header_bytes = 16 * 1024;        // request line + headers, else 431
  uint32_t max_headers = 100;                   // else 431
  uint64_t max_body_bytes = 6 * 1024 * 1024;    // else 413 (Content-Length up front, chunked as it grows)
};

// A request header (model/header.h): the pool and the async calls carry the same type.
using Header = faasvisor::Header;

struct Request {
  std::string method;  // as received, e.g. "GET"
  std::string target;  // raw request-target, e.g. "/function/echo/a/b?x=1"

  // Headers in arrival order. `headers` keeps entries past header_count as spare buffers
  // (their strings keep capacity across requests), so iterate header_list(), not `headers`.
  std::vector<Header> headers;
  size_t header_count = 0;

  std::string body;          // de-chunked; chunk extensions and trailers are not kept
  bool keep_alive = false;   // HTTP/1.1 unless "Connection: close"; HTTP/1.0 only with "keep-alive"
  uint8_t http_minor = 1;    // the major version is always 1 (anything else is refused with 505)

  std::string_view path() const;   // target up to the first '?'
  std::string_view query() const;  // after the first '?', without it; empty if none
  std::span<const Header> header_list() const { return {headers.data(), header_count}; }
  // Case-insensitive name match; the first one wins; nullptr if absent.
  const Header* find(std::string_view name) const;
};

// What to answer when a request is refused. The connection sends it and closes.
struct Error {
  int status = 0;       // 400, 413, 431, 501 or 505
  std::string message;  // short, for the client, e.g. "invalid chunk size (Invalid character in chunk size)"
};

// ASCII case-insensitive equality (model/header.h).
using faasvisor::iequals;
// An RFC 9110 token (what a header name must be): non-empty, tchar only.
bool is_token(std::string_view s);

// Decides, once a request's head is complete, whether its body is streamed: the connection
// takes it piece by piece as it arrives (take_body) instead of the parser holding all of it.
class BodyPolicy {
 public:
  // The body's limit if it is to be streamed (it may pass max_body_bytes), else 0.
  virtual uint64_t stream_limit(const Request& head) = 0;

 protected:
  ~BodyPolicy() = default;
};

class RequestParser {
 public:
  explicit RequestParser(const Limits& limits);
  RequestParser(const RequestParser&) = delete;  // llhttp keeps a pointer back to us
  RequestParser& operator=(const RequestParser&) = delete;

  enum class Status { need_more, complete, error };
  struct Result {
    Status status;
    size_t consumed;  // bytes of `data` used; on complete, the request ends at data + consumed
  };

  // Feeds received bytes. Stops at the end of ONE request, so pipelined requests come out one
  // per call; the caller keeps data[consumed..len) and feeds it again after next().
  // need_more always consumes all of `len`. Must not be called again after complete until
  // next(), nor after error until reset().
  Result feed(const char* data, size_t len);

  Request& request() { return request_; }              // complete after Status::complete
  const Request& request() const { return request_; }
  const Error& error() const { return error_; }          // valid after Status::error

  // Starts the next request on the same connection (after Status::complete); keeps capacity.
  // After a request with keep_alive == false the connection must close: llhttp then silently
  // discards anything that follows (feed() keeps answering need_more).
  void next();
  // Starts over as for a new connection, from any state; keeps capacity.
  void reset();

  // Some bytes of a request (beyond blank lines between requests) were consumed but it is not
  // complete: an idle close now would cut a request in half.
  bool in_message() const { return in_message_; }
  // The current request's head has been parsed; its body (if any) is still to come.
  bool head_complete() const { return in_message_ && headers_done_; }

  // True once per request, when its headers carried "Expect: 100-continue" (HTTP/1.1), it
  // has a body and the request is not complete yet: the connection should now send
  // "HTTP/1.1 100 Continue\r\n\r\n".
  bool take_continue_request();

  // Streamed bodies (BodyPolicy): set once, consulted at every request's head.
  void set_body_policy(BodyPolicy* policy) { body_policy_ = policy; }
  bool streaming() const { return stream_limit_ > 0; }
  // Moves the body bytes parsed so far into out (its old contents are dropped): the caller
  // now owns them. Only while streaming.
  void take_body(std::string& out);
  uint64_t streamed_bytes() const { return streamed_bytes_; }  // taken so far

 private:
  struct Callbacks;  // llhttp's C callbacks, in parser.cc
  friend struct Callbacks;

  enum class State { reading, complete, error };
  // Why llhttp_execute() returned HPE_PAUSED (our callbacks pause it on purpose).
  enum class Pause { none, headers_complete, message_complete };

  void clear_request();
  Result fail(int status, std::string_view message, size_t consumed);
  Result fail_from_llhttp(llhttp_errno_t err, const char* data, size_t len);
  int refuse_in_callback(int status, std::string_view message);  // returns an llhttp error code
  Header& begin_header();
  int check_headers();  // in on_headers_complete: limits, versions, framing we do not support
  uint64_t header_budget_left() const;
  uint64_t body_room() const;  // body bytes the limit still allows
  bool version_preceded_by_http(const char* version_start) const;
  void remember_recent_bytes(const char* data, size_t len);
  bool head_has_obs_fold(const char* data, size_t len);

  Limits limits_;
  llhttp_t llhttp_;
  Request request_;
  Error error_;
  State state_ = State::reading;
  Pause pause_ = Pause::none;
  uint64_t header_bytes_ = 0;   // raw bytes of the current request's head seen so far
  const char* chunk_start_ = nullptr;  // what llhttp_execute() is parsing now
  char recent_[8] = {};               // last bytes of earlier chunks, until the version is seen
  size_t recent_len_ = 0;
  bool headers_done_ = false;
  bool version_seen_ = false;
  bool in_message_ = false;
  bool in_header_field_ = false;  // llhttp may split one field name over several callbacks
  bool continue_wanted_ = false;
  bool head_last_byte_lf_ = false;  // the head seen so far ends with LF (for obs-fold across feeds)
  bool callback_failed_ = false;  // error_ was set by one of our callbacks
  BodyPolicy* body_policy_ = nullptr;
  uint64_t stream_limit_ = 0;     // non-zero: this request's body is streamed, up to it
  uint64_t streamed_bytes_ = 0;   // body bytes taken by take_body
};

}  // namespace faasvisor::http
