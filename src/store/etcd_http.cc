#include "store/etcd_http.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cassert>
#include <cstring>

#include "util/clock.h"
#include "util/number.h"

namespace faasvisor::store {

Result<std::vector<EtcdEndpoint>> parse_etcd_endpoints(std::string_view spec) {
  if (spec.rfind("etcd://", 0) == 0) spec.remove_prefix(7);
  std::vector<EtcdEndpoint> out;
  while (!spec.empty()) {
    size_t comma = spec.find(',');
    std::string_view item = spec.substr(0, comma);
    spec = comma == std::string_view::npos ? std::string_view{} : spec.substr(comma + 1);
    size_t colon = item.rfind(':');
    auto port = colon == std::string_view::npos ? std::nullopt : parse_decimal(item.substr(colon + 1));
    if (!port || *port == 0 || *port > 65535 || colon == 0)
      return plain_error("--store etcd://", "'" + std::string(item) + "' is not HOST:PORT");
    std::string host(item.substr(0, colon));
    EtcdEndpoint ep;
    ep.text = std::string(item);
    ep.addr.sin_family = AF_INET;
    ep.addr.sin_port = htons(static_cast<uint16_t>(*port));
    if (inet_pton(AF_INET, host.c_str(), &ep.addr.sin_addr) != 1) {
      addrinfo hints{};
      hints.ai_family = AF_INET;
      hints.ai_socktype = SOCK_STREAM;
      addrinfo *res = nullptr;
      if (getaddrinfo(host.c_str(), nullptr, &hints, &res) != 0 || res == nullptr)
        return plain_error("--store etcd://", "cannot resolve '" + host + "'");
      ep.addr.sin_addr = reinterpret_cast<sockaddr_in *>(res->ai_addr)->sin_addr;
      freeaddrinfo(res);
    }
    out.push_back(std::move(ep));
  }
  if (out.empty()) return plain_error("--store etcd://", "no endpoint given");
  if (out.size() > 16) return plain_error("--store etcd://", "more than 16 endpoints");
  return out;
}

ResponseParser::ResponseParser() {
  llhttp_settings_init(&settings_);
  settings_.on_body = &on_body;
  settings_.on_message_complete = &on_complete;
  reset();
}

void ResponseParser::reset() {
  llhttp_init(&parser_, HTTP_RESPONSE, &settings_);
  parser_.data = this;
  complete_ = false;
  keep_alive_ = false;
  status_ = 0;
  body.clear();
}

int ResponseParser::on_body(llhttp_t *p, const char *at, size_t len) {
  auto *self = static_cast<ResponseParser *>(p->data);
  if (self->body.size() + len > kMaxBufferedBodyBytes) return -1;
  self->body.append(at, len);
  return 0;
}

int ResponseParser::on_complete(llhttp_t *p) {
  auto *self = static_cast<ResponseParser *>(p->data);
  self->complete_ = true;
  self->status_ = p->status_code;
  self->keep_alive_ = llhttp_should_keep_alive(p) != 0;
  return HPE_PAUSED;  // one response per request: anything after it is not ours
}

Status ResponseParser::feed(std::string_view bytes) {
  if (complete_) return plain_error("etcd", "bytes after the response");
  llhttp_errno_t err = llhttp_execute(&parser_, bytes.data(), bytes.size());
  if (err == HPE_OK || (err == HPE_PAUSED && complete_)) {
    if (status_ == 0) status_ = parser_.status_code;
    return {};
  }
  return plain_error("etcd: bad HTTP response", llhttp_get_error_reason(&parser_));
}

std::string http_post_request(const EtcdEndpoint &ep, std::string_view path, std::string_view json_body) {
  std::string out;
  out.reserve(json_body.size() + 128);
  out += "POST ";
  out += path;
  out += " HTTP/1.1\r\nHost: ";
  out += ep.text;
  out += "\r\nContent-Type: application/json\r\nContent-Length: ";
  out += std::to_string(json_body.size());
  out += "\r\n\r\n";
  out += json_body;
  return out;
}

Result<BlockingResponse> blocking_post(const EtcdEndpoint &ep, std::string_view path, std::string_view json_body,
                                       uint64_t timeout_ms) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0) return errno_error("etcd: socket");
  uint64_t deadline_ns = monotonic_ns() + timeout_ms * 1'000'000;
  auto wait_for = [&](short events) -> Status {
    uint64_t now = monotonic_ns();
    if (now >= deadline_ns) return errno_error("etcd", ETIMEDOUT);
    pollfd pfd{fd, events, 0};
    int n = ::poll(&pfd, 1, static_cast<int>((deadline_ns - now) / 1'000'000 + 1));
    if (n < 0) return errno_error("etcd: poll");
    if (n == 0) return errno_error("etcd", ETIMEDOUT);
    return {};
  };
  auto fail = [&](Error e) -> Result<BlockingResponse> {
    ::close(fd);
    e.detail = ep.text + (e.detail.empty() ? "" : ": " + e.detail);
    return e;
  };
  if (connect(fd, reinterpret_cast<const sockaddr *>(&ep.addr), sizeof ep.addr) < 0 && errno != EINPROGRESS)
    return fail(errno_error("etcd: connect"));
  if (Status st = wait_for(POLLOUT); !st.ok()) return fail(st.error());
  int soerr = 0;
  socklen_t len = sizeof soerr;
  getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &len);
  if (soerr != 0) return fail(errno_error("etcd: connect", soerr));
  std::string out = http_post_request(ep, path, json_body);
  for (size_t sent = 0; sent < out.size();) {
    ssize_t n = ::send(fd, out.data() + sent, out.size() - sent, MSG_NOSIGNAL);
    if (n < 0 && errno == EAGAIN) {
      if (Status st = wait_for(POLLOUT); !st.ok()) return fail(st.error());
      continue;
    }
    if (n < 0) return fail(errno_error("etcd: send"));
    sent += static_cast<size_t>(n);
  }
  ResponseParser parser;
  char buf[16 * 1024];
  while (!parser.complete()) {
    ssize_t n = ::recv(fd, buf, sizeof buf, 0);
    if (n < 0 && errno == EAGAIN) {
      if (Status st = wait_for(POLLIN); !st.ok()) return fail(st.error());
      continue;
    }
    if (n < 0) return fail(errno_error("etcd: recv"));
    if (n == 0) return fail(plain_error("etcd", "connection closed before the response ended"));
    if (Status st = parser.feed({buf, static_cast<size_t>(n)}); !st.ok()) return fail(st.error());
  }
  ::close(fd);
  return BlockingResponse{parser.status(), std::move(parser.body)};
}

