// One HTTP/1.1 POST to a callback URL on the node's ring: socket, CONNECT, SEND, RECV until
// the response's head is in, close. The request is complete and says "Connection: close"
// (one exchange per connection, as the OpenFaaS queue-worker does), so all the client needs
// back is the status line. A coarse timer bounds the whole exchange: on expiry the op in
// flight is cancelled and the exchange fails with ETIMEDOUT once its CQE is in.
//
// Embed it in its owner (STYLE.md 3); the owner must not be freed while busy(). The callback
// runs from the loop, never from inside start() or cancel().
#pragma once

#include <cstdint>
#include <string>

#include "async/url.h"
#include "io/ring.h"
#include "io/timer.h"
#include "util/result.h"

namespace faasvisor::async {

class CallbackClient {
 public:
  // The response's status code, or why there was none.
  using Callback = void (*)(CallbackClient &self, Result<int> status);

  CallbackClient();
  ~CallbackClient();
  CallbackClient(const CallbackClient &) = delete;
  CallbackClient &operator=(const CallbackClient &) = delete;

  void start(io::Ring &ring, io::TimerQueue &timers, const CallbackUrl &url, std::string request,
             uint64_t timeout_ms);
  // Ends the exchange early: the callback follows with ECANCELED once the ring is done.
  void cancel();
  bool busy() const { return step_ != Step::idle; }

  void *owner = nullptr;
  Callback callback = nullptr;
  template <typename T>
  T &owner_as() { return *static_cast<T *>(owner); }

  static constexpr size_t kMaxResponseHeadBytes = 16 * 1024;

 private:
  enum class Step { idle, connect, send, recv };
  static void on_op(io::Completion &c, int result, uint32_t flags);
  static void on_timeout(io::Timer &t);
  void step(int result);
  void arm_recv();
  void finish(Result<int> status);

  io::Ring *ring_ = nullptr;
  io::TimerQueue *timers_ = nullptr;
  io::Completion op_{};
  io::Timer timer_;
  Step step_ = Step::idle;
  int fd_ = -1;
  int abort_errno_ = 0;        // set by the timer or cancel(): the next CQE ends the exchange
  sockaddr_storage addr_{};    // read by the kernel while the connect is in flight
  socklen_t addr_len_ = 0;
  std::string request_;        // read by the kernel while a send is in flight
  size_t sent_ = 0;
  std::string response_;       // written by the kernel while a recv is in flight
  size_t received_ = 0;
};

// The status code of a response head ("HTTP/1.1 204 No Content\r\n..."), or 0 if the bytes
// do not start with a whole, well-formed status line.
int parse_status_line(std::string_view head);

}  // namespace faasvisor::async
