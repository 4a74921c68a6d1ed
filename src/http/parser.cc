#include "http/parser.h"

#include <algorithm>
#include <array>
#include <cassert>
#include <cstring>

namespace faasvisor::http {

namespace {

// A body buffer bigger than this is released between requests instead of kept: a few large
// invocations must not pin megabytes on every idle keep-alive connection.
constexpr size_t kRetainedBodyCapacityBytes = 256 * 1024;

constexpr std::string_view kObsFoldMessage = "obsolete line folding in a header (obs-fold) is not accepted";

bool is_optional_whitespace(char c) { return c == ' ' || c == '\t'; }

// llhttp skips whitespace before a header value but hands over the trailing part.
void trim_trailing_whitespace(std::string& s) {
  size_t end = s.size();
  while (end > 0 && is_optional_whitespace(s[end - 1])) --end;
  s.resize(end);
}

// Short, stable phrases for llhttp's error codes; llhttp's own reason (more precise, e.g.
// "Invalid character in chunk size") is appended in parentheses.
const char* llhttp_error_phrase(llhttp_errno_t err) {
  switch (err) {
    case HPE_CR_EXPECTED: return "expected CR";
    case HPE_LF_EXPECTED: return "expected LF";
    case HPE_UNEXPECTED_CONTENT_LENGTH: return "unexpected Content-Length";
    case HPE_UNEXPECTED_SPACE: return "unexpected space";
    case HPE_CLOSED_CONNECTION: return "data after Connection: close";
    case HPE_INVALID_METHOD: return "invalid method";
    case HPE_INVALID_URL: return "invalid request target";
    case HPE_INVALID_CONSTANT: return "invalid constant";
    case HPE_INVALID_HEADER_TOKEN: return "invalid header token";
    case HPE_INVALID_CONTENT_LENGTH: return "invalid Content-Length";
    case HPE_INVALID_CHUNK_SIZE: return "invalid chunk size";
    case HPE_INVALID_TRANSFER_ENCODING: return "invalid Transfer-Encoding";
    case HPE_STRICT: return "strict mode violation";
    case HPE_INVALID_VERSION: return "HTTP version not supported";
    case HPE_PAUSED_H2_UPGRADE: return "HTTP/2 is not supported";
    case HPE_PAUSED_UPGRADE: return "protocol upgrade is not supported";
    default: return "malformed request";
  }
}

}  // namespace

// RFC 9110 section 5.6.2: tchar = "!" / "#" / "$" / "%" / "&" / "'" / "*" / "+" / "-" / "." /
// "^" / "_" / "`" / "|" / "~" / DIGIT / ALPHA. A table: this runs on every header name.
constexpr std::array<bool, 256> kTokenChars = [] {
  std::array<bool, 256> table{};
  for (int c = '0'; c <= '9'; ++c) table[c] = true;
  for (int c = 'a'; c <= 'z'; ++c) table[c] = true;
  for (int c = 'A'; c <= 'Z'; ++c) table[c] = true;
  for (char c : std::string_view("!#$%&'*+-.^_`|~")) table[static_cast<uint8_t>(c)] = true;
  return table;
}();

bool is_token(std::string_view s) {
  if (s.empty()) return false;
  for (char c : s) {
    if (!kTokenChars[static_cast<uint8_t>(c)]) return false;
  }
  return true;
}

std::string_view Request::path() const {
  std::string_view t = target;
  return t.substr(0, t.find('?'));
}

std::string_view Request::query() const {
  std::string_view t = target;
  size_t mark = t.find('?');
  return mark == std::string_view::npos ? std::string_view{} : t.substr(mark + 1);
}

const Header* Request::find(std::string_view name) const {
  for (const Header& h : header_list()) {
    if (iequals(h.name, name)) return &h;
  }
  return nullptr;
}

// llhttp calls these with llhttp_t::data pointing at the RequestParser. A callback that
// refuses the request records error_ and returns an llhttp error code, which makes
// llhttp_execute() stop and return it.
struct RequestParser::Callbacks {
  static RequestParser& self(llhttp_t* p) { return *static_cast<RequestParser*>(p->data); }

  static int on_message_begin(llhttp_t* p) {
    self(p).in_message_ = true;
    return HPE_OK;
  }

  static int on_method(llhttp_t* p, const char* at, size_t len) {
    self(p).request_.method.append(at, len);
    return HPE_OK;
  }

  static int on_url(llhttp_t* p, const char* at, size_t len) {
    self(p).request_.target.append(at, len);
    return HPE_OK;
  }

