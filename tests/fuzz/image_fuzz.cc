// libFuzzer entry point for the OCI image layout parsers (image/layout.h): an image's
// index.json, manifest and config are whatever its author wrote, and the unpack helper's
// answer is parsed by the node. Every parser must give a bounded result or an error, never a
// crash; a parsed config must survive the helper's encode_resolved -> decode_resolved trip
// unchanged; a cleaned layer path is never absolute and never climbs out with "..".
// The input is tried as each document in turn (one corpus serves all four parsers).
// Built by the fuzz build (-Dfuzz=true, clang, ASan+UBSan: see docs/fuzzing.md).
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "image/layout.h"

namespace {

namespace image = faasvisor::image;

void require(bool ok) {
  if (!ok) std::abort();
}

constexpr std::string_view kDigest =
    "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

void check_config(const image::ImageConfig &config) {
  require(config.entrypoint.size() + config.cmd.size() + config.env.size() <= image::kMaxConfigStrings);
  image::Resolved resolved;
  resolved.digest = std::string(kDigest);
  resolved.rootfs = "/var/cache/faasvisor/rootfs";
  resolved.config = config;
  auto back = image::decode_resolved(image::encode_resolved(resolved));
  require(back.ok());
  require(back->digest == resolved.digest && back->rootfs == resolved.rootfs);
  require(back->config.entrypoint == config.entrypoint && back->config.cmd == config.cmd &&
          back->config.env == config.env && back->config.working_dir == config.working_dir);
}

void check_path(std::string_view name) {
  auto cleaned = image::clean_entry_path(name);
  if (!cleaned) return;
  require(cleaned->empty() || (*cleaned)[0] != '/');
  for (std::string_view part : image::split_on(*cleaned, '/')) require(part != ".." && part != ".");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  std::string_view json(reinterpret_cast<const char *>(data), size);
  if (auto index = image::parse_index(json)) require(image::valid_digest(index->digest));
  if (auto manifest = image::parse_manifest(json)) {
    require(image::valid_digest(manifest->config.digest));
    require(manifest->layers.size() <= image::kMaxLayers);
    for (const image::Descriptor &layer : manifest->layers) require(image::valid_digest(layer.digest));
  }
  if (auto config = image::parse_config(json)) check_config(*config);
  if (auto answer = image::decode_resolved(json)) {
    require(image::valid_digest(answer->digest) && !answer->rootfs.empty() && answer->rootfs[0] == '/');
  }
  if (size <= 4096) check_path(json);
  return 0;
}
