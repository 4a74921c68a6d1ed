// Deploy requests (OpenFaaS provider's FunctionDeployment shape) parsed into a FunctionSpec
// (model/function_spec.h).
// Pure: no I/O besides checking that the image directory exists.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "api/image_roots.h"
#include "model/function_spec.h"
#include "model/units.h"
#include "util/result.h"

namespace faasvisor {

struct DeployLimits {
  uint32_t max_instances_cap = 4096;   // the node's ceiling for com.openfaas.scale.max
  uint32_t default_queue_limit = 1024; // faasvisor.queue when the deployment has none
  // The image (and a process function's program) must lie under one of these; null: no check.
  const api::ImageRoots *image_roots = nullptr;
  uint32_t default_async_queue_limit = 1024; // faasvisor.async_queue
  uint32_t default_async_concurrency = 8;    // faasvisor.async_concurrency (at most scale.max)
};

// The context of the error parse_deploy returns when a host path lies outside the image
// roots: the API answers it with 403 instead of 400.
extern const char kOutsideImageRoots[];

// Parses and validates a deploy body. Errors name the field: "field 'service': required".
Result<std::shared_ptr<FunctionSpec>> parse_deploy(std::string_view json, const DeployLimits &limits);

// Pieces, exposed for tests and for other parsers.
bool valid_function_name(std::string_view name);
// Whether a command runs one of the runtimes (an argument ending in runtime_file, such as
// "faasvisor_runtime.py": runtimes/python, the one with a template mode).
bool runs_runtime(const std::vector<std::string> &argv, std::string_view runtime_file);

// {"functionName": NAME} for DELETE, {"serviceName": NAME, "replicas": N} for scaling.
Result<std::string> parse_delete(std::string_view json);
struct ScaleRequest {
  std::string service_name;
  uint64_t replicas = 0;
};
Result<ScaleRequest> parse_scale(std::string_view json);

}  // namespace faasvisor