  static int on_version(llhttp_t* p, const char* at, size_t /*len*/) {
    RequestParser& parser = self(p);
    if (parser.version_seen_) return HPE_OK;  // a later piece of a split version
    parser.version_seen_ = true;
    // llhttp 8.1 also accepts "RTSP/1.0" and "ICE/1.0" request lines, and has no callback
    // for the protocol name: look at the bytes just before the version instead.
    if (!parser.version_preceded_by_http(at)) {
      return parser.refuse_in_callback(400, "malformed request line (protocol is not HTTP)");
    }
    return HPE_OK;
  }

  static int on_version_complete(llhttp_t* p) {
    // llhttp also accepts 0.9 and 2.0 (for PRI); we speak 1.0 and 1.1 only.
    if (p->http_major != 1) return self(p).refuse_in_callback(505, "HTTP version not supported");
    self(p).request_.http_minor = p->http_minor;
    return HPE_OK;
  }

  static int on_header_field(llhttp_t* p, const char* at, size_t len) {
    RequestParser& parser = self(p);
    if (parser.headers_done_) return on_trailer(parser, len);
    if (!parser.in_header_field_) {
      // One field may arrive in several callbacks (split across feed() calls).
      if (parser.request_.header_count == parser.limits_.max_headers) {
        return parser.refuse_in_callback(431, "too many request headers");
      }
      parser.begin_header();
      parser.in_header_field_ = true;
    }
    parser.request_.headers[parser.request_.header_count - 1].name.append(at, len);
    return HPE_OK;
  }

  static int on_header_field_complete(llhttp_t* p) {
    RequestParser& parser = self(p);
    parser.in_header_field_ = false;
    if (parser.headers_done_) return HPE_OK;
    // llhttp's loose mode lets "Name : v" and "Two words: v" through; RFC 9112 section 5.1
    // requires a 400 (a proxy in front may read "Transfer-Encoding :" differently: smuggling).
    if (!is_token(parser.request_.headers[parser.request_.header_count - 1].name)) {
      return parser.refuse_in_callback(400, "invalid header token (header name is not a token)");
    }
    return HPE_OK;
  }

  static int on_header_value(llhttp_t* p, const char* at, size_t len) {
    RequestParser& parser = self(p);
    if (parser.headers_done_) return on_trailer(parser, len);
    assert(parser.request_.header_count > 0);
    parser.request_.headers[parser.request_.header_count - 1].value.append(at, len);
    return HPE_OK;
  }

  static int on_header_value_complete(llhttp_t* p) {
    RequestParser& parser = self(p);
    if (parser.headers_done_) return HPE_OK;
    assert(parser.request_.header_count > 0);
    trim_trailing_whitespace(parser.request_.headers[parser.request_.header_count - 1].value);
    return HPE_OK;
  }

  // Trailers (after a chunked body) are dropped, as RFC 9110 section 6.5.1 allows, but their
  // bytes still count against the header limit so a client cannot stream them forever.
  static int on_trailer(RequestParser& parser, size_t len) {
    parser.header_bytes_ += len;
    if (parser.header_bytes_ > parser.limits_.max_header_bytes) {
      return parser.refuse_in_callback(431, "request trailers too large");
    }
    return HPE_OK;
  }

  static int on_headers_complete(llhttp_t* p) {
    RequestParser& parser = self(p);
    parser.headers_done_ = true;
    int err = parser.check_headers();
    if (err != HPE_OK) return err;
    // Pause so feed() learns where the head ends and can hold it to max_header_bytes.
    parser.pause_ = Pause::headers_complete;
    return HPE_PAUSED;
  }

  static int on_chunk_header(llhttp_t* p) {
    // llhttp stores the announced chunk size in content_length: refuse before receiving it.
    RequestParser& parser = self(p);
    if (p->content_length > parser.body_room()) {
      return parser.refuse_in_callback(413, "request body too large");
    }
    return HPE_OK;
  }

  static int on_body(llhttp_t* p, const char* at, size_t len) {
    RequestParser& parser = self(p);
    std::string& body = parser.request_.body;
    // Redundant with the Content-Length and chunk-size checks; kept as the last line of defence.
    if (len > parser.body_room()) {
      return parser.refuse_in_callback(413, "request body too large");
    }
    body.append(at, len);
    return HPE_OK;
  }

