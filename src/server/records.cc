#include "server/records.h"

#include <simdjson.h>

#include "util/json.h"
#include "util/number.h"

namespace faasvisor {

std::string encode_function_record(const FunctionRecord &record) {
  std::string out;
  JsonWriter w(out);
  w.begin_object().field("generation", record.generation).field("deploy", record.deploy_json);
  if (!record.image_json.empty()) w.key("image").raw(record.image_json);
  if (record.created_ns != 0) w.field("created", record.created_ns);
  w.end_object();
  return out;
}

Result<FunctionRecord> decode_function_record(std::string_view bytes) {
  simdjson::dom::parser parser;
  simdjson::dom::element doc;
  if (auto err = parser.parse(bytes.data(), bytes.size()).get(doc))
    return plain_error("function record", std::string("not JSON: ") + simdjson::error_message(err));
  FunctionRecord r;
  if (doc["generation"].get_uint64().get(r.generation) || r.generation == 0)
    return plain_error("function record", "no generation");
  std::string_view deploy;
  if (doc["deploy"].get_string().get(deploy)) return plain_error("function record", "no deploy body");
  r.deploy_json = std::string(deploy);
  if (doc["created"].get_uint64().get(r.created_ns)) r.created_ns = 0;
  simdjson::dom::element image;
  if (!doc["image"].get(image)) {
    if (!image.is_object()) return plain_error("function record", "'image' is not an object");
    r.image_json = simdjson::minify(image);
  }
  return r;
}

std::string encode_scale_record(uint64_t replicas) { return std::to_string(replicas); }

Result<uint64_t> decode_scale_record(std::string_view bytes) {
  if (auto replicas = parse_decimal(bytes)) return *replicas;
  return plain_error("scale record", "not a whole number: '" + std::string(bytes) + "'");
}

}  // namespace faasvisor
