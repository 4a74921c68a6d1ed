// X-Callback-Url: parsed once, when the call is accepted, so a URL the node cannot use is
// a 400 to the caller instead of a callback dropped later. Pure: no I/O, no name lookup.
//
// Accepted: http://HOST[:PORT][/PATH][?QUERY], HOST an IPv4 address, a bracketed IPv6
// address or "localhost". Not accepted, each with its own message: https (the node has no
// TLS client), other schemes, user info, host names (resolving them would block the loop or
// need a resolver on the ring; docs/async.md), bad ports, control characters or spaces, and
// URLs longer than the limit. A fragment is dropped, as HTTP clients do.
#pragma once

#include <netinet/in.h>
#include <sys/socket.h>

#include <cstdint>
#include <string>
#include <string_view>

#include "util/result.h"

namespace faasvisor::async {

struct CallbackUrl {
  sockaddr_storage addr{};
  socklen_t addr_len = 0;
  std::string host_header;  // as written (with the port if one was given), for Host:
  std::string target;       // path and query, at least "/"
};

inline constexpr size_t kMaxCallbackUrlBytes = 2048;

Result<CallbackUrl> parse_callback_url(std::string_view text, size_t max_bytes = kMaxCallbackUrlBytes);

}  // namespace faasvisor::async