  static int on_message_complete(llhttp_t* p) {
    RequestParser& parser = self(p);
    // Read the flags now: llhttp clears them right after this callback.
    parser.request_.keep_alive = llhttp_should_keep_alive(p) != 0;
    parser.in_message_ = false;
    parser.continue_wanted_ = false;
    // Pause so one feed() never runs into the next pipelined request.
    parser.pause_ = Pause::message_complete;
    return HPE_PAUSED;
  }

  static const llhttp_settings_t kSettings;
};

// Constant-initialized, so it exists before any static RequestParser could need it, and it
// outlives every parser (llhttp keeps a pointer to it).
constinit const llhttp_settings_t RequestParser::Callbacks::kSettings = {
    .on_message_begin = on_message_begin,
    .on_url = on_url,
    .on_status = nullptr,
    .on_method = on_method,
    .on_version = on_version,
    .on_header_field = on_header_field,
    .on_header_value = on_header_value,
    .on_chunk_extension_name = nullptr,
    .on_chunk_extension_value = nullptr,
    .on_headers_complete = on_headers_complete,
    .on_body = on_body,
    .on_message_complete = on_message_complete,
    .on_url_complete = nullptr,
    .on_status_complete = nullptr,
    .on_method_complete = nullptr,
    .on_version_complete = on_version_complete,
    .on_header_field_complete = on_header_field_complete,
    .on_header_value_complete = on_header_value_complete,
    .on_chunk_extension_name_complete = nullptr,
    .on_chunk_extension_value_complete = nullptr,
    .on_chunk_header = on_chunk_header,
    .on_chunk_complete = nullptr,
    .on_reset = nullptr,
};

RequestParser::RequestParser(const Limits& limits) : limits_(limits) {
  assert(limits_.max_header_bytes > 0);
  reset();
}

void RequestParser::reset() {
  // Strict parsing: no llhttp_set_lenient_*() calls, ever (request smuggling).
  llhttp_init(&llhttp_, HTTP_REQUEST, &Callbacks::kSettings);
  llhttp_.data = this;
  clear_request();
  error_.status = 0;
  error_.message.clear();
}

void RequestParser::next() {
  assert(state_ == State::complete);
  assert(llhttp_get_errno(&llhttp_) == HPE_PAUSED);
  // Resume, not reset: llhttp still has to run its end-of-message step (and, after a request
  // without keep-alive, it then discards whatever follows; the connection closes anyway).
  llhttp_resume(&llhttp_);
  if (request_.body.capacity() > kRetainedBodyCapacityBytes) std::string().swap(request_.body);
  clear_request();
}

uint64_t RequestParser::body_room() const {
  uint64_t limit = stream_limit_ > 0 ? stream_limit_ : limits_.max_body_bytes;
  uint64_t used = streamed_bytes_ + request_.body.size();
  return used >= limit ? 0 : limit - used;
}

void RequestParser::take_body(std::string& out) {
  assert(stream_limit_ > 0);
  out.swap(request_.body);
  request_.body.clear();
  streamed_bytes_ += out.size();
}

void RequestParser::clear_request() {
  stream_limit_ = 0;
  streamed_bytes_ = 0;
  request_.method.clear();
  request_.target.clear();
  request_.header_count = 0;  // the Header objects stay, as spare buffers
  request_.body.clear();
  request_.keep_alive = false;
  request_.http_minor = 1;
  state_ = State::reading;
  pause_ = Pause::none;
  header_bytes_ = 0;
  recent_len_ = 0;
  headers_done_ = false;
  version_seen_ = false;
  in_message_ = false;
  in_header_field_ = false;
  continue_wanted_ = false;
  head_last_byte_lf_ = false;
  callback_failed_ = false;
}

bool RequestParser::take_continue_request() {
  bool wanted = continue_wanted_;
  continue_wanted_ = false;
  return wanted;
}

Header& RequestParser::begin_header() {
  std::vector<Header>& headers = request_.headers;
  if (request_.header_count == headers.size()) {
    headers.emplace_back();
  } else {
    headers[request_.header_count].name.clear();
    headers[request_.header_count].value.clear();
  }
  return headers[request_.header_count++];
}

uint64_t RequestParser::header_budget_left() const {
  assert(header_bytes_ <= limits_.max_header_bytes);
  return limits_.max_header_bytes - header_bytes_;
}

int RequestParser::refuse_in_callback(int status, std::string_view message) {
  error_.status = status;
  error_.message.assign(message);
  callback_failed_ = true;
  return HPE_USER;
}

int RequestParser::check_headers() {
  // "GET /x" with no version: llhttp takes it as HTTP/0.9, which we do not speak.
  if (!version_seen_) return refuse_in_callback(400, "malformed request line (no HTTP version)");
  if (llhttp_.method == HTTP_CONNECT) return refuse_in_callback(501, "CONNECT is not supported");
  // RFC 9112 section 3.2: an HTTP/1.1 request without exactly one Host is a 400.
  if (request_.http_minor >= 1) {
    size_t hosts = 0;
    for (const Header& h : request_.header_list()) hosts += iequals(h.name, "host") ? 1 : 0;
    if (hosts == 0) return refuse_in_callback(400, "missing Host header (HTTP/1.1 requires one)");
    if (hosts > 1) return refuse_in_callback(400, "more than one Host header");
  }
  // "Connection: upgrade" + "Upgrade: x": a server may ignore the offer (RFC 9110 section
  // 7.8) and answer in HTTP/1.1, which is what clients such as `curl --http2` expect.
  llhttp_.upgrade = 0;

  if (llhttp_.flags & F_TRANSFER_ENCODING) {
    // llhttp accepts "gzip, chunked" as chunked; we would hand the function gzip bytes.
    size_t te_headers = 0;
    bool only_chunked = true;
    for (const Header& h : request_.header_list()) {
      if (!iequals(h.name, "transfer-encoding")) continue;
      ++te_headers;
      only_chunked = only_chunked && iequals(h.value, "chunked");
    }
    if (te_headers != 1 || !only_chunked) {
      return refuse_in_callback(501, "unsupported Transfer-Encoding (only chunked is implemented)");
    }
  }

  bool has_body = (llhttp_.flags & F_CHUNKED) != 0 || llhttp_.content_length > 0;
  stream_limit_ = body_policy_ != nullptr && has_body ? body_policy_->stream_limit(request_) : 0;
  if (!(llhttp_.flags & F_CHUNKED) && llhttp_.content_length > 0) {
    if (llhttp_.content_length > body_room()) {
      return refuse_in_callback(413, "request body too large");
    }
    // Bounded by max_body_bytes; saves the copies of geometric growth for big bodies. A
    // streamed body is taken piece by piece and never held whole.
    if (stream_limit_ == 0) request_.body.reserve(llhttp_.content_length);
  }

  // RFC 9110 section 10.1.1: never send 100 Continue to an HTTP/1.0 client.
  if (has_body && request_.http_minor >= 1) {
    const Header* expect = request_.find("expect");
    continue_wanted_ = expect != nullptr && iequals(expect->value, "100-continue");
  }
  return HPE_OK;
}

bool RequestParser::version_preceded_by_http(const char* version_start) const {
  static constexpr std::string_view kProtocol = "HTTP/";
  assert(version_start >= chunk_start_);
  size_t in_chunk = static_cast<size_t>(version_start - chunk_start_);
  if (in_chunk >= kProtocol.size()) {
    return std::string_view(version_start - kProtocol.size(), kProtocol.size()) == kProtocol;
  }
  // The protocol began in an earlier feed() call: take the rest from recent_.
  size_t from_recent = kProtocol.size() - in_chunk;
  if (recent_len_ < from_recent) return false;
  return std::string_view(recent_ + recent_len_ - from_recent, from_recent) == kProtocol.substr(0, from_recent) &&
         std::string_view(chunk_start_, in_chunk) == kProtocol.substr(from_recent);
}

void RequestParser::remember_recent_bytes(const char* data, size_t len) {
  // Keep the last sizeof(recent_) bytes of the head seen so far.
  size_t keep_new = std::min(len, sizeof recent_);
  size_t keep_old = std::min(recent_len_, sizeof recent_ - keep_new);
  std::memmove(recent_, recent_ + recent_len_ - keep_old, keep_old);
  std::memcpy(recent_ + keep_old, data + len - keep_new, keep_new);
  recent_len_ = keep_old + keep_new;
}

// RFC 9112 section 5.2: a line of the head that starts with SP or HTAB continues the line
// before it (obs-fold). llhttp folds it into the value; we refuse it instead, as the RFC
// allows, since a proxy in front may read such a header differently. In a head, LF followed
// by SP or HTAB is nothing else (whitespace before the first header is refused for the same
// reason). Scanned on the raw bytes: llhttp reports no event for a fold.
bool RequestParser::head_has_obs_fold(const char* data, size_t len) {
  if (len == 0) return false;
  auto blank = [](char c) { return c == ' ' || c == '\t'; };
  if (head_last_byte_lf_ && blank(data[0])) return true;
  const char* end = data + len;
  for (const char* p = data; (p = static_cast<const char*>(std::memchr(p, '\n', static_cast<size_t>(end - p))));) {
    ++p;
    if (p < end && blank(*p)) return true;
  }
  head_last_byte_lf_ = data[len - 1] == '\n';
  return false;
}

RequestParser::Result RequestParser::fail(int status, std::string_view message, size_t consumed) {
  error_.status = status;
  error_.message.assign(message);
  state_ = State::error;
  continue_wanted_ = false;
  return {Status::error, consumed};
}

RequestParser::Result RequestParser::fail_from_llhttp(llhttp_errno_t err, const char* data, size_t len) {
  const char* pos = llhttp_get_error_pos(&llhttp_);
  size_t consumed = pos != nullptr && pos >= data ? std::min(static_cast<size_t>(pos - data), len) : 0;
  // A fold llhttp took in may be what made the head invalid: say so rather than what followed.
  // (The byte at the error position counts: llhttp may stop on the fold's blank itself.)
  const char* scan_end = data + std::min(consumed + 1, len);
  if (!headers_done_ && chunk_start_ >= data && chunk_start_ <= scan_end &&
      head_has_obs_fold(chunk_start_, static_cast<size_t>(scan_end - chunk_start_)))
    return fail(400, kObsFoldMessage, consumed);
  if (callback_failed_) {
    state_ = State::error;
    continue_wanted_ = false;
    return {Status::error, consumed};
  }
  int status = 400;
  switch (err) {
    case HPE_INVALID_VERSION: status = 505; break;
    case HPE_PAUSED_H2_UPGRADE: status = 505; break;  // "PRI * HTTP/2.0": prior-knowledge HTTP/2
    case HPE_PAUSED_UPGRADE: status = 501; break;     // unreachable: check_headers() clears upgrade
    default: break;
  }
  std::string message = llhttp_error_phrase(err);
  const char* reason = llhttp_get_error_reason(&llhttp_);
  if (reason != nullptr && reason[0] != '\0') message.append(" (").append(reason).append(")");
  return fail(status, message, consumed);
}

RequestParser::Result RequestParser::feed(const char* data, size_t len) {
  assert(state_ != State::complete && "call next() before feeding the next request");
  if (state_ == State::error) return {Status::error, 0};
  if (len == 0) return {Status::need_more, 0};

  size_t offset = 0;
  for (;;) {
    // Until the head is complete, hand llhttp at most one byte more than the head may still
    // use: the overflow is then detected without parsing (and buffering) any further.
    size_t chunk = len - offset;
    if (!headers_done_) chunk = static_cast<size_t>(std::min<uint64_t>(chunk, header_budget_left() + 1));

    pause_ = Pause::none;
    chunk_start_ = data + offset;
    llhttp_errno_t err = llhttp_execute(&llhttp_, data + offset, chunk);
    if (err == HPE_OK) {
      if (!headers_done_) {
        if (head_has_obs_fold(data + offset, chunk)) return fail(400, kObsFoldMessage, offset + chunk);
        if (!version_seen_) remember_recent_bytes(data + offset, chunk);
        header_bytes_ += chunk;
        if (header_bytes_ > limits_.max_header_bytes) return fail(431, "request headers too large", offset + chunk);
      }
      assert(offset + chunk == len);  // only a head over budget stops short of the end
      return {Status::need_more, len};
    }
    if (err != HPE_PAUSED || pause_ == Pause::none) return fail_from_llhttp(err, data, len);

    size_t paused_at = static_cast<size_t>(llhttp_get_error_pos(&llhttp_) - data);
    assert(paused_at >= offset && paused_at <= offset + chunk);
    if (pause_ == Pause::message_complete) {
      state_ = State::complete;
      return {Status::complete, paused_at};
    }
    assert(pause_ == Pause::headers_complete);
    if (head_has_obs_fold(data + offset, paused_at - offset)) return fail(400, kObsFoldMessage, paused_at);
    header_bytes_ += paused_at - offset;
    if (header_bytes_ > limits_.max_header_bytes) return fail(431, "request headers too large", paused_at);
    header_bytes_ = 0;  // from here on it counts trailer bytes
    llhttp_resume(&llhttp_);
    // Run llhttp again even with no bytes left: a request without a body completes right here.
    offset = paused_at;
  }
}

}  // namespace faasvisor::http
