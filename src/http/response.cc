#include "http/response.h"

#include <cassert>
#include <charconv>
#include <cstdint>

namespace faasvisor::http {

namespace {

// CR or LF would let the value end the header (response splitting); NUL truncates in some peers.
bool is_safe_value(std::string_view s) {
  for (char c : s) {
    if (c == '\r' || c == '\n' || c == '\0') return false;
  }
  return true;
}

// Framing headers are ours: a caller's copy could contradict what we actually send.
bool is_framing_header(std::string_view name) {
  return iequals(name, "content-length") || iequals(name, "transfer-encoding") || iequals(name, "connection");
}

bool may_write_header(const Header& h) {
  return is_token(h.name) && is_safe_value(h.value) && !is_framing_header(h.name);
}

// RFC 9110 section 6.4.1: these never have content, and 1xx/204 never carry Content-Length.
bool status_has_no_content(int status) { return (status >= 100 && status < 200) || status == 204 || status == 304; }

void append_status_line(std::string& out, int status) {
  out.append("HTTP/1.1 ");
  char digits[3] = {static_cast<char>('0' + status / 100), static_cast<char>('0' + status / 10 % 10),
                    static_cast<char>('0' + status % 10)};
  out.append(digits, sizeof digits);
  out.push_back(' ');
  out.append(reason_phrase(status));
  out.append("\r\n");
}

void append_header(std::string& out, std::string_view name, std::string_view value) {
  out.append(name);
  out.append(": ");
  out.append(value);
  out.append("\r\n");
}

void append_caller_headers(std::string& out, std::span<const Header> headers) {
  for (const Header& h : headers) {
    if (may_write_header(h)) append_header(out, h.name, h.value);
  }
}

size_t headers_size_bytes(std::span<const Header> headers) {
  size_t total = 0;
  for (const Header& h : headers) total += h.name.size() + h.value.size() + 4;
  return total;
}

// Content-Length, Connection, the blank line, then the body.
void append_framing_and_body(std::string& out, int status, std::string_view body, bool keep_alive) {
  bool no_content = status_has_no_content(status);
  if (!no_content) {
    char digits[24];
    auto [end, ec] = std::to_chars(digits, digits + sizeof digits, body.size());
    assert(ec == std::errc());
    append_header(out, "Content-Length", std::string_view(digits, static_cast<size_t>(end - digits)));
  }
  if (!keep_alive) out.append("Connection: close\r\n");
  out.append("\r\n");
  if (!no_content) out.append(body);
}

int sanitize_status(int status) { return (status >= 100 && status <= 999) ? status : 500; }

}  // namespace

const char* reason_phrase(int status) {
  switch (status) {
    case 100: return "Continue";
    case 101: return "Switching Protocols";
    case 102: return "Processing";
    case 103: return "Early Hints";
    case 200: return "OK";
    case 201: return "Created";
    case 202: return "Accepted";
    case 203: return "Non-Authoritative Information";
    case 204: return "No Content";
    case 205: return "Reset Content";
    case 206: return "Partial Content";
    case 207: return "Multi-Status";
    case 208: return "Already Reported";
    case 226: return "IM Used";
    case 300: return "Multiple Choices";
    case 301: return "Moved Permanently";
    case 302: return "Found";
    case 303: return "See Other";
    case 304: return "Not Modified";
    case 305: return "Use Proxy";
    case 307: return "Temporary Redirect";
    case 308: return "Permanent Redirect";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 402: return "Payment Required";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 406: return "Not Acceptable";
    case 407: return "Proxy Authentication Required";
    case 408: return "Request Timeout";
    case 409: return "Conflict";
    case 410: return "Gone";
    case 411: return "Length Required";
    case 412: return "Precondition Failed";
    case 413: return "Content Too Large";  // RFC 9110 name (was "Payload Too Large")
    case 414: return "URI Too Long";
    case 415: return "Unsupported Media Type";
    case 416: return "Range Not Satisfiable";
    case 417: return "Expectation Failed";
    case 418: return "I'm a teapot";
    case 421: return "Misdirected Request";
    case 422: return "Unprocessable Content";
    case 423: return "Locked";
    case 424: return "Failed Dependency";
    case 425: return "Too Early";
    case 426: return "Upgrade Required";
    case 428: return "Precondition Required";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 451: return "Unavailable For Legal Reasons";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    case 505: return "HTTP Version Not Supported";
    case 506: return "Variant Also Negotiates";
    case 507: return "Insufficient Storage";
    case 508: return "Loop Detected";
    case 510: return "Not Extended";
    case 511: return "Network Authentication Required";
    default: return "Unknown";
  }
}

void write_response(std::string& out, int status, std::span<const Header> headers, std::string_view body,
                    bool keep_alive) {
  status = sanitize_status(status);
  out.reserve(out.size() + 96 + headers_size_bytes(headers) + body.size());
  append_status_line(out, status);
  append_caller_headers(out, headers);
  append_framing_and_body(out, status, body, keep_alive);
}

void write_json_error(std::string& out, int status, std::string_view message, bool keep_alive,
                      std::span<const Header> extra_headers) {
  // The error path may allocate: the body must exist before its length is written.
  std::string body;
  body.reserve(message.size() + 16);
  body.append("{\"error\": ");
  append_json_string(body, message);
  body.push_back('}');

  status = sanitize_status(status);
  out.reserve(out.size() + 128 + headers_size_bytes(extra_headers) + body.size());
  append_status_line(out, status);
  append_header(out, "Content-Type", "application/json");
  append_caller_headers(out, extra_headers);
  append_framing_and_body(out, status, body, keep_alive);
}

}  // namespace faasvisor::http
