#include "async/callback.h"

#include <sys/socket.h>
#include <unistd.h>

#include <cassert>
#include <cstring>

#include "util/clock.h"

namespace faasvisor::async {

int parse_status_line(std::string_view head) {
  size_t eol = head.find("\r\n");
  if (eol == std::string_view::npos) return 0;
  std::string_view line = head.substr(0, eol);
  if (line.size() < 12 || line.substr(0, 7) != "HTTP/1." || line[8] != ' ') return 0;
  int code = 0;
  for (size_t i = 9; i < 12; ++i) {
    if (line[i] < '0' || line[i] > '9') return 0;
    code = code * 10 + (line[i] - '0');
  }
  if (line.size() > 12 && line[12] != ' ') return 0;
  return code >= 100 ? code : 0;
}

CallbackClient::CallbackClient() {
  op_.owner = this;
  op_.callback = &CallbackClient::on_op;
  timer_.owner = this;
  timer_.callback = &CallbackClient::on_timeout;
}

CallbackClient::~CallbackClient() {
  assert(!busy() && !op_.in_flight && "callback client freed mid-exchange");
  if (fd_ >= 0) ::close(fd_);
}

void CallbackClient::start(io::Ring &ring, io::TimerQueue &timers, const CallbackUrl &url,
                           std::string request, uint64_t timeout_ms) {
  assert(!busy());
  ring_ = &ring;
  timers_ = &timers;
  addr_ = url.addr;
  addr_len_ = url.addr_len;
  request_ = std::move(request);
  sent_ = 0;
  received_ = 0;
  abort_errno_ = 0;
  step_ = Step::connect;
  timers.start(timer_, monotonic_ns() + timeout_ms * 1'000'000ull);
  fd_ = ::socket(addr_.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd_ < 0) {
    // Reported from the loop like every other failure: a NOP carries it there.
    abort_errno_ = errno;
    ring.nop(op_);
    return;
  }
  ring.connect(op_, fd_, reinterpret_cast<const sockaddr *>(&addr_), addr_len_);
}

void CallbackClient::cancel() {
  if (!busy() || abort_errno_ != 0) return;
  abort_errno_ = ECANCELED;
  ring_->cancel(op_);
}

void CallbackClient::on_timeout(io::Timer &t) {
  auto &self = t.owner_as<CallbackClient>();
  if (!self.busy() || self.abort_errno_ != 0) return;
  self.abort_errno_ = ETIMEDOUT;
  self.ring_->cancel(self.op_);
}

void CallbackClient::on_op(io::Completion &c, int result, uint32_t) {
  auto &self = c.owner_as<CallbackClient>();
  if (self.abort_errno_ != 0) {
    const char *what = self.abort_errno_ == ETIMEDOUT ? "callback timed out" : "callback";
    return self.finish(errno_error(what, self.abort_errno_));
  }
  self.step(result);
}

void CallbackClient::step(int result) {
  switch (step_) {
    case Step::connect:
      if (result < 0) return finish(errno_error("connecting to the callback URL", -result));
      step_ = Step::send;
      ring_->send(op_, fd_, request_.data(), request_.size());
      return;
    case Step::send:
      if (result < 0) return finish(errno_error("sending the callback", -result));
      sent_ += static_cast<size_t>(result);
      if (sent_ < request_.size()) {
        ring_->send(op_, fd_, request_.data() + sent_, request_.size() - sent_);
        return;
      }
      step_ = Step::recv;
      response_.resize(4096);
      return arm_recv();
    case Step::recv: {
      if (result < 0) return finish(errno_error("reading the callback's response", -result));
      received_ += static_cast<size_t>(result);
      std::string_view head(response_.data(), received_);
      // The status is all we need; the rest of the head is read so the peer is not reset
      // mid-response.
      if (head.find("\r\n\r\n") != std::string_view::npos || result == 0) {
        int status = parse_status_line(head);
        if (status == 0)
          return finish(plain_error("callback", result == 0 && received_ == 0
                                                    ? "the receiver closed without a response"
                                                    : "the receiver's response is not HTTP/1.x"));
        return finish(status);
      }
      if (received_ == kMaxResponseHeadBytes)
        return finish(plain_error("callback", "the receiver's response head is over 16 KiB"));
      if (received_ == response_.size()) response_.resize(std::min(response_.size() * 2, kMaxResponseHeadBytes));
      return arm_recv();
    }
    case Step::idle: break;
  }
  assert(false && "callback completion with no step");
}

void CallbackClient::arm_recv() {
  ring_->recv(op_, fd_, response_.data() + received_, response_.size() - received_);
}

void CallbackClient::finish(Result<int> status) {
  timers_->stop(timer_);
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
  step_ = Step::idle;
  request_.clear();
  std::string().swap(response_);
  callback(*this, std::move(status));
}

}  // namespace faasvisor::async
