// A function as deployed: what the API parses (api/deploy.h), the pool runs (pool/function.h),
// the image store fills in (image/layout.h) and every backend starts. A domain type, so it
// lives in the leaf module model/ and includes nothing of the areas that use it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "model/keepalive_spec.h"
#include "model/network_spec.h"

namespace faasvisor {

struct FunctionSpec {
  // As deployed (echoed back by GET /system/functions).
  std::string name;
  std::string namespace_name = "openfaas-fn";
  std::string image;        // the function's directory, or an OCI image (layout dir or tar)
  std::string env_process;  // command run there
  std::vector<std::pair<std::string, std::string>> env_vars;
  std::map<std::string, std::string> labels;
  std::map<std::string, std::string> annotations;
  std::string limits_memory;  // raw, e.g. "128Mi"
  std::string limits_cpu;     // raw, e.g. "1" or "500m"
  // Secrets the instances get as /var/openfaas/secrets/NAME (or fv_secret(NAME)); names only:
  // the values live in the node's secret table (secrets/table.h), looked up at each start.
  std::vector<std::string> secrets;
  // OpenFaaS fields kept and honoured (api/openfaas.h, docs/openfaas.md).
  std::string image_reference;           // the image as deployed when a ":TAG" was resolved away
  std::string requests_memory;           // raw; at most the limit, which is always reserved
  std::vector<std::string> constraints;  // each met by the node's labels
  bool read_only_root_fs = false;        // the root is read-only on every backend that accepts it
  uint64_t created_ns = 0;               // Unix ns of the first deploy; kept across updates

  // Derived.
  std::vector<std::string> argv;  // envProcess split; for an OCI image, else Entrypoint + Cmd
  // Filled from an OCI image once it is unpacked (image/layout.h apply_image); for a plain
  // rootfs directory rootfs is empty (the image itself) and cwd "/".
  std::string rootfs;                  // the unpacked, shared root filesystem
  std::string image_digest;            // its manifest digest
  std::vector<std::string> image_env;  // the image's Env not overridden by envVars
  std::string cwd = "/";
  uint64_t memory_bytes = 128ull << 20;
  uint64_t reservation_bytes = 0;  // held against the node's budget per instance: memory_bytes plus
                                   // the backend's own cost (set at deploy)
  uint32_t cpu_millis = 1000;
  uint32_t max_instances = 100;
  uint32_t min_instances = 0;
  uint32_t queue_limit = 1024;  // invocations waiting for an instance
  uint32_t async_queue_limit = 1024;  // async calls accepted and not done (429 beyond)
  uint32_t async_concurrency = 8;     // async calls in the pool at once
  uint32_t pids_max = 256;
  uint64_t timeout_ms = 30'000;
  uint64_t boot_timeout_ms = 10'000;
  std::string backend = "process";
  // Instance networking (docs/network.md): faasvisor.network, faasvisor.egress.*.
  net::NetworkSpec network;
  // How the instance speaks (docs/modes.md): the instance protocol itself, or through
  // faasvisor-adapter as an HTTP server on `port` (of-watchdog's http mode) or a command
  // run once per request (the classic watchdog). Annotation faasvisor.mode, else an OCI
  // image's watchdog environment (fprocess, mode, upstream_url).
  enum class Mode { protocol, http, stdio };
  Mode mode = Mode::protocol;
  bool mode_annotated = false;  // faasvisor.mode was given: the image's environment does not decide
  bool port_annotated = false;
  uint16_t port = 8080;         // http mode: the function's server, on the sandbox's loopback
  std::string ready_path;       // http mode: GET this answers 2xx before READY (of-watchdog's ready_path)
  bool vm_virtio = false;  // microvm: the protocol on a virtio port, not COM1 (set at deploy)
  // faasvisor.template (docs/templates.md): cold starts fork a template that has imported the
  // function. Default on for the Python runtime on the process backend; "off" falls back.
  bool use_template = false;
  pool::KeepAliveSpec keepalive;  // annotation faasvisor.keepalive, default fixed:10m

  // What the store keeps to rebuild this function after a restart (server/records.h).
  std::string deploy_json;  // the deploy body as accepted
  std::string image_json;   // image::encode_resolved of its OCI image, once resolved; else empty
};

// The environment an instance is given (envVars plus the node's few variables) is bounded:
// every backend hands it over in one message (the process backend's GO message, a
// container's config.json, a VM's command line or protocol), and a function's environment
// is no place for data. Deploy answers 400 beyond these.
inline constexpr size_t kMaxEnvVars = 256;
inline constexpr size_t kMaxEnvBytes = 64 * 1024;  // sum of NAME=value lengths
inline constexpr size_t kMaxCommandBytes = 16 * 1024;  // envProcess

const char *to_string(FunctionSpec::Mode mode);

}  // namespace faasvisor
