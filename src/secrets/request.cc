#include "secrets/request.h"

#include <simdjson.h>

#include "faasvisor/frame.h"
#include "secrets/table.h"
#include "util/base64.h"

namespace faasvisor::secrets {
namespace {

namespace dom = simdjson::dom;

Error field_error(std::string_view field, std::string_view what) {
  return plain_error("invalid secret", "field '" + std::string(field) + "': " + std::string(what));
}

}  // namespace

bool valid_secret_name(std::string_view name) {
  return name.size() <= FV_SECRET_NAME_MAX && fv_secret_name_valid(name.data(), static_cast<uint32_t>(name.size()));
}

Result<SecretRequest> parse_secret(std::string_view json, bool want_value) {
  dom::parser parser;
  dom::element doc;
  if (auto err = parser.parse(json.data(), json.size()).get(doc))
    return plain_error("invalid JSON", simdjson::error_message(err));
  dom::object object;
  if (doc.get_object().get(object)) return plain_error("invalid secret", "expected a JSON object");
  SecretRequest out;
  bool have_name = false, have_value = false, have_raw = false;
  std::string_view raw;
  for (dom::key_value_pair member : object) {
    std::string_view key = member.key;
    std::string_view text;
    if (key != "name" && key != "value" && key != "rawValue" && key != "namespace") continue;
    if (member.value.get_string().get(text)) return field_error(key, "must be a string");
    if (key == "name") {
      have_name = true;
      out.name = std::string(text);
    } else if (key == "namespace") {
      if (!text.empty() && text != "openfaas-fn")
        return field_error(key, "this node has one namespace, openfaas-fn");
    } else if (key == "value") {
      have_value = true;
      if (want_value) out.value = std::string(text);
    } else {
      have_raw = true;
      raw = text;
    }
  }
  if (!have_name) return field_error("name", "required");
  if (!valid_secret_name(out.name))
    return field_error("name", "must be 1-" + std::to_string(FV_SECRET_NAME_MAX) +
                                   " characters of a-z, A-Z, 0-9, '.', '-' or '_', starting with a "
                                   "letter or digit");
  if (!want_value) return out;
  if (have_value && have_raw) return field_error("rawValue", "give either value or rawValue, not both");
  if (!have_value && !have_raw) return field_error("value", "required (or rawValue, base64)");
  if (have_raw) {
    auto decoded = base64_decode(raw, Base64Padding::optional);
    if (!decoded) return field_error("rawValue", "not valid base64 (" + decoded.error().detail + ")");
    out.value = std::move(*decoded);
  }
  if (out.value.size() > FV_SECRET_VALUE_MAX) {
    size_t size = out.value.size();
    wipe(out.value);
    return field_error(have_raw ? "rawValue" : "value",
                       std::to_string(size) + " bytes, more than the limit of " +
                           std::to_string(FV_SECRET_VALUE_MAX) + " (512 KiB)");
  }
  return out;
}

}  // namespace faasvisor::secrets
