// What the node writes to its store (store/store.h) and reads back at start: the pure
// encoding of each record kind, apart from the node so it can be tested alone.
//
// function/NAME: {"generation": N, "deploy": "<the deploy body as accepted>",
//                 "image": <image::encode_resolved of its OCI image>}   ("image" only for OCI
//   images). Restoring parses the deploy body again (parse_deploy: the same validation as a
//   deploy) and, for an OCI image, applies the resolved image (image::apply_image), so the
//   function comes back exactly as it was, without unpacking anything.
// scale/NAME: the replicas last asked for by POST /system/scale-function, in decimal.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "util/result.h"

namespace faasvisor {

struct FunctionRecord {
  uint64_t generation = 1;
  std::string deploy_json;  // the body of the POST or PUT that made this generation
  std::string image_json;   // image::encode_resolved(...), or empty for a plain directory
};

std::string encode_function_record(const FunctionRecord &record);
Result<FunctionRecord> decode_function_record(std::string_view bytes);

std::string encode_scale_record(uint64_t replicas);
Result<uint64_t> decode_scale_record(std::string_view bytes);

}  // namespace faasvisor
