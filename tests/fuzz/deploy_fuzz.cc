// libFuzzer entry point for the deploy API's JSON parsers (api/deploy.h): whatever a client
// POSTs to /system/functions, /system/scale-function or DELETE /system/functions must give a
// FunctionSpec that holds the documented bounds, or an error naming the field, never a crash.
// An accepted spec is also written back to JSON (as GET /system/functions would) and parsed
// again: the second parse must accept it and give the same spec.
// Built by the fuzz build (-Dfuzz=true, clang, ASan+UBSan: see docs/fuzzing.md).
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "api/deploy.h"
#include "util/json.h"
#include "image/layout.h"

namespace {

namespace fv = faasvisor;

void require(bool ok) {
  if (!ok) std::abort();
}

void check_bounds(const fv::FunctionSpec &spec, const fv::DeployLimits &limits) {
  require(fv::valid_function_name(spec.name));
  // A host path, or (docs/images.md) a registry reference or an uploaded image's digest.
  require(!spec.image.empty() && (spec.image[0] == '/' || fv::image::is_registry_reference(spec.image) ||
                                  fv::image::valid_digest(spec.image)));
  require(!spec.argv.empty() || spec.env_process.empty());
  require(spec.memory_bytes >= (2ull << 20));
  require(spec.cpu_millis >= 10);
  require(spec.max_instances >= 1 && spec.max_instances <= limits.max_instances_cap);
  require(spec.min_instances <= spec.max_instances);
  require(spec.pids_max >= 1 && spec.pids_max <= 65536);
  require(spec.timeout_ms >= 1 && spec.timeout_ms <= 3'600'000);
  require(spec.boot_timeout_ms >= 1 && spec.boot_timeout_ms <= 3'600'000);
  for (const auto &[name, value] : spec.env_vars) {
    require(!name.empty() && name.find('=') == std::string::npos);
    require(name.find('\0') == std::string::npos && value.find('\0') == std::string::npos);
  }
}

void write_map(fv::JsonWriter &w, std::string_view key,
               const std::map<std::string, std::string> &map) {
  w.key(key).begin_object();
  for (const auto &[k, v] : map) w.field(k, v);
  w.end_object();
}

// The deployment as a client could send it again.
std::string encode(const fv::FunctionSpec &spec) {
  std::string out;
  fv::JsonWriter w(out);
  w.begin_object().field("service", spec.name).field("image", spec.image);
  w.field("envProcess", spec.env_process).field("namespace", spec.namespace_name);
  w.key("envVars").begin_object();
  for (const auto &[k, v] : spec.env_vars) w.field(k, v);
  w.end_object();
  write_map(w, "labels", spec.labels);
  write_map(w, "annotations", spec.annotations);
  w.key("limits").begin_object();
  if (!spec.limits_memory.empty()) w.field("memory", spec.limits_memory);
  if (!spec.limits_cpu.empty()) w.field("cpu", spec.limits_cpu);
  w.end_object().end_object();
  return out;
}

bool same(const fv::FunctionSpec &a, const fv::FunctionSpec &b) {
  return a.name == b.name && a.image == b.image && a.env_process == b.env_process &&
         a.env_vars == b.env_vars && a.labels == b.labels && a.annotations == b.annotations &&
         a.argv == b.argv && a.memory_bytes == b.memory_bytes && a.cpu_millis == b.cpu_millis &&
         a.max_instances == b.max_instances && a.min_instances == b.min_instances &&
         a.queue_limit == b.queue_limit && a.pids_max == b.pids_max &&
         a.timeout_ms == b.timeout_ms && a.boot_timeout_ms == b.boot_timeout_ms &&
         a.backend == b.backend;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  std::string_view json(reinterpret_cast<const char *>(data), size);
  fv::DeployLimits limits;
  limits.max_instances_cap = 1000;
  auto spec = fv::parse_deploy(json, limits);
  if (spec) {
    check_bounds(**spec, limits);
    auto again = fv::parse_deploy(encode(**spec), limits);
    require(again.ok() && same(**spec, **again));
  } else {
    require(!spec.error().message().empty());
  }
  if (auto name = fv::parse_delete(json)) (void)name->size();
  if (auto scale = fv::parse_scale(json)) require(scale->replicas <= 100000);
  // The quantity parsers see the raw text too (the annotations and limits they normally get
  // are whatever a client wrote).
  if (size <= 64) {
    (void)fv::parse_duration_ms(json);
    (void)fv::parse_memory_bytes(json);
    (void)fv::parse_cpu_millis(json);
  }
  return 0;
}
