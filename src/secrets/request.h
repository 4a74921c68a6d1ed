// /system/secrets request bodies (faas-provider's types.Secret) parsed into a typed request.
// Pure: no I/O. Errors name the field and never quote a value.
#pragma once

#include <string>
#include <string_view>

#include "util/result.h"

namespace faasvisor::secrets {

struct SecretRequest {
  std::string name;
  std::string value;  // decoded: "value" as is, or "rawValue" from base64
};

// POST/PUT: {"name", "value"} or {"name", "rawValue": base64}, optional "namespace"
// ("openfaas-fn", the only one). DELETE: {"name"} (want_value false; a value is ignored).
Result<SecretRequest> parse_secret(std::string_view json, bool want_value);

// 1-200 bytes of A-Z a-z 0-9 '.' '-' '_', starting with a letter or digit.
bool valid_secret_name(std::string_view name);

}  // namespace faasvisor::secrets
