// libFuzzer entry point for the instance protocol codec: whatever an instance writes, the
// node's decoders must neither crash nor read out of bounds, and what decodes must
// re-encode to the same bytes. Build with -Dfuzz=true and clang (see meson_options.txt).
#include <cstddef>
#include <cstdint>
#include <algorithm>
#include <cstdlib>
#include <vector>

#include "faasvisor/frame.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  fv_frame_header header{};
  int rc = fv_frame_header_parse(data, size, 1u << 20, &header);
  if (rc != FV_OK || size < FV_FRAME_HEADER_SIZE + header.length) return 0;
  const uint8_t *payload = data + FV_FRAME_HEADER_SIZE;
  static fv_request_view req;
  static fv_response_view resp;
  std::vector<uint8_t> out(FV_FRAME_HEADER_SIZE + header.length);
  if (header.type == FV_FRAME_REQUEST && fv_request_decode(payload, header.length, &req) == FV_OK) {
    long n = fv_request_encode(out.data(), out.size(), &req);
    if (n != static_cast<long>(out.size()) ||
        !std::equal(out.begin() + FV_FRAME_HEADER_SIZE, out.end(), payload))
      std::abort();
  }
  if (header.type == FV_FRAME_RESPONSE && fv_response_decode(payload, header.length, &resp) == FV_OK) {
    long n = fv_response_encode(out.data(), out.size(), &resp);
    if (n != static_cast<long>(out.size())) std::abort();
  }
  return 0;
}
