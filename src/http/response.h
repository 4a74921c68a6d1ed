// HTTP/1.1 response writer: appends complete responses to the connection's output buffer.
// Framing (Content-Length, Connection) is always ours, never the caller's, so a function's
// headers cannot desynchronize the connection or split the response.
#pragma once

#include <span>
#include <string>
#include <string_view>

#include "http/parser.h"  // Header
#include "util/json.h"

namespace faasvisor::http {

// Standard reason phrase for a status code; "Unknown" otherwise.
const char* reason_phrase(int status);

// Appends "HTTP/1.1 <status> <reason>", the caller's headers, Content-Length and, when
// !keep_alive, "Connection: close", then the body.
// - Caller headers named Content-Length, Transfer-Encoding or Connection (any case) are
//   dropped, as are headers whose name is not an HTTP token or whose value holds CR, LF or NUL.
// - 1xx, 204 and 304 responses carry no body and no Content-Length (RFC 9110 8.6, 15.4.5);
//   a body passed with them is not written.
// - A status outside 100..999 is written as 500.
// HEAD responses are the caller's business: pass an empty body (Content-Length is then 0).
void write_response(std::string& out, int status, std::span<const Header> headers, std::string_view body,
                    bool keep_alive);

// Same, with "Content-Type: application/json" and the body {"error": "<message>"} (the
// message escaped by append_json_string()).
void write_json_error(std::string& out, int status, std::string_view message, bool keep_alive,
                      std::span<const Header> extra_headers = {});

// JSON string escaping lives in util/json.h (the JSON writer and the image records use it
// too); the HTTP writers and their callers name it here.
using faasvisor::append_json_string;

}  // namespace faasvisor::http
