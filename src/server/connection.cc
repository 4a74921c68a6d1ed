#include "server/connection.h"

#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cassert>
#include <cstdio>
#include <cstring>

#include "util/json.h"
#include "http/response.h"
#include "server/logs.h"
#include "server/node_impl.h"
#include "util/clock.h"
#include "util/log.h"

namespace faasvisor {
namespace {
constexpr size_t kRecvBufferBytes = 16 * 1024;
constexpr size_t kUploadRecvBufferBytes = 256 * 1024;
// Responses waiting for a client that does not read them (pipelined requests are not parsed
// past this), and the backlog a log follower may build before it is dropped.
constexpr size_t kMaxOutputBacklogBytes = 1u << 20;

bool skip_response_header(std::string_view name) {
  // The node frames the response itself; these would contradict it.
  static constexpr std::string_view kNames[] = {"content-length", "transfer-encoding", "connection",
                                                "keep-alive", "upgrade", "trailer"};
  for (std::string_view h : kNames)
    if (http::iequals(name, h)) return true;
  return false;
}

bool header_safe(std::string_view s) {
  return s.find_first_of("\r\n") == std::string_view::npos && s.find('\0') == std::string_view::npos;
}
}  // namespace

Connection::Connection(NodeImpl &node, int fd)
    : node_(node), fd_(fd), parser_(node.http_limits) {
  parser_.set_body_policy(this);
  upload_op_.owner = this;
  upload_op_.callback = &Connection::on_upload_write;
  file_op_.owner = this;
  file_op_.callback = &Connection::on_file;
  recv_op_.owner = send_op_.owner = this;
  recv_op_.callback = &Connection::on_recv;
  send_op_.callback = &Connection::on_send;
  idle_timer_.owner = this;
  idle_timer_.callback = &Connection::on_idle;
  invocation_.sink = this;
}

Connection::~Connection() {
  assert(!recv_op_.in_flight && !send_op_.in_flight && !upload_op_.in_flight && !file_op_.in_flight);
  if (upload_fd_ >= 0) ::close(upload_fd_);
  close_file();
  node_.timers->stop(idle_timer_);
  if (fd_ >= 0) ::close(fd_);
}

void Connection::start() {
  in_.resize(kRecvBufferBytes);
  arm_recv();
}

void Connection::arm_recv() {
  if (closing_ || recv_op_.in_flight) return;
  // Compact only here, with no receive in flight: the kernel writes at the offset the last
  // recv was armed with, so the bytes must not move while it is pending.
  if (in_start_ > 0) {
    std::memmove(in_.data(), in_.data() + in_start_, in_len_ - in_start_);
    in_len_ -= in_start_;
    in_start_ = 0;
  }
  if (in_len_ == in_.size()) return;  // full of pipelined requests: wait until they are served
  // An upload's helper has not taken the last chunk yet: the socket buffers push back.
  if (upload_op_.in_flight) return;
  // A client that sends requests without reading the answers: stop reading until it does
  // (on_send resumes). The kernel's socket buffers then push back on it.
  if (output_backlogged()) return;
  node_.ring->recv(recv_op_, fd_, in_.data() + in_len_, in_.size() - in_len_);
  rearm_deadline();
}

bool Connection::output_backlogged() const {
  return out_.size() + (sending_.size() - sent_) > kMaxOutputBacklogBytes;
}

// One timer, the earliest of: the idle timeout since the last byte (between requests, and
// silence within one), the head deadline from the request's first byte, and the body
// deadline from the end of its head. Re-arming on every byte cannot push the last two back.
void Connection::rearm_deadline() {
  uint64_t now = monotonic_ns();
  uint64_t deadline = now + node_.options.idle_timeout_ms * 1'000'000ull;
  if (!request_active_ && parser_.in_message()) {
    if (head_started_ns_ == 0) head_started_ns_ = now;
    if (parser_.head_complete()) {
      if (body_started_ns_ == 0) body_started_ns_ = now;
      // A streamed upload may take longer than any body (the helper's deadline bounds it);
      // the idle timeout still ends one that stalls.
      if (!parser_.streaming())
        deadline = std::min<uint64_t>(deadline, body_started_ns_ + node_.options.body_timeout_ms * 1'000'000ull);
    } else {
      deadline = std::min<uint64_t>(deadline, head_started_ns_ + node_.options.header_timeout_ms * 1'000'000ull);
    }
  }
  node_.timers->start(idle_timer_, deadline);
}

const char *Connection::deadline_expired_because() const {
  uint64_t now = monotonic_ns();
  if (parser_.head_complete()) {
    if (body_started_ns_ != 0 && now >= body_started_ns_ + node_.options.body_timeout_ms * 1'000'000ull)
      return "request body not received within the body timeout";
  } else if (head_started_ns_ != 0 && now >= head_started_ns_ + node_.options.header_timeout_ms * 1'000'000ull) {
    return "request headers not received within the header timeout";
  }
  return "request not completed within the idle timeout";
}

void Connection::on_recv(io::Completion &c, int result, uint32_t) {
  auto &self = c.owner_as<Connection>();
  if (self.closing_) return self.maybe_free();
  if (result <= 0) {
    // End of stream or an error. A client may half-close after its last request: answer what
    // is in progress, then close.
    if (result == 0 && self.request_active_ && !self.streaming_) self.close_when_idle();
    else self.close();
    return self.maybe_free();
  }
  self.in_len_ += static_cast<size_t>(result);
  self.process_input();
  self.arm_recv();
  // Not re-armed by arm_recv (buffer full, output backlogged, request running): the
  // deadlines still count from the bytes that arrived.
  if (!self.recv_op_.in_flight && !self.closing_) self.rearm_deadline();
  self.maybe_free();
}

void Connection::process_input() {
  // Never re-entered: results of invocations reach invocation_done from the pool's
  // completed queue after the CQ batch (Pool::run_completed), not from inside
  // handle_request, so no latch is needed; the assertion keeps it so.
  assert(!processing_ && "Connection::process_input re-entered");
  processing_ = true;
  while (!request_active_ && !closing_ && !close_after_send_ && in_start_ < in_len_ && !output_backlogged() &&
         !upload_op_.in_flight) {
    auto result = parser_.feed(in_.data() + in_start_, in_len_ - in_start_);
    in_start_ += result.consumed;
    if (parser_.streaming() && result.status == http::RequestParser::Status::need_more && !stream_upload()) break;
    if (result.status == http::RequestParser::Status::need_more) {
      if (parser_.take_continue_request()) {
        out_ += "HTTP/1.1 100 Continue\r\n\r\n";
        flush();
      }
      break;
    }
    request_active_ = true;
    head_started_ns_ = body_started_ns_ = 0;
    if (result.status == http::RequestParser::Status::error) {
      keep_alive_ = false;
      parse_failed_ = true;  // the parser cannot go on: answer, then close
      const http::Error &err = parser_.error();
      respond_error(err.status, err.message, openfaas_error_mark(parser_.request()));
      break;
    }
    handle_request();
  }
  processing_ = false;
}

void Connection::handle_request() {
  http::Request &req = parser_.request();
  keep_alive_ = req.keep_alive && node_.phase == NodeImpl::Phase::running;
  ++request_seq_;
  node_.handle(*this, req, invocation_);
}

void Connection::append_status_line(int status) {
  out_ += "HTTP/1.1 ";
  out_ += std::to_string(status);
  out_ += ' ';
  out_ += http::reason_phrase(status);
  out_ += "\r\n";
}

void Connection::respond(int status, std::string_view content_type, std::string_view body,
                         std::string_view extra_headers) {
  assert(request_active_);
  append_status_line(status);
  if (!content_type.empty()) {
    out_ += "Content-Type: ";
    out_ += content_type;
    out_ += "\r\n";
  }
  out_ += extra_headers;
  out_ += "Content-Length: ";
  out_ += std::to_string(body.size());
  out_ += keep_alive_ ? "\r\n\r\n" : "\r\nConnection: close\r\n\r\n";
  out_ += body;
  finish_request();
}

void Connection::respond_error(int status, std::string_view message, std::string_view extra_headers) {
  std::string body = "{\"error\":";
  http::append_json_string(body, message);
  body += "}";
  respond(status, "application/json", body, extra_headers);
}

void Connection::invocation_done(pool::Invocation &, const pool::InvocationResult &result) {
  if (closing_) return;  // the pool does not call an abandoned invocation's sink; defensive
  std::string extra;
  if (result.instance_id != 0) {
    extra += "X-Faasvisor-Start: ";
    extra += result.cold ? "cold" : "warm";
    extra += "\r\n";
    extra += "X-Faasvisor-Instance: ";
    extra += std::to_string(result.instance_id);
    extra += "\r\n";
    // The OpenFaaS watchdog's header: the node's arrival-to-answer time, queueing and any
    // cold start included (the figure /system/stats summarises as exec_ms).
    char duration[48];
    std::snprintf(duration, sizeof duration, "X-Duration-Seconds: %.6f\r\n",
                  static_cast<double>(result.duration_ns) / 1e9);
    extra += duration;
  }
  if (result.retry_after_s != 0) {
    extra += "Retry-After: ";
    extra += std::to_string(result.retry_after_s);
    extra += "\r\n";
  }
  extra += openfaas_response_headers(parser_.request(), !result.error.empty(), result.headers);
  if (!result.error.empty()) {
    respond_error(result.status, result.error, extra);
  } else {
    std::string_view content_type;
    for (const auto &[name, value] : result.headers) {
      if (skip_response_header(name) || !header_safe(name) || !header_safe(value) || name.empty())
        continue;
      extra += name;
      extra += ": ";
      extra += value;
      extra += "\r\n";
    }
    respond(result.status, content_type, result.body, extra);
  }
  // The response was queued from an instance's callback: continue with pipelined input.
  process_input();
  arm_recv();
}

void Connection::start_stream(int status, std::string_view content_type) {
  assert(request_active_ && !streaming_);
  streaming_ = true;
  append_status_line(status);
  out_ += "Content-Type: ";
  out_ += content_type;
  out_ += "\r\nTransfer-Encoding: chunked\r\nCache-Control: no-cache\r\n\r\n";
  flush();
}

void Connection::stream(std::string_view data) {
  assert(streaming_);
  if (data.empty() || closing_) return;
  // A reader that does not keep up is dropped rather than buffered without bound.
  if (output_backlogged()) {
    FV_WARN("dropping a log follower that does not keep up");
    close();
    return;
  }
  char size[20];
  int n = std::snprintf(size, sizeof size, "%zx\r\n", data.size());
  out_.append(size, static_cast<size_t>(n));
  out_ += data;
  out_ += "\r\n";
  flush();
}

void Connection::end_stream() {
  if (!streaming_ || closing_) return;
  out_ += "0\r\n\r\n";
  streaming_ = false;
  keep_alive_ = false;
  finish_request();
}

void Connection::follow(pool::LogBook &book, std::string function_name, std::string namespace_name) {
  following_ = &book;
  follow_name_ = std::move(function_name);
  follow_namespace_ = std::move(namespace_name);
  book.follow(*this);
}

void Connection::log_line(const pool::LogEntry &entry) {
  std::string line;
  append_log_json(line, follow_name_, follow_namespace_, entry);
  stream(line);
}

void Connection::log_ended() {
  following_ = nullptr;
  end_stream();
}

void Connection::finish_request() {
  request_active_ = false;
  // The keep-alive idle time counts from the end of the last response.
  node_.timers->start(idle_timer_, monotonic_ns() + node_.options.idle_timeout_ms * 1'000'000ull);
  if (parse_failed_) parser_.reset();  // no next request follows on this connection
  else parser_.next();
  if (!keep_alive_) close_after_send_ = true;
  flush();
}

void Connection::flush() {
  if (send_op_.in_flight || out_.empty() || closing_) return;
  sending_.swap(out_);
  out_.clear();
  sent_ = 0;
  node_.ring->send(send_op_, fd_, sending_.data(), sending_.size());
}

void Connection::on_send(io::Completion &c, int result, uint32_t) {
  auto &self = c.owner_as<Connection>();
  if (self.closing_) return self.maybe_free();
  if (result < 0) {
    self.close();
    return self.maybe_free();
  }
  self.sent_ += static_cast<size_t>(result);
  if (self.sent_ < self.sending_.size()) {
    self.node_.ring->send(self.send_op_, self.fd_, self.sending_.data() + self.sent_,
                          self.sending_.size() - self.sent_);
    return;
  }
  self.sending_.clear();
  self.sent_ = 0;
  if (self.sending_.capacity() > 256 * 1024) std::string().swap(self.sending_);
  if (self.out_.empty() && self.close_after_send_) {
    self.close();
    return self.maybe_free();
  }
  self.flush();
  if (self.file_fd_ >= 0) self.read_file_chunk();  // a file being sent: its next chunk
  // Pipelined requests held back while the output was backlogged.
  self.process_input();
  self.arm_recv();
  self.maybe_free();
}

void Connection::on_idle(io::Timer &t) {
  auto &self = t.owner_as<Connection>();
  if (self.request_active_) {
    // An invocation is running: its own deadline governs. Look again later.
    self.node_.timers->start(self.idle_timer_,
                             monotonic_ns() + self.node_.options.idle_timeout_ms * 1'000'000ull);
    return;
  }
  if (self.parser_.in_message() && !self.send_op_.in_flight) {
    // A request started but never finished: tell the client why we hang up.
    self.request_active_ = true;
    self.keep_alive_ = false;
    self.parse_failed_ = true;  // the half-read request is abandoned with the connection
    self.respond_error(408, self.deadline_expired_because(),
                       openfaas_error_mark(self.parser_.request()));
    return;
  }
  self.close();
  self.maybe_free();
}

void Connection::close_when_idle() {
  if (closing_) return;
  if (!request_active_ && !send_op_.in_flight && out_.empty()) {
    close();
    return;
  }
  keep_alive_ = false;
  close_after_send_ = true;
}

void Connection::close() {
  if (closing_) return;
  closing_ = true;
  if (following_ != nullptr) following_->unfollow(*this);
  following_ = nullptr;
  if (request_active_) node_.pool->abandon(invocation_);
  // An upload cut short: its helper drops what it got. One whose body is complete finishes
  // (the image stays in the cache) with nobody to answer.
  if (uploading_ && !upload_body_done_) node_.images->abort_upload(*this);
  if (awaiting_call_ != nullptr) node_.async->forget(*awaiting_call_);  // it runs all the same
  awaiting_call_ = nullptr;
  node_.images->cancel(*this);
  if (upload_op_.in_flight) node_.ring->cancel(upload_op_);
  if (upload_fd_ >= 0) ::close(upload_fd_);
  upload_fd_ = -1;
  if (file_op_.in_flight) node_.ring->cancel(file_op_);
  else close_file();
  pending_deploy_.reset();
  request_active_ = false;
  node_.timers->stop(idle_timer_);
  node_.ring->cancel(recv_op_);
  node_.ring->cancel(send_op_);
  // Stop the peer from writing more; the fd itself closes when the completions are done.
  ::shutdown(fd_, SHUT_RDWR);
}

void Connection::maybe_free() {
  if (!closing_ || freed_ || recv_op_.in_flight || send_op_.in_flight || upload_op_.in_flight || file_op_.in_flight)
    return;
  freed_ = true;
  node_.connection_closed(*this);  // unlinks and deletes this
}

store::Done Connection::durable_reply(int status, std::string body, std::string failure) {
  std::weak_ptr<char> life = life_;
  uint64_t seq = request_seq_;
  return [this, life, seq, status, body = std::move(body), failure = std::move(failure)](Status st) {
    if (life.expired() || closing_ || !request_active_ || seq != request_seq_) return;
    if (!st.ok()) {
      // A shared store that stopped answering (etcd without a quorum) is the client's 503 to
      // retry; anything else is the node's own failure.
      int e = st.error().errno_value;
      bool unreachable = e == ENOTCONN || e == ETIMEDOUT || e == ECONNREFUSED || e == ECONNRESET;
      respond_error(unreachable ? 503 : 500, failure + ": " + st.error().message());
    } else {
      respond(status, "application/json", body);
    }
    // Answered from the store's callback: go on with pipelined requests already received.
    process_input();
    arm_recv();
  };
}

void Connection::await_image(std::shared_ptr<FunctionSpec> spec, bool update) {
  pending_deploy_ = std::move(spec);
  pending_update_ = update;
}

void Connection::call_accepted(std::string_view call_id) {
  awaiting_call_ = nullptr;
  std::string extra = "X-Call-Id: ";
  extra += call_id;
  extra += "\r\n";
  respond(202, {}, {}, extra);
  // Answered from the journal's callback: continue with pipelined input.
  process_input();
  arm_recv();
}

void Connection::call_failed(int status, std::string_view message) {
  awaiting_call_ = nullptr;
  respond_error(status, message);
  process_input();
  arm_recv();
}

void Connection::image_ready(Result<image::Resolved> &result, bool image_fault) {
  if (removing_) {
    removing_ = false;
    if (!result) respond_error(image_fault ? 404 : 503, result.error().message());
    else respond(200, "application/json", "{\"status\":\"removed\",\"digest\":\"" + result->digest + "\"}");
    process_input();
    return arm_recv();
  }
  if (!uploading_) return node_.image_resolved(*this, std::move(pending_deploy_), pending_update_, result, image_fault);
  upload_answered_ = true;
  upload_body_.clear();
  JsonWriter w(upload_body_);
  if (result) {
    upload_status_ = 200;
    w.begin_object().field("digest", result->digest).field("rootfs", result->rootfs);
    w.field("unpacked", result->unpacked).end_object();
  } else {
    upload_status_ = image_fault ? 400 : 503;
    w.begin_object().field("error", result.error().message()).end_object();
  }
  answer_upload();
}

// ---- uploads (POST /system/images) ----

uint64_t Connection::stream_limit(const http::Request &head) {
  if (head.method != "POST" || head.path() != "/system/images") return 0;
  // Only an authorised client may make the node take gigabytes; anyone else's body is held
  // to the usual limit and refused as any /system/ request (401) once it is in.
  if (!node_.upload_allowed(head)) return 0;
  return node_.options.max_image_bytes;
}

// Hands the body bytes parsed so far to the helper. Returns false while a write is in flight.
void Connection::start_upload_helper() {
  if (uploading_) return;
  uploading_ = true;
  Status st = node_.images->receive(node_.options.max_image_bytes, *this, &upload_fd_);
  if (!st.ok()) {
    upload_dropping_ = upload_answered_ = true;
    upload_status_ = 503;
    upload_body_ = "{\"error\":";
    http::append_json_string(upload_body_, st.error().message());
    upload_body_ += "}";
  }
  // Bigger receives while the body streams: fewer trips through the loop per megabyte.
  if (!recv_op_.in_flight && in_.size() < kUploadRecvBufferBytes) in_.resize(kUploadRecvBufferBytes);
}

bool Connection::stream_upload() {
  if (upload_op_.in_flight) return false;
  start_upload_helper();
  parser_.take_body(upload_chunk_);
  if (upload_dropping_ || upload_chunk_.empty()) return true;
  upload_written_ = 0;
  write_upload();
  return false;
}

void Connection::write_upload() {
  node_.ring->write(upload_op_, upload_fd_, upload_chunk_.data() + upload_written_,
                    upload_chunk_.size() - upload_written_);
}

void Connection::on_upload_write(io::Completion &c, int result, uint32_t) {
  auto &self = c.owner_as<Connection>();
  if (self.closing_) return self.maybe_free();
  if (result == -EAGAIN || result == -EINTR) return self.write_upload();  // the pipe is full: the ring retries
  if (result < 0) {
    // EPIPE: the helper stopped reading (it refused the tar, or died): drop the rest of the
    // body, and answer with what the helper says once the whole request is in.
    self.upload_dropping_ = true;
  } else {
    self.upload_written_ += static_cast<size_t>(result);
    if (self.upload_written_ < self.upload_chunk_.size()) return self.write_upload();
  }
  if (self.upload_body_done_) self.end_upload_input();
  self.process_input();
  self.arm_recv();
  self.maybe_free();
}

void Connection::finish_upload() {
  assert(request_active_ && !upload_op_.in_flight);
  start_upload_helper();  // the whole body may have come with the head
  upload_body_done_ = true;
  parser_.take_body(upload_chunk_);
  if (!upload_dropping_ && !upload_chunk_.empty()) {
    upload_written_ = 0;
    return write_upload();
  }
  end_upload_input();
}

void Connection::end_upload_input() {
  if (upload_fd_ >= 0) ::close(upload_fd_);
  upload_fd_ = -1;
  answer_upload();
}

// Answers once both the request is complete (its input closed) and the helper has answered.
void Connection::answer_upload() {
  if (!upload_answered_ || !request_active_ || !upload_body_done_ || upload_op_.in_flight || closing_) return;
  if (upload_fd_ >= 0) return;
  uploading_ = upload_dropping_ = upload_body_done_ = upload_answered_ = false;
  std::string body = std::move(upload_body_);
  std::string().swap(upload_chunk_);
  if (in_.size() > kRecvBufferBytes && !recv_op_.in_flight && in_len_ <= kRecvBufferBytes) {
    in_.resize(kRecvBufferBytes);
    in_.shrink_to_fit();
  }
  respond(upload_status_, "application/json", body);
  process_input();
  arm_recv();
}

}  // namespace faasvisor
