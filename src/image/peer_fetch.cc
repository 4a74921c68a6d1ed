#include "image/peer_fetch.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <vector>

extern "C" {
#include <llhttp.h>
}

namespace faasvisor::image {
namespace {

constexpr size_t kMaxErrorBody = 512;

struct Socket {
  int fd = -1;
  ~Socket() {
    if (fd >= 0) ::close(fd);
  }
};

// llhttp's callbacks write here; a body chunk goes straight to the file.
struct Reader {
  int out_fd = -1;
  uint64_t max_bytes = 0;
  PeerAnswer answer;
  bool complete = false;
  int write_errno = 0;
  bool too_large = false;
};

int on_headers_complete(llhttp_t *p) {
  auto &r = *static_cast<Reader *>(p->data);
  r.answer.status = p->status_code;
  // A declared length past the bound is refused before a byte of it is taken.
  if (r.answer.status == 200 && (p->flags & F_CONTENT_LENGTH) && p->content_length > r.max_bytes) {
    r.too_large = true;
    return -1;  // an error: llhttp stops
  }
  return 0;
}

int on_body(llhttp_t *p, const char *at, size_t len) {
  auto &r = *static_cast<Reader *>(p->data);
  if (r.answer.status != 200) {
    size_t room = kMaxErrorBody - std::min(kMaxErrorBody, r.answer.error.size());
    r.answer.error.append(at, std::min(room, len));
    return 0;
  }
  if (r.answer.bytes + len > r.max_bytes) {
    r.too_large = true;
    return HPE_USER;
  }
  for (size_t done = 0; done < len;) {
    ssize_t n = ::write(r.out_fd, at + done, len - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      r.write_errno = n < 0 ? errno : EIO;
      return HPE_USER;
    }
    done += static_cast<size_t>(n);
  }
  r.answer.bytes += len;
  return 0;
}

int on_message_complete(llhttp_t *p) {
  static_cast<Reader *>(p->data)->complete = true;
  return HPE_PAUSED;  // one response is all we asked for
}

Result<sockaddr_in> parse_peer(std::string_view peer) {
  size_t colon = peer.rfind(':');
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  std::string host(peer.substr(0, colon == std::string_view::npos ? 0 : colon));
  long port = colon == std::string_view::npos ? 0 : std::strtol(std::string(peer.substr(colon + 1)).c_str(), nullptr, 10);
  if (port <= 0 || port > 65535 || inet_pton(AF_INET, host.c_str(), &addr.sin_addr) != 1)
    return plain_error("peer", "'" + std::string(peer) + "' is not IPV4:PORT");
  addr.sin_port = htons(static_cast<uint16_t>(port));
  return addr;
}

Status wait_for(int fd, short events, uint64_t timeout_ms, const std::string &peer) {
  pollfd pfd{fd, events, 0};
  int n;
  do n = ::poll(&pfd, 1, static_cast<int>(timeout_ms));
  while (n < 0 && errno == EINTR);
  if (n < 0) return errno_error("poll");
  if (n == 0) return Error{ETIMEDOUT, "peer", peer + ": no answer within " + std::to_string(timeout_ms) + " ms"};
  return {};
}

}  // namespace

Result<PeerAnswer> peer_get(const PeerGet &req, int out_fd) {
  auto addr = parse_peer(req.peer);
  if (!addr) return addr.error();
  Socket s;
  s.fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (s.fd < 0) return errno_error("socket");
  const std::string &what = req.peer;  // each error's detail starts with it (context "peer")
  if (connect(s.fd, reinterpret_cast<const sockaddr *>(&*addr), sizeof *addr) < 0 && errno != EINPROGRESS)
    return Error{errno, "peer", what + ": connect"};
  if (Status st = wait_for(s.fd, POLLOUT, req.timeout_ms, req.peer); !st.ok()) return st.error();
  int soerr = 0;
  socklen_t len = sizeof soerr;
  getsockopt(s.fd, SOL_SOCKET, SO_ERROR, &soerr, &len);
  if (soerr != 0) return Error{soerr, "peer", what + ": connect"};

  std::string head = "GET " + req.path + " HTTP/1.1\r\nHost: " + req.peer + "\r\nConnection: close\r\n";
  if (!req.authorization.empty()) head += "Authorization: " + req.authorization + "\r\n";
  head += "User-Agent: faasvisor-unpack\r\n\r\n";
  for (size_t sent = 0; sent < head.size();) {
    ssize_t n = ::send(s.fd, head.data() + sent, head.size() - sent, MSG_NOSIGNAL);
    if (n < 0 && errno == EAGAIN) {
      if (Status st = wait_for(s.fd, POLLOUT, req.timeout_ms, req.peer); !st.ok()) return st.error();
      continue;
    }
    if (n < 0) return Error{errno, "peer", what + ": send"};
    sent += static_cast<size_t>(n);
  }

  Reader reader;
  reader.out_fd = out_fd;
  reader.max_bytes = req.max_bytes;
  llhttp_settings_t settings;
  llhttp_settings_init(&settings);
  settings.on_headers_complete = on_headers_complete;
  settings.on_body = on_body;
  settings.on_message_complete = on_message_complete;
  llhttp_t parser;
  llhttp_init(&parser, HTTP_RESPONSE, &settings);
  parser.data = &reader;
  std::vector<char> buf(256 * 1024);
  while (!reader.complete) {
    ssize_t n = ::recv(s.fd, buf.data(), buf.size(), 0);
    if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
      if (Status st = wait_for(s.fd, POLLIN, req.timeout_ms, req.peer); !st.ok()) return st.error();
      continue;
    }
    if (n < 0) return Error{errno, "peer", what + ": recv"};
    llhttp_errno_t rc = n == 0 ? llhttp_finish(&parser) : llhttp_execute(&parser, buf.data(), static_cast<size_t>(n));
    if (reader.too_large)
      return Error{EFBIG, "peer", what + ": the image is larger than " + std::to_string(req.max_bytes) + " bytes (--max-image-bytes)"};
    if (reader.write_errno != 0) return Error{reader.write_errno, "write the fetched image", {}};
    if (n == 0 && !reader.complete) return plain_error("peer", what + ": closed the connection before the image was complete");
    if (rc != HPE_OK && rc != HPE_PAUSED)
      return plain_error("peer", what + ": answered something that is not HTTP: " + llhttp_errno_name(rc));
  }
  return reader.answer;
}

}  // namespace faasvisor::image
