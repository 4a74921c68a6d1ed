// image/peer_fetch.h: the helper's GET of an image from a peer, against a one-shot server
// on loopback that answers with canned bytes (what a peer, or something that is not one,
// may send).
#include <doctest/doctest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdio>
#include <string>
#include <thread>

#include "image/peer_fetch.h"

namespace {

using faasvisor::image::PeerGet;
using faasvisor::image::peer_get;

// Accepts one connection, reads the request head into *request, sends `answer`, closes.
struct OneShotServer {
  int listen_fd = -1;
  int port = 0;
  std::string request;
  std::thread thread;

  explicit OneShotServer(std::string answer) {
    listen_fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    REQUIRE(bind(listen_fd, reinterpret_cast<sockaddr *>(&addr), sizeof addr) == 0);
    socklen_t len = sizeof addr;
    getsockname(listen_fd, reinterpret_cast<sockaddr *>(&addr), &len);
    port = ntohs(addr.sin_port);
    REQUIRE(listen(listen_fd, 1) == 0);
    thread = std::thread([this, answer = std::move(answer)] {
      int fd = accept(listen_fd, nullptr, nullptr);
      if (fd < 0) return;
      char buf[4096];
      while (request.find("\r\n\r\n") == std::string::npos) {
        ssize_t n = recv(fd, buf, sizeof buf, 0);
        if (n <= 0) break;
        request.append(buf, static_cast<size_t>(n));
      }
      for (size_t sent = 0; sent < answer.size();) {
        ssize_t n = send(fd, answer.data() + sent, answer.size() - sent, MSG_NOSIGNAL);
        if (n <= 0) break;
        sent += static_cast<size_t>(n);
      }
      close(fd);
    });
  }
  ~OneShotServer() {
    shutdown(listen_fd, SHUT_RDWR);
    thread.join();
    close(listen_fd);
  }
  std::string peer() const { return "127.0.0.1:" + std::to_string(port); }
};

struct TempFile {
  FILE *f = std::tmpfile();
  ~TempFile() { std::fclose(f); }
  int fd() const { return fileno(f); }
  std::string contents() const {
    std::string out(static_cast<size_t>(lseek(fd(), 0, SEEK_END)), '\0');
    CHECK(pread(fd(), out.data(), out.size(), 0) == static_cast<ssize_t>(out.size()));
    return out;
  }
};

PeerGet get(const OneShotServer &s, uint64_t max_bytes = 1 << 20) {
  return PeerGet{s.peer(), "/system/images/sha256:00", "Basic dXNlcjpwdw==", max_bytes, 5000};
}

}  // namespace

TEST_CASE("peer_get: a 200 body goes to the file, with the credentials sent") {
  OneShotServer s("HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\nhello world");
  TempFile out;
  auto got = peer_get(get(s), out.fd());
  REQUIRE(got);
  CHECK(got->status == 200);
  CHECK(got->bytes == 11);
  CHECK(out.contents() == "hello world");
  CHECK(s.request.rfind("GET /system/images/sha256:00 HTTP/1.1\r\n", 0) == 0);
  CHECK(s.request.find("Authorization: Basic dXNlcjpwdw==\r\n") != std::string::npos);
}

TEST_CASE("peer_get: a chunked body is de-chunked") {
  OneShotServer s("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n");
  TempFile out;
  auto got = peer_get(get(s), out.fd());
  REQUIRE(got);
  CHECK(out.contents() == "abcde");
}

TEST_CASE("peer_get: a body past max_bytes is refused, declared or not") {
  {
    OneShotServer s("HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n");
    TempFile out;
    auto got = peer_get(get(s, 99), out.fd());
    REQUIRE(!got);
    CHECK(got.error().errno_value == EFBIG);
    CHECK(out.contents().empty());  // refused before a byte of it
  }
  OneShotServer s("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n6\r\nabcdef\r\n6\r\nghijkl\r\n0\r\n\r\n");
  TempFile out;
  auto got = peer_get(get(s, 10), out.fd());
  REQUIRE(!got);
  CHECK(got.error().errno_value == EFBIG);
}

TEST_CASE("peer_get: another status keeps its body for the logs, writes nothing") {
  OneShotServer s("HTTP/1.1 404 Not Found\r\nContent-Length: 17\r\n\r\n{\"error\":\"none\"}\n");
  TempFile out;
  auto got = peer_get(get(s), out.fd());
  REQUIRE(got);
  CHECK(got->status == 404);
  CHECK(got->error.find("none") != std::string::npos);
  CHECK(out.contents().empty());
}

TEST_CASE("peer_get: a cut body, an answer that is not HTTP and a refused connection fail") {
  {
    OneShotServer s("HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly this");
    TempFile out;
    auto got = peer_get(get(s), out.fd());
    REQUIRE(!got);
    CHECK(got.error().message().find("before the image was complete") != std::string::npos);
  }
  {
    OneShotServer s("SSH-2.0-OpenSSH\r\n");
    TempFile out;
    auto got = peer_get(get(s), out.fd());
    REQUIRE(!got);
    CHECK(got.error().message().find("not HTTP") != std::string::npos);
  }
  int port;
  {
    OneShotServer s("");
    port = s.port;
  }  // closed: nothing listens there now
  TempFile out;
  auto got = peer_get(PeerGet{"127.0.0.1:" + std::to_string(port), "/", "", 10, 2000}, out.fd());
  REQUIRE(!got);
  CHECK(got.error().errno_value == ECONNREFUSED);
  CHECK(!peer_get(PeerGet{"not-an-address:80", "/", "", 10, 2000}, out.fd()));
}
