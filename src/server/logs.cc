// GET /system/logs?name=&tail=&since=&follow= (OpenFaaS's log API): NDJSON lines from the
// function's log; with follow=true the response streams until the client goes away.
#include "server/logs.h"

#include <cstdio>
#include <ctime>

#include "util/json.h"
#include "api/openfaas.h"
#include "http/response.h"
#include "server/node_impl.h"

namespace faasvisor {

void append_log_json(std::string &out, std::string_view name, std::string_view namespace_name,
                     const pool::LogEntry &entry) {
  std::string stamp = api::format_rfc3339_ns(entry.realtime_ns);
  JsonWriter w(out);
  w.begin_object().field("name", name).field("namespace", namespace_name);
  w.field("instance", entry.instance).field("timestamp", stamp);
  w.field("text", entry.text).end_object();
  out += '\n';
}

bool query_param(std::string_view query, std::string_view key, std::string *value) {
  while (!query.empty()) {
    size_t amp = query.find('&');
    std::string_view pair = query.substr(0, amp);
    query = amp == std::string_view::npos ? std::string_view() : query.substr(amp + 1);
    size_t eq = pair.find('=');
    if (pair.substr(0, eq) != key) continue;
    std::string_view raw = eq == std::string_view::npos ? std::string_view() : pair.substr(eq + 1);
    value->clear();
    for (size_t i = 0; i < raw.size(); ++i) {
      char c = raw[i];
      auto hex = [](char h) {
        return h >= '0' && h <= '9' ? h - '0' : h >= 'a' && h <= 'f' ? h - 'a' + 10 : h >= 'A' && h <= 'F' ? h - 'A' + 10 : -1;
      };
      if (c == '%' && i + 2 < raw.size() + 0 && hex(raw[i + 1]) >= 0 && hex(raw[i + 2]) >= 0) {
        *value += static_cast<char>(hex(raw[i + 1]) * 16 + hex(raw[i + 2]));
        i += 2;
      } else {
        *value += c == '+' ? ' ' : c;
      }
    }
    return true;
  }
  return false;
}

bool parse_log_tail(std::string_view text, size_t *tail) {
  // A log holds far fewer lines than this; anything longer is a typo or an overflow.
  constexpr uint64_t kMaxTail = 1'000'000'000;
  if (text.empty() || text.size() > 10) return false;
  uint64_t n = 0;
  for (char c : text) {
    if (c < '0' || c > '9') return false;
    n = n * 10 + static_cast<uint64_t>(c - '0');
  }
  if (n > kMaxTail) return false;
  *tail = static_cast<size_t>(n);
  return true;
}

bool parse_rfc3339_ns(std::string_view text, uint64_t *ns) {
  int y, mo, d, h, mi, s, consumed = 0;
  std::string t(text);
  if (std::sscanf(t.c_str(), "%4d-%2d-%2dT%2d:%2d:%2d%n", &y, &mo, &d, &h, &mi, &s, &consumed) != 6) return false;
  std::string_view rest = text.substr(static_cast<size_t>(consumed));
  uint64_t frac_ns = 0;
  if (!rest.empty() && rest[0] == '.') {
    uint64_t scale = 100'000'000;
    size_t i = 1;
    for (; i < rest.size() && rest[i] >= '0' && rest[i] <= '9'; ++i, scale /= 10)
      frac_ns += static_cast<uint64_t>(rest[i] - '0') * scale;
    rest = rest.substr(i);
  }
  int64_t offset_s = 0;
  if (rest == "Z" || rest == "z") {
  } else if (rest.size() == 6 && (rest[0] == '+' || rest[0] == '-') && rest[3] == ':') {
    int oh = (rest[1] - '0') * 10 + (rest[2] - '0'), om = (rest[4] - '0') * 10 + (rest[5] - '0');
    offset_s = (oh * 3600 + om * 60) * (rest[0] == '+' ? 1 : -1);
  } else {
    return false;
  }
  tm parts{};
  parts.tm_year = y - 1900;
  parts.tm_mon = mo - 1;
  parts.tm_mday = d;
  parts.tm_hour = h;
  parts.tm_min = mi;
  parts.tm_sec = s;
  time_t secs = timegm(&parts);
  if (secs < 0) return false;
  *ns = static_cast<uint64_t>(secs - offset_s) * 1'000'000'000ull + frac_ns;
  return true;
}

void NodeImpl::handle_logs(Connection &conn, http::Request &req) {
  std::string name, tail_text, since_text, follow_text;
  if (!query_param(req.query(), "name", &name) || name.empty())
    return conn.respond_error(400, "query parameter 'name' is required");
  pool::Function *fn = pool->find(name);
  if (fn == nullptr) return conn.respond_error(404, "function '" + name + "' not found");
  size_t tail = SIZE_MAX;
  if (query_param(req.query(), "tail", &tail_text) && !tail_text.empty() && !parse_log_tail(tail_text, &tail))
    return conn.respond_error(400, "query parameter 'tail' must be a whole number from 0 to 1000000000 "
                                   "(leave it out for the whole log)");
  uint64_t since_ns = 0;
  if (query_param(req.query(), "since", &since_text) && !since_text.empty() &&
      !parse_rfc3339_ns(since_text, &since_ns))
    return conn.respond_error(400, "query parameter 'since' must be an RFC 3339 time such as 2026-01-02T15:04:05Z");
  bool follow = query_param(req.query(), "follow", &follow_text) && (follow_text == "true" || follow_text == "1");

  const auto &entries = fn->logs.entries();
  size_t first = 0;
  while (first < entries.size() && entries[first].realtime_ns < since_ns) ++first;
  if (entries.size() - first > tail) first = entries.size() - tail;
  std::string body;
  for (size_t i = first; i < entries.size(); ++i)
    append_log_json(body, fn->name(), fn->spec().namespace_name, entries[i]);
  if (!follow) return conn.respond(200, "application/x-ndjson", body);
  conn.start_stream(200, "application/x-ndjson");
  conn.stream(body);
  conn.follow(fn->logs, fn->name(), fn->spec().namespace_name);
}

}  // namespace faasvisor
