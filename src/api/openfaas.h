// What the OpenFaaS clients (faas-cli, the gateway) need beyond faasvisor's own shapes: the
// one namespace, the FunctionDeployment fields faasvisor does not otherwise use, image
// references with a tag, constraints against the node's labels (docs/openfaas.md). Pure
// except resolve_image_tag, which looks at the file system.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <string_view>

#include "util/result.h"

namespace simdjson::dom {
class element;
}

namespace faasvisor {

struct FunctionSpec;

namespace api {

// The only namespace: OpenFaaS's default function namespace.
inline constexpr std::string_view kNamespace = "openfaas-fn";

// Empty (the default) or openfaas-fn; anything else is refused as faasd refuses it (400).
Status check_namespace(std::string_view namespace_name, std::string_view where);

// "/function/NAME.NAMESPACE" as the gateway forwards it: NAME and NAMESPACE split at the last
// '.', unless the whole of `full` names a function (names may contain dots).
struct QualifiedName {
  std::string_view name;
  std::string_view namespace_name;  // empty when the reference has none
};
template <typename Exists>
QualifiedName split_function_name(std::string_view full, Exists &&exists) {
  size_t dot = full.rfind('.');
  if (dot == std::string_view::npos || dot == 0 || exists(full)) return {full, {}};
  return {full.substr(0, dot), full.substr(dot + 1)};
}

// The FunctionDeployment fields parse_deploy has no field of its own for: constraints,
// requests, readOnlyRootFilesystem; any other key is refused, naming it, so nothing a client
// sends is silently dropped.
Status read_openfaas_field(std::string_view key, const simdjson::dom::element &value, FunctionSpec &spec);
// A limits key other than memory and cpu (a GPU count) is refused, naming it.
Status refuse_limits_key(std::string_view key);

// The node's labels, which constraints are matched against (kubernetes.io/os, .../arch,
// .../hostname, node.platform.os, node.platform.arch).
std::map<std::string, std::string> node_labels();
// Checks what the parsed fields ask for against the node: requests within limits, every
// constraint met by `labels`, readOnlyRootFilesystem on a backend whose root is read-only.
Status check_openfaas_fields(const FunctionSpec &spec, const std::map<std::string, std::string> &labels);
// One constraint: "KEY == VALUE", "KEY != VALUE" (Swarm, faasd) or "KEY=VALUE" (Kubernetes
// node selector).
Result<bool> constraint_met(std::string_view constraint, const std::map<std::string, std::string> &labels);

// faas-cli appends ":latest" to an image without a tag. A host path that does not exist with
// its trailing ":TAG" but does without it is resolved to the path without it; returns true
// when it changed `image`.
bool resolve_image_tag(std::string &image);

// "2026-12-03T09:30:00.123456789Z" (RFC 3339, UTC, nanoseconds), as Go's time.Time reads it.
std::string format_rfc3339_ns(uint64_t unix_ns);

}  // namespace api
}  // namespace faasvisor
