// A blocking HTTP/1.1 GET of one image from a peer node, for the faasvisor-unpack helper
// (never the node's loop): the body streams into a file, bounded in size and time.
// docs/cluster.md ("Images from a peer").
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "util/result.h"

namespace faasvisor::image {

struct PeerGet {
  std::string peer;           // "HOST:PORT" (an IPv4 address: the membership's advertised address)
  std::string path;           // "/system/images/sha256:HEX"
  std::string authorization;  // the header's value ("Basic ..."), or empty
  uint64_t max_bytes = 0;     // a longer body is refused (413-like): EFBIG
  uint64_t timeout_ms = 30'000;  // connect, and each wait for bytes (not the whole transfer)
};

struct PeerAnswer {
  int status = 0;       // the peer's HTTP status
  uint64_t bytes = 0;   // body bytes written to the file (200 only)
  std::string error;    // a non-200 answer's body, shortened, for the logs
};

// GET req.path from req.peer; a 200 body goes to out_fd (Content-Length or chunked), any
// other status's body is kept (shortened) in PeerAnswer::error. Fails on a connection
// error, a timeout, a body past max_bytes, or an answer that is not HTTP.
Result<PeerAnswer> peer_get(const PeerGet &req, int out_fd);

}  // namespace faasvisor::image
