// HTTP basic authentication of the node's API, as the OpenFaaS gateway and faas-provider do
// it: the credentials are two files in one directory (basic-auth-user and
// basic-auth-password, surrounding whitespace trimmed), and a request carries them as
// "Authorization: Basic base64(user:password)". Pure: testable without a ring.
#pragma once

#include <string>
#include <string_view>

#include "util/result.h"

namespace faasvisor::api {

struct BasicAuthCredentials {
  std::string user;
  std::string password;
};

// Reads DIR/basic-auth-user and DIR/basic-auth-password. Both must be non-empty after trimming.
Result<BasicAuthCredentials> read_basic_auth(const std::string &dir);

// True if `authorization` (the header's value) is "Basic <base64 of user:password>" naming
// exactly these credentials. The comparison takes the same time wherever the first
// difference is (it depends only on the lengths of the expected values).
bool basic_auth_matches(std::string_view authorization, const BasicAuthCredentials &expected);

// What a 401 carries, as OpenFaaS sends it.
inline constexpr std::string_view kBasicAuthChallenge = "WWW-Authenticate: Basic realm=\"Restricted\"\r\n";

// Whether a request for `path` needs the credentials: every /system/* route, and /metrics
// when protected. /function/*, /async-function/* and /healthz stay open, as in OpenFaaS.
bool path_needs_auth(std::string_view path, bool protect_metrics);

}  // namespace faasvisor::api
