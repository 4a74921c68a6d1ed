// The etcd store's pieces that run without etcd: base64 (the gateway's keys and values), the
// --store endpoint list, the HTTP response parser, and EtcdConnection on a real ring against
// a loopback socket this test answers itself.
#include <doctest/doctest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <memory>
#include <string>

#include "io/ring.h"
#include "io/timer.h"
#include "store/etcd_http.h"
#include "util/base64.h"

using namespace faasvisor;

TEST_CASE("base64 round-trips every byte value and length, and refuses what is not canonical") {
  CHECK(base64_encode("foo") == "Zm9v");
  CHECK(base64_encode("/faasvisor/") == "L2ZhYXN2aXNvci8=");
  CHECK(base64_encode("") == "");
  std::string bytes;
  for (int i = 0; i < 300; ++i) {
    bytes.push_back(static_cast<char>(i * 37));
    auto back = base64_decode(base64_encode(bytes));
    REQUIRE(back.ok());
    CHECK(*back == bytes);
  }
  CHECK_FALSE(base64_decode("Zm9").ok());    // not a multiple of 4
  CHECK_FALSE(base64_decode("Zm9*").ok());   // not in the alphabet
  CHECK_FALSE(base64_decode("Zg=v").ok());   // padding in the middle
  CHECK_FALSE(base64_decode("Zm==Zm9v").ok());  // padding before the end
  CHECK_FALSE(base64_decode("Zh==").ok());   // non-zero trailing bits: not canonical
  CHECK(*base64_decode("Zg==") == "f");
  CHECK(base64_decode("Zm9").error().message() == "base64: the length is not a multiple of 4");
  CHECK(base64_decode("Zm=v").error().message() == "base64: '=' before the end");
}

TEST_CASE("--store etcd:// takes HOST:PORT lists and names what is wrong") {
  auto two = store::parse_etcd_endpoints("etcd://127.0.0.1:2379,localhost:2380");
  REQUIRE(two);
  CHECK(two->size() == 2);
  CHECK((*two)[0].text == "127.0.0.1:2379");
  CHECK(ntohs((*two)[1].addr.sin_port) == 2380);
  for (const char *bad : {"etcd://", "etcd://127.0.0.1", "etcd://127.0.0.1:0", "etcd://127.0.0.1:70000",
                          "etcd://:2379", "etcd://no-such-host.invalid:2379"}) {
    auto r = store::parse_etcd_endpoints(bad);
    CHECK_MESSAGE(!r, bad);
  }
}

TEST_CASE("the response parser de-chunks a body fed one byte at a time") {
  store::ResponseParser p;
  std::string wire = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n1\r\n\n\r\n0\r\n\r\n";
  for (char c : wire) REQUIRE(p.feed(std::string_view(&c, 1)).ok());
  CHECK(p.complete());
  CHECK(p.status() == 200);
  CHECK(p.keep_alive());
  CHECK(p.body == "hello\n");
  store::ResponseParser bad;
  CHECK_FALSE(bad.feed("SMTP ready\r\n").ok());
}

namespace {

struct Sink final : store::EtcdConnection::Sink {
  std::string streamed;
  int responses = 0, code = 0;
  Status status;
  std::string body;
  void on_body(std::string &b) override {
    streamed += b;  // consumed, as a watch does
    b.clear();
  }
  void on_response(Status st, int c, std::string b) override {
    ++responses;
    status = st;
    code = c;
    body = std::move(b);
  }
};

int listener(uint16_t &port) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  REQUIRE(bind(fd, reinterpret_cast<sockaddr *>(&a), sizeof a) == 0);
  REQUIRE(listen(fd, 4) == 0);
  socklen_t len = sizeof a;
  getsockname(fd, reinterpret_cast<sockaddr *>(&a), &len);
  port = ntohs(a.sin_port);
  return fd;
}

}  // namespace

TEST_CASE("EtcdConnection posts on the ring, streams the body, keeps the connection, and reports a refused one") {
  std::unique_ptr<io::Ring> ring{*io::Ring::create(64)};
  io::TimerQueue timers(ring.get());
  uint16_t port = 0;
  int lfd = listener(port);
  auto eps = store::parse_etcd_endpoints("127.0.0.1:" + std::to_string(port));
  REQUIRE(eps);
  store::EtcdConnection conn(*ring, timers);
  Sink sink;
  conn.request((*eps)[0], "/v3/kv/range", "{\"key\":\"Zm9v\"}", 1000, sink);
  CHECK(sink.responses == 0);  // never from inside request()
  ring->run_once();  // submits the connect; the kernel completes it from the listen backlog
  int peer = accept4(lfd, nullptr, nullptr, SOCK_CLOEXEC);
  REQUIRE(peer >= 0);
  while (conn.busy() && sink.responses == 0) {
    char buf[4096];
    ssize_t n = recv(peer, buf, sizeof buf, MSG_DONTWAIT);
    if (n > 0) {
      std::string req(buf, static_cast<size_t>(n));
      CHECK(req.rfind("POST /v3/kv/range HTTP/1.1\r\n", 0) == 0);
      CHECK(req.find("{\"key\":\"Zm9v\"}") != std::string::npos);
      std::string resp = "HTTP/1.1 200 OK\r\nContent-Length: 12\r\n\r\n{\"count\":1}\n";
      REQUIRE(send(peer, resp.data(), resp.size(), 0) == static_cast<ssize_t>(resp.size()));
    }
    ring->run_once();
  }
  CHECK(sink.responses == 1);
  CHECK(sink.status.ok());
  CHECK(sink.code == 200);
  CHECK(sink.streamed == "{\"count\":1}\n");
  // Kept alive: the next request goes on the same socket (no second accept needed).
  conn.request((*eps)[0], "/v3/kv/put", "{}", 1000, sink);
  while (sink.responses == 1) {
    char buf[4096];
    if (recv(peer, buf, sizeof buf, MSG_DONTWAIT) > 0) {
      std::string resp = "HTTP/1.1 500 Internal Server Error\r\nContent-Length: 2\r\n\r\n{}";
      REQUIRE(send(peer, resp.data(), resp.size(), 0) > 0);
    }
    ring->run_once();
  }
  CHECK(sink.code == 500);
  ::close(peer);
  ::close(lfd);
  // Now nothing listens there: the kept connection's next request is retried on a fresh
  // one, which is refused.
  conn.request((*eps)[0], "/v3/kv/put", "{}", 1000, sink);
  while (sink.responses == 2) ring->run_once();
  CHECK_FALSE(sink.status.ok());
  CHECK(sink.status.error().errno_value == ECONNREFUSED);
  CHECK(conn.quiescent());
}
