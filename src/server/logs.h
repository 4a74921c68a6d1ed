#pragma once

#include <string>
#include <string_view>

#include "pool/logbook.h"

namespace faasvisor {

// One NDJSON line as OpenFaaS's log API writes it:
// {"name","namespace","instance","timestamp" (RFC 3339, UTC, nanoseconds),"text"}\n
void append_log_json(std::string &out, std::string_view name, std::string_view namespace_name,
                     const pool::LogEntry &entry);

// Query-string helpers: the first value of `key`, percent-decoded ('+' is a space).
bool query_param(std::string_view query, std::string_view key, std::string *value);
// Parses ?tail=N: digits only (no sign, no space), at most 10^9; false otherwise.
bool parse_log_tail(std::string_view text, size_t *tail);
// Parses an RFC 3339 timestamp ("2026-11-27T18:00:00Z", "...00.5+01:00") to Unix ns.
bool parse_rfc3339_ns(std::string_view text, uint64_t *ns);

}  // namespace faasvisor