EtcdConnection::EtcdConnection(io::Ring &ring, io::TimerQueue &timers) : ring_(ring), timers_(timers) {
  op_.owner = this;
  op_.callback = &on_op;
  deadline_.owner = this;
  deadline_.callback = &on_deadline;
}

EtcdConnection::~EtcdConnection() {
  assert(quiescent());
  timers_.stop(deadline_);
  if (fd_ >= 0) ::close(fd_);
}

void EtcdConnection::close_socket() {
  assert(!op_.in_flight);
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
  connected_ = false;
  endpoint_ = nullptr;
}

void EtcdConnection::request(const EtcdEndpoint &ep, std::string_view path, std::string_view json_body,
                             uint64_t timeout_ms, Sink &sink) {
  assert(!busy() && !op_.in_flight);
  sink_ = &sink;
  failing_ = false;
  response_.reset();
  out_ = http_post_request(ep, path, json_body);
  sent_ = 0;
  if (timeout_ms > 0) timers_.start(deadline_, monotonic_ns() + timeout_ms * 1'000'000);
  got_bytes_ = false;
  reused_ = fd_ >= 0 && connected_ && endpoint_ == &ep;
  if (reused_) {
    step_ = Step::sending;
    ring_.send(op_, fd_, out_.data(), out_.size());
    return;
  }
  close_socket();
  endpoint_ = &ep;
  fd_ = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd_ < 0) {
    failing_ = true;
    error_ = errno_error("etcd: socket");
    step_ = Step::idle;
    ring_.nop(op_);  // report from the loop, never from inside request()
    return;
  }
  peer_ = ep.addr;
  step_ = Step::connecting;
  ring_.connect(op_, fd_, reinterpret_cast<const sockaddr *>(&peer_), sizeof peer_);
}

