#include "async/url.h"

#include <arpa/inet.h>

#include <cstring>

namespace faasvisor::async {
namespace {

bool iprefix(std::string_view s, std::string_view prefix) {
  if (s.size() < prefix.size()) return false;
  for (size_t i = 0; i < prefix.size(); ++i) {
    char c = s[i];
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
    if (c != prefix[i]) return false;
  }
  return true;
}

Error bad(std::string detail) { return plain_error("header 'X-Callback-Url'", std::move(detail)); }

}  // namespace

Result<CallbackUrl> parse_callback_url(std::string_view text, size_t max_bytes) {
  if (text.size() > max_bytes)
    return bad("longer than " + std::to_string(max_bytes) + " bytes");
  for (char c : text) {
    auto u = static_cast<unsigned char>(c);
    if (u <= 0x20 || u == 0x7f) return bad("contains a space or control character");
  }
  if (iprefix(text, "https://"))
    return bad("https is not supported (the node has no TLS client): use an http:// URL");
  if (!iprefix(text, "http://")) return bad("must be an http:// URL");
  std::string_view rest = text.substr(7);
  if (size_t hash = rest.find('#'); hash != std::string_view::npos) rest = rest.substr(0, hash);
  size_t end = rest.find_first_of("/?");
  std::string_view authority = rest.substr(0, end);
  std::string_view target = end == std::string_view::npos ? std::string_view{} : rest.substr(end);
  if (authority.find('@') != std::string_view::npos) return bad("user info is not supported");
  if (authority.empty()) return bad("has no host");

  std::string_view host = authority, port_text;
  bool has_port = false;
  if (authority.front() == '[') {
    size_t close = authority.find(']');
    if (close == std::string_view::npos) return bad("unclosed '[' in the host");
    host = authority.substr(1, close - 1);
    std::string_view after = authority.substr(close + 1);
    if (!after.empty() && after.front() != ':') return bad("unexpected text after the IPv6 address");
    has_port = !after.empty();
    if (has_port) port_text = after.substr(1);
  } else if (size_t colon = authority.rfind(':'); colon != std::string_view::npos) {
    host = authority.substr(0, colon);
    port_text = authority.substr(colon + 1);
    has_port = true;
  }
  uint32_t port = 80;
  if (has_port) {
    if (port_text.empty() || port_text.size() > 5) return bad("bad port '" + std::string(port_text) + "'");
    port = 0;
    for (char c : port_text) {
      if (c < '0' || c > '9') return bad("bad port '" + std::string(port_text) + "'");
      port = port * 10 + static_cast<uint32_t>(c - '0');
    }
    if (port == 0 || port > 65535) return bad("port " + std::to_string(port) + " out of range");
  }

  CallbackUrl url;
  std::string host_str(host);
  if (host_str == "localhost" || host_str == "LOCALHOST") host_str = "127.0.0.1";
  auto *v4 = reinterpret_cast<sockaddr_in *>(&url.addr);
  auto *v6 = reinterpret_cast<sockaddr_in6 *>(&url.addr);
  if (authority.front() != '[' && inet_pton(AF_INET, host_str.c_str(), &v4->sin_addr) == 1) {
    v4->sin_family = AF_INET;
    v4->sin_port = htons(static_cast<uint16_t>(port));
    url.addr_len = sizeof(sockaddr_in);
  } else if (authority.front() == '[' && inet_pton(AF_INET6, host_str.c_str(), &v6->sin6_addr) == 1) {
    v6->sin6_family = AF_INET6;
    v6->sin6_port = htons(static_cast<uint16_t>(port));
    url.addr_len = sizeof(sockaddr_in6);
  } else if (authority.front() == '[') {
    return bad("bad IPv6 address '" + host_str + "'");
  } else {
    return bad("host '" + host_str +
               "' is not an IP address: the node does not resolve host names (use an IP address or localhost)");
  }
  url.host_header = std::string(authority);
  url.target = target.empty() ? "/" : std::string(target);
  if (url.target.front() == '?') url.target.insert(url.target.begin(), '/');
  return url;
}

}  // namespace faasvisor::async
