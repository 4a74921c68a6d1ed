#include "api/openfaas.h"

#include <sys/stat.h>
#include <sys/utsname.h>

#include <cstdio>
#include <ctime>
#include <simdjson.h>

#include "api/deploy.h"

namespace faasvisor::api {
namespace {

namespace dom = simdjson::dom;

Error field_error(std::string_view field, std::string_view what) {
  return plain_error("invalid deployment",
                     "field '" + std::string(field) + "': " + std::string(what));
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

// requests: {"memory", "cpu"} as in limits. A CPU request is refused: the node enforces
// limits.cpu as a CFS quota and reserves no CPU, so it could not guarantee one.
Status read_requests(dom::element value, FunctionSpec &spec) {
  if (value.is_null()) return {};
  dom::object object;
  if (value.get_object().get(object)) return field_error("requests", "must be an object");
  for (auto [key, member] : object) {
    std::string field = "requests." + std::string(key);
    std::string_view text;
    if (key == "cpu")
      return field_error(field, "not supported: faasvisor reserves no CPU for a function (limits.cpu is a quota)");
    if (key != "memory") return field_error(field, "not supported by faasvisor");
    if (member.get_string().get(text)) return field_error(field, "must be a string such as \"64Mi\"");
    spec.requests_memory = std::string(text);
  }
  return {};
}

Status read_constraints(dom::element value, FunctionSpec &spec) {
  if (value.is_null()) return {};
  dom::array array;
  if (value.get_array().get(array)) return field_error("constraints", "must be an array of strings");
  for (dom::element item : array) {
    std::string_view text;
    if (item.get_string().get(text)) return field_error("constraints", "must be an array of strings");
    spec.constraints.emplace_back(text);
  }
  return {};
}

}  // namespace

Status check_namespace(std::string_view namespace_name, std::string_view where) {
  if (namespace_name.empty() || namespace_name == kNamespace) return {};
  return plain_error("namespace not valid",
                     std::string(where) + ": '" + std::string(namespace_name) +
                         "': this node has one namespace, " + std::string(kNamespace));
}

Status read_openfaas_field(std::string_view key, const dom::element &value, FunctionSpec &spec) {
  if (key == "constraints") return read_constraints(value, spec);
  if (key == "requests") return read_requests(value, spec);
  if (key == "readOnlyRootFilesystem") {
    if (value.is_null()) return {};
    if (value.get_bool().get(spec.read_only_root_fs)) return field_error(key, "must be true or false");
    return {};
  }
  return field_error(key, "not supported by faasvisor");
}

Status refuse_limits_key(std::string_view key) {
  return field_error("limits." + std::string(key), "not supported by faasvisor (only memory and cpu)");
}

std::map<std::string, std::string> node_labels() {
  std::map<std::string, std::string> labels;
  utsname u{};
  uname(&u);
  std::string arch = u.machine;
  // Kubernetes' GOARCH names beside Swarm's uname names.
  std::string goarch = arch == "x86_64" ? "amd64" : arch == "aarch64" ? "arm64" : arch;
  labels["kubernetes.io/os"] = "linux";
  labels["kubernetes.io/arch"] = goarch;
  labels["kubernetes.io/hostname"] = u.nodename;
  labels["node.platform.os"] = "linux";
  labels["node.platform.arch"] = arch;
  labels["node.hostname"] = u.nodename;
  return labels;
}

Result<bool> constraint_met(std::string_view constraint, const std::map<std::string, std::string> &labels) {
  std::string_view key, value;
  bool equal = true;
  if (size_t op = constraint.find("=="); op != std::string_view::npos) {
    key = constraint.substr(0, op);
    value = constraint.substr(op + 2);
  } else if (size_t ne = constraint.find("!="); ne != std::string_view::npos) {
    key = constraint.substr(0, ne);
    value = constraint.substr(ne + 2);
    equal = false;
  } else if (size_t eq = constraint.find('='); eq != std::string_view::npos) {
    key = constraint.substr(0, eq);
    value = constraint.substr(eq + 1);
  } else {
    return plain_error("constraint", "expected KEY == VALUE, KEY != VALUE or KEY=VALUE");
  }
  key = trim(key);
  value = trim(value);
  if (key.empty()) return plain_error("constraint", "empty label name");
  auto it = labels.find(std::string(key));
  bool same = it != labels.end() && it->second == value;
  return equal ? same : !same;
}

Status check_openfaas_fields(const FunctionSpec &spec, const std::map<std::string, std::string> &labels) {
  if (!spec.requests_memory.empty()) {
    auto bytes = parse_memory_bytes(spec.requests_memory);
    if (!bytes) return field_error("requests.memory", "must be a quantity such as \"64Mi\"");
    // Every instance holds its whole limit against the node's memory budget before it starts,
    // so a request up to the limit is always met; above it, Kubernetes refuses it too.
    if (*bytes > spec.memory_bytes)
      return field_error("requests.memory", "must not exceed limits.memory (" + std::to_string(spec.memory_bytes) +
                                                " bytes)");
  }
  for (const std::string &c : spec.constraints) {
    auto met = constraint_met(c, labels);
    if (!met) return field_error("constraints", "'" + c + "': " + met.error().message());
    if (!*met) {
      std::string known;
      for (const auto &[k, v] : labels) known += (known.empty() ? "" : ", ") + k + "=" + v;
      return field_error("constraints", "'" + c + "' is not met by this node (its labels: " + known + ")");
    }
  }
  // The process backend shows the host read-only and the container backends mount the
  // image's root read-only, /tmp being the instance's own tmpfs in each, as OpenFaaS gives a
  // read-only function /tmp. A VM's initramfs root is writable.
  if (spec.read_only_root_fs && (spec.backend == "microvm" || spec.backend == "unikernel"))
    return field_error("readOnlyRootFilesystem", "not offered by the " + spec.backend + " backend");
  return {};
}

bool resolve_image_tag(std::string &image) {
  struct stat st {};
  if (image.empty() || image[0] != '/' || stat(image.c_str(), &st) == 0) return false;
  size_t slash = image.rfind('/');
  size_t colon = image.rfind(':');
  if (colon == std::string::npos || colon < slash || colon + 1 == image.size()) return false;
  std::string bare = image.substr(0, colon);
  if (bare.size() <= slash + 1 || stat(bare.c_str(), &st) != 0) return false;
  image = std::move(bare);
  return true;
}

std::string format_rfc3339_ns(uint64_t unix_ns) {
  time_t secs = static_cast<time_t>(unix_ns / 1'000'000'000ull);
  tm utc{};
  gmtime_r(&secs, &utc);
  char stamp[48];
  std::snprintf(stamp, sizeof stamp, "%04d-%02d-%02dT%02d:%02d:%02d.%09lluZ", utc.tm_year + 1900,
                utc.tm_mon + 1, utc.tm_mday, utc.tm_hour, utc.tm_min, utc.tm_sec,
                static_cast<unsigned long long>(unix_ns % 1'000'000'000ull));
  return stamp;
}

}  // namespace faasvisor::api
