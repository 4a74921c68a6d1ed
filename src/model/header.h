// A header as a name and a value: the request headers the HTTP parser fills in (http::Header
// is this type), an invocation lends to its instance (pool/invocation.h) and an async call
// stores. Here, not in http/, so the pool need not include the HTTP parser.
#pragma once

#include <string>
#include <string_view>

namespace faasvisor {

struct Header {
  std::string name;   // as received (case preserved); compare names case-insensitively
  std::string value;  // leading and trailing spaces/tabs removed
};

// ASCII case-insensitive equality (header names and tokens are ASCII).
bool iequals(std::string_view a, std::string_view b);

}  // namespace faasvisor
