// HTTP/1.1 to etcd's v3 JSON gateway (POST /v3/kv/put, /v3/kv/range, /v3/watch, ...), on the
// node's ring: one EtcdConnection carries one request at a time, keeps the TCP connection
// alive between requests, and streams the response body to its Sink as it arrives (a watch
// is one request whose body never ends).
//
// Nothing here blocks the loop except blocking_post, which the store uses once, at start,
// before the loop serves (the contract of Store::load_all).
#pragma once

#include <netinet/in.h>

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

extern "C" {
#include <llhttp.h>
}

#include "io/ring.h"
#include "io/timer.h"
#include "util/result.h"

namespace faasvisor::store {

struct EtcdEndpoint {
  std::string text;  // "127.0.0.1:2379", for logs and errors
  sockaddr_in addr{};
};

// "etcd://HOST:PORT[,HOST:PORT...]" (the scheme may be left out). HOST is an IPv4 address or
// a name resolved now (blocking: call at start).
Result<std::vector<EtcdEndpoint>> parse_etcd_endpoints(std::string_view spec);

// A response, parsed incrementally: status, and the body (de-chunked) appended to `body`.
class ResponseParser {
 public:
  ResponseParser();
  ResponseParser(const ResponseParser &) = delete;  // llhttp points back at us
  ResponseParser &operator=(const ResponseParser &) = delete;
  void reset();
  // Feeds bytes; an error if they are not HTTP. complete() once the whole message is in.
  Status feed(std::string_view bytes);
  bool complete() const { return complete_; }
  bool keep_alive() const { return keep_alive_; }
  int status() const { return status_; }
  std::string body;  // taken by the reader as it likes (a watch consumes it line by line)
  static constexpr size_t kMaxBufferedBodyBytes = 64u << 20;  // one range of the whole prefix

 private:
  static int on_body(llhttp_t *p, const char *at, size_t len);
  static int on_complete(llhttp_t *p);
  llhttp_t parser_{};
  llhttp_settings_t settings_{};
  bool complete_ = false;
  bool keep_alive_ = false;
  int status_ = 0;
};

std::string http_post_request(const EtcdEndpoint &ep, std::string_view path, std::string_view json_body);

// One POST answered in full, with plain blocking syscalls. Only before the loop runs.
struct BlockingResponse {
  int status = 0;
  std::string body;
};
Result<BlockingResponse> blocking_post(const EtcdEndpoint &ep, std::string_view path, std::string_view json_body,
                                       uint64_t timeout_ms);

class EtcdConnection {
 public:
  struct Sink {
    // Body bytes as they arrive (already de-chunked). The sink may leave bytes it cannot use
    // yet in `body` (half a line of a watch stream).
    virtual void on_body(std::string &body) = 0;
    // Once per request, never from inside request(): ok with the HTTP status once the
    // response is complete, or the error (ETIMEDOUT, ECONNREFUSED, ECANCELED, a closed
    // connection). The connection is idle again when this runs, so it may start the next
    // request. `body` is what on_body left.
    virtual void on_response(Status status, int http_status, std::string body) = 0;

   protected:
    ~Sink() = default;
  };

  EtcdConnection(io::Ring &ring, io::TimerQueue &timers);
  ~EtcdConnection();  // the connection must be quiescent()
  EtcdConnection(const EtcdConnection &) = delete;
  EtcdConnection &operator=(const EtcdConnection &) = delete;

  // Starts a POST of `json_body` to `path` on `ep` (reusing the open connection if it goes
  // there). timeout_ms 0: no deadline (a watch). Asserts !busy().
  void request(const EtcdEndpoint &ep, std::string_view path, std::string_view json_body, uint64_t timeout_ms,
               Sink &sink);
  // Fails the current request with ECANCELED (later, from the loop) and closes the socket.
  void abort();
  bool busy() const { return sink_ != nullptr; }
  // No CQE still expected: the owner may free this.
  bool quiescent() const { return !op_.in_flight; }
  const EtcdEndpoint *endpoint() const { return endpoint_; }

 private:
  static void on_op(io::Completion &c, int result, uint32_t flags);
  static void on_deadline(io::Timer &t);
  void fail(Error error);
  void finish_failure();
  void close_socket();
  void arm_recv();
  bool retry_fresh();

  enum class Step { idle, connecting, sending, receiving };
  io::Ring &ring_;
  io::TimerQueue &timers_;
  int fd_ = -1;
  bool connected_ = false;
  const EtcdEndpoint *endpoint_ = nullptr;  // where fd_ goes (points into the store's list)
  sockaddr_in peer_{};                      // read by the kernel during connect
  Step step_ = Step::idle;
  io::Completion op_{};                     // the one operation in flight (connect, send or recv)
  io::Timer deadline_;
  std::string out_;  // the request, read by the kernel while a send is in flight
  size_t sent_ = 0;
  char in_[16 * 1024];  // written by the kernel while a recv is in flight
  ResponseParser response_;
  Sink *sink_ = nullptr;
  bool failing_ = false;
  bool reused_ = false;     // this request went out on a kept-alive connection
  bool got_bytes_ = false;  // some of the answer arrived
  Error error_;
};

}  // namespace faasvisor::store