void EtcdConnection::abort() {
  if (!busy() || failing_) return;
  fail(errno_error("etcd", ECANCELED));
}

void EtcdConnection::fail(Error error) {
  assert(busy() && !failing_);
  failing_ = true;
  error_ = std::move(error);
  timers_.stop(deadline_);
  if (op_.in_flight) ring_.cancel(op_);  // finish_failure once its CQE arrives
  else ring_.nop(op_);
}

void EtcdConnection::finish_failure() {
  close_socket();
  step_ = Step::idle;
  Sink *sink = sink_;
  sink_ = nullptr;
  Error e = std::move(error_);
  sink->on_response(e, 0, {});
}

void EtcdConnection::on_deadline(io::Timer &t) {
  auto &self = t.owner_as<EtcdConnection>();
  if (self.busy() && !self.failing_) self.fail(errno_error("etcd: no answer in time", ETIMEDOUT));
}

// A kept-alive connection the server closed while idle (etcd restarted, or its idle
// timeout) fails the next request before any answer: that request goes again, once, on a
// fresh connection, as HTTP clients do.
bool EtcdConnection::retry_fresh() {
  if (!reused_ || got_bytes_) return false;
  const EtcdEndpoint *ep = endpoint_;
  close_socket();
  reused_ = false;
  endpoint_ = ep;
  fd_ = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd_ < 0) return false;
  sent_ = 0;
  response_.reset();
  peer_ = ep->addr;
  step_ = Step::connecting;
  ring_.connect(op_, fd_, reinterpret_cast<const sockaddr *>(&peer_), sizeof peer_);
  return true;
}

void EtcdConnection::arm_recv() {
  step_ = Step::receiving;
  ring_.recv(op_, fd_, in_, sizeof in_);
}

void EtcdConnection::on_op(io::Completion &c, int result, uint32_t) {
  auto &self = c.owner_as<EtcdConnection>();
  if (self.failing_) return self.finish_failure();
  switch (self.step_) {
    case Step::idle:
      return;
    case Step::connecting:
      if (result < 0) return self.fail(errno_error("etcd: connect", -result));
      self.connected_ = true;
      self.step_ = Step::sending;
      self.ring_.send(self.op_, self.fd_, self.out_.data(), self.out_.size());
      return;
    case Step::sending:
      if (result < 0 && self.retry_fresh()) return;
      if (result < 0) return self.fail(errno_error("etcd: send", -result));
      self.sent_ += static_cast<size_t>(result);
      if (self.sent_ < self.out_.size()) {
        self.ring_.send(self.op_, self.fd_, self.out_.data() + self.sent_, self.out_.size() - self.sent_);
        return;
      }
      return self.arm_recv();
    case Step::receiving: {
      if (result <= 0 && self.retry_fresh()) return;
      if (result < 0) return self.fail(errno_error("etcd: recv", -result));
      self.got_bytes_ = true;
      if (result == 0) return self.fail(plain_error("etcd", "the connection closed before the response ended"));
      if (Status st = self.response_.feed({self.in_, static_cast<size_t>(result)}); !st.ok())
        return self.fail(st.error());
      if (!self.response_.body.empty()) self.sink_->on_body(self.response_.body);
      // on_body may have aborted the request.
      if (self.failing_) return;
      if (!self.response_.complete()) return self.arm_recv();
      self.timers_.stop(self.deadline_);
      if (!self.response_.keep_alive()) self.close_socket();
      self.step_ = Step::idle;
      Sink *sink = self.sink_;
      self.sink_ = nullptr;
      sink->on_response({}, self.response_.status(), std::move(self.response_.body));
      return;
    }
  }
}

}  // namespace faasvisor::store
