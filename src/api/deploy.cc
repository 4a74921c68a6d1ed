#include "api/deploy.h"

#include <sys/stat.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <climits>
#include <cmath>
#include <cstdlib>
#include <simdjson.h>

#include "api/openfaas.h"
#include "faasvisor/frame.h"
#include "image/layout.h"
#include "net/policy.h"
#include "proc/spawn.h"
#include "util/number.h"
#include "secrets/request.h"

namespace faasvisor {

const char kOutsideImageRoots[] = "image outside the image roots";

namespace {

namespace dom = simdjson::dom;

Error field_error(std::string_view field, std::string_view what) {
  return plain_error("invalid deployment",
                     "field '" + std::string(field) + "': " + std::string(what));
}

// Reads an object of string -> string into `out`.
template <typename Out>
Status read_string_map(dom::element value, std::string_view field, Out &&put) {
  dom::object object;
  if (value.is_null()) return {};  // Go clients send a nil map as null
  if (value.get_object().get(object)) return field_error(field, "must be an object of strings");
  for (auto [key, member] : object) {
    std::string_view text;
    if (member.get_string().get(text))
      return field_error(field, "value of '" + std::string(key) + "' must be a string");
    put(std::string(key), std::string(text));
  }
  return {};
}

// "secrets": [names]. Whether they exist is the handler's question (the secret table).
Status read_secrets(dom::element value, FunctionSpec &spec) {
  dom::array array;
  if (value.is_null()) return {};  // faas-cli may send null for none
  if (value.get_array().get(array)) return field_error("secrets", "must be an array of secret names");
  for (dom::element item : array) {
    std::string_view name;
    if (item.get_string().get(name)) return field_error("secrets", "must be an array of secret names");
    if (!secrets::valid_secret_name(name))
      return field_error("secrets", "'" + std::string(name) + "' is not a secret name");
    if (spec.secrets.size() == FV_SECRETS_MAX_COUNT)
      return field_error("secrets", "more than " + std::to_string(FV_SECRETS_MAX_COUNT) + " names");
    spec.secrets.emplace_back(name);
  }
  return {};
}

Status read_limits(dom::element value, FunctionSpec &spec) {
  dom::object object;
  if (value.is_null()) return {};
  if (value.get_object().get(object)) return field_error("limits", "must be an object");
  for (auto [key, member] : object) {
    std::string_view text;
    if (key != "memory" && key != "cpu") return api::refuse_limits_key(key);
    if (member.get_string().get(text))
      return field_error("limits." + std::string(key), "must be a string such as \"128Mi\"");
    if (key == "memory") spec.limits_memory = std::string(text);
    else spec.limits_cpu = std::string(text);
  }
  return {};
}

Result<uint64_t> parse_count(const std::map<std::string, std::string> &map, const char *key,
                             uint64_t fallback, uint64_t min, uint64_t max, const char *field) {
  auto it = map.find(key);
  if (it == map.end()) return fallback;
  std::optional<uint64_t> v = parse_decimal(it->second);
  if (!v || *v < min || *v > max)
    return field_error(std::string(field) + "." + key,
                       "must be a whole number from " + std::to_string(min) + " to " +
                           std::to_string(max));
  return *v;
}

// faasvisor.mode, faasvisor.port, faasvisor.ready_path (docs/modes.md).
Status read_mode(FunctionSpec &spec) {
  if (auto it = spec.annotations.find("faasvisor.mode"); it != spec.annotations.end()) {
    if (it->second == "protocol") spec.mode = FunctionSpec::Mode::protocol;
    else if (it->second == "http") spec.mode = FunctionSpec::Mode::http;
    else if (it->second == "stdio") spec.mode = FunctionSpec::Mode::stdio;
    else return field_error("annotations.faasvisor.mode", "must be protocol, http or stdio");
    spec.mode_annotated = true;
  }
  if (auto it = spec.annotations.find("faasvisor.port"); it != spec.annotations.end()) {
    std::optional<uint64_t> port = parse_decimal(it->second);
    if (!port || *port < 1 || *port > 65535)
      return field_error("annotations.faasvisor.port", "must be a TCP port from 1 to 65535");
    spec.port = static_cast<uint16_t>(*port);
    spec.port_annotated = true;
  }
  if (auto it = spec.annotations.find("faasvisor.ready_path"); it != spec.annotations.end()) {
    if (it->second.empty() || it->second[0] != '/' || it->second.find_first_of(" \r\n") != std::string::npos)
      return field_error("annotations.faasvisor.ready_path", "must be a path starting with '/'");
    spec.ready_path = it->second;
  }
  return {};
}

Error root_refusal(std::string_view field, std::string detail) {
  return Error{0, kOutsideImageRoots, "field '" + std::string(field) + "': " + std::move(detail)};
}

// The program a process function's envProcess runs: argv[0] as the sandbox's execvpe will
// find it (relative to the function's directory, or on the function's PATH for a bare name).
// It must resolve inside the function's directory, an image root, or a system program
// directory: a process sandbox sees the host read-only, so what a function can exec itself is
// no secret, but a deployment must not make any host binary (a tool in someone's home, a
// payload dropped in /var/tmp) the function. docs/security.md.
Status check_process_program(const FunctionSpec &spec, const std::string &image_dir,
                             const api::ImageRoots &roots) {
  const std::string &program = spec.argv.at(0);
  std::string candidate;
  if (program.find('/') != std::string::npos) {
    candidate = program[0] == '/' ? program : image_dir + "/" + program;
  } else {
    std::string path = "/usr/local/bin:/usr/bin:/bin";
    for (const auto &[name, value] : spec.env_vars)
      if (name == "PATH") path = value;
    size_t start = 0;
    while (candidate.empty() && start <= path.size()) {
      size_t end = std::min(path.find(':', start), path.size());
      std::string dir = path.substr(start, end - start);
      if (dir.empty()) dir = ".";
      if (dir[0] != '/') dir = image_dir + "/" + dir;
      std::string file = dir + "/" + program;
      struct stat st {};
      if (stat(file.c_str(), &st) == 0 && S_ISREG(st.st_mode)) candidate = file;
      start = end + 1;
    }
    if (candidate.empty())
      return field_error("envProcess", "'" + program + "' is not found on the function's PATH");
  }
  // A program that does not exist yet fails at boot; where it would be looked for still counts.
  std::string where = candidate;
  struct stat st {};
  if (stat(where.c_str(), &st) < 0) where = where.substr(0, where.rfind('/'));
  char buf[PATH_MAX];
  if (realpath(where.c_str(), buf) != nullptr) {
    std::string resolved = buf;
    if (api::path_within(resolved, image_dir)) return {};
    for (const std::string &root : roots.roots())
      if (api::path_within(resolved, root)) return {};
    for (const char *system_dir : {"/usr/bin", "/usr/sbin", "/usr/local/bin", "/usr/local/sbin", "/bin", "/sbin"}) {
      char dir[PATH_MAX];
      if (realpath(system_dir, dir) != nullptr && api::path_within(resolved, dir)) return {};
    }
  }
  return root_refusal("envProcess", "the program '" + program +
                                        "' is neither in the function's directory, under an image root nor in a "
                                        "system program directory (" + roots.describe() + ")");
}

Status check_environment_size(const FunctionSpec &spec) {
  size_t bytes = 0;
  for (const auto &[name, value] : spec.env_vars) bytes += name.size() + 1 + value.size();
  if (spec.env_vars.size() > kMaxEnvVars)
    return field_error("envVars", "at most " + std::to_string(kMaxEnvVars) + " variables, not " +
                                      std::to_string(spec.env_vars.size()));
  if (bytes > kMaxEnvBytes)
    return field_error("envVars", "at most " + std::to_string(kMaxEnvBytes) + " bytes of NAME=value in all, not " +
                                      std::to_string(bytes));
  return {};
}

Status derive_template(FunctionSpec &spec) {
  std::string mode = "auto";
  if (auto it = spec.annotations.find("faasvisor.template"); it != spec.annotations.end()) mode = it->second;
  // "auto": the Python runtime, which has a template mode; "on" also for a program built
  // with the C function SDK (which has one too, but the node cannot tell it from others).
  if (mode == "off") {
    spec.use_template = false;
  } else if (mode == "on" || mode == "auto") {
    if (mode == "on" && spec.backend != "process")
      return field_error("annotations.faasvisor.template", "templates run on the process backend only");
    if (mode == "on" && runs_runtime(spec.argv, "faasvisor_runtime.js"))
      return field_error("annotations.faasvisor.template", "the Node.js runtime has no template mode");
    // A template serves the instance protocol itself; behind faasvisor-adapter (http, stdio)
    // the adapter is what the stem runs, and it has no template mode.
    if (mode == "on" && spec.mode != FunctionSpec::Mode::protocol)
      return field_error("annotations.faasvisor.template",
                         std::string("templates serve the instance protocol, not faasvisor.mode ") + to_string(spec.mode));
    spec.use_template = spec.backend == "process" && spec.mode == FunctionSpec::Mode::protocol &&
                        (mode == "on" || runs_runtime(spec.argv, "faasvisor_runtime.py"));
  } else {
    return field_error("annotations.faasvisor.template", "must be \"on\", \"off\" or \"auto\"");
  }
  return {};
}

Status derive(FunctionSpec &spec, const DeployLimits &limits) {
  if (spec.name.empty()) return field_error("service", "required");
  if (!valid_function_name(spec.name))
    return field_error("service", "must be 1-63 characters of a-z, A-Z, 0-9, '-', '_' or '.', "
                                  "not starting with '.' or '-'");
  // First: what the image is depends on the backend that runs it.
  if (auto it = spec.annotations.find("faasvisor.backend"); it != spec.annotations.end())
    spec.backend = it->second;
  if (spec.image.empty()) return field_error("image", "required (the function's directory)");
  struct stat st {};
  // A registry image, or one uploaded to the cache (POST /system/images) named by digest.
  bool uploaded = image::valid_digest(spec.image);
  bool registry = uploaded || image::is_registry_reference(spec.image);
  std::string image_dir;
  if (uploaded) {
    if (Status st = image::check_runs_images(spec); !st.ok()) return st;
  } else if (registry) {
    // Pulled at deploy time by the image helper (image/pull.h); what is checked here is the
    // reference's shape and that the backend runs images. No host path: no image root.
    if (auto ref = image::parse_reference(spec.image); !ref) return ref.error();
    if (Status st = image::check_runs_images(spec); !st.ok()) return st;
  } else if (spec.image[0] != '/') {
    return field_error("image", "must be an absolute path or a registry image (REGISTRY/NAME:TAG)");
  }
  // Before anything looks at the path: a refusal must not tell which host paths exist.
  if (!registry && limits.image_roots != nullptr) {
    auto resolved = limits.image_roots->check(spec.image);
    if (!resolved) return root_refusal("image", resolved.error().detail);
    image_dir = std::move(*resolved);
  }
  std::string as_deployed = spec.image;
  if (!registry && api::resolve_image_tag(spec.image)) {
    spec.image_reference = std::move(as_deployed);
    // The tagged path passed as a path under a root that does not exist; the bare one must
    // pass on its own (a symlink may lead it elsewhere).
    if (limits.image_roots != nullptr) {
      auto resolved = limits.image_roots->check(spec.image);
      if (!resolved) return root_refusal("image", resolved.error().detail);
      image_dir = std::move(*resolved);
    }
  }
  // A directory for the process and container backends, an OCI image (a layout directory
  // or archive) for the container backends, a file (an initramfs, a unikernel) for the VM
  // backends: each backend's validate() checks its kind.
  if (!registry && stat(spec.image.c_str(), &st) < 0)
    return field_error("image", "'" + spec.image + "' does not exist on this node");
  bool oci = registry || image::is_oci_image(spec);
  // An OCI image brings its own command (Entrypoint/Cmd); envProcess, if given, replaces it.
  if (spec.env_process.empty() && !oci) return field_error("envProcess", "required (the command to run)");
  if (spec.env_process.size() > kMaxCommandBytes)
    return field_error("envProcess", "at most " + std::to_string(kMaxCommandBytes) + " bytes");
  if (!spec.env_process.empty()) {
    auto argv = proc::split_command(spec.env_process);
    if (!argv) return field_error("envProcess", argv.error().message());
    spec.argv = std::move(*argv);
  }
  for (const auto &[name, value] : spec.env_vars) {
    if (name.empty() || name.find('=') != std::string::npos || name.find('\0') != std::string::npos ||
        value.find('\0') != std::string::npos)
      return field_error("envVars", "bad variable name '" + name + "'");
  }
  if (Status st = check_environment_size(spec); !st.ok()) return st;
  // Only the process backend runs a host program; the others find envProcess in their image.
  if (limits.image_roots != nullptr && spec.backend == "process" && !oci && !spec.argv.empty() &&
      S_ISDIR(st.st_mode)) {
    if (Status checked = check_process_program(spec, image_dir, *limits.image_roots); !checked.ok()) return checked;
  }
  if (!spec.limits_memory.empty()) {
    auto bytes = parse_memory_bytes(spec.limits_memory);
    // 2Mi: the least any backend runs in (a unikernel); each backend may ask for more.
    if (!bytes || *bytes < (2ull << 20))
      return field_error("limits.memory", "must be a quantity of at least 2Mi, such as \"128Mi\"");
    spec.memory_bytes = *bytes;
  }
  if (!spec.limits_cpu.empty()) {
    auto millis = parse_cpu_millis(spec.limits_cpu);
    if (!millis || *millis < 10)
      return field_error("limits.cpu", "must be a CPU count of at least 10m, such as \"1\" or \"500m\"");
    spec.cpu_millis = *millis;
  }
  auto max = parse_count(spec.labels, "com.openfaas.scale.max", spec.max_instances, 1,
                         limits.max_instances_cap, "labels");
  if (!max) return max.error();
  spec.max_instances = static_cast<uint32_t>(*max);
  auto min = parse_count(spec.labels, "com.openfaas.scale.min", 0, 0, spec.max_instances, "labels");
  if (!min) return min.error();
  spec.min_instances = static_cast<uint32_t>(*min);
  auto queue = parse_count(spec.annotations, "faasvisor.queue", limits.default_queue_limit, 0, 100000,
                           "annotations");
  if (!queue) return queue.error();
  spec.queue_limit = static_cast<uint32_t>(*queue);
  auto pids = parse_count(spec.annotations, "faasvisor.pids", spec.pids_max, 1, 65536, "annotations");
  if (!pids) return pids.error();
  spec.pids_max = static_cast<uint32_t>(*pids);
  // Async calls (docs/async.md): how many may be live per function, and how many of them in
  // the pool at once (the rest of the instances stay for sync traffic).
  struct {
    const char *key;
    uint64_t fallback, max;
    uint32_t *target;
  } const async_counts[] = {
      {"faasvisor.async_queue", limits.default_async_queue_limit, 1'000'000, &spec.async_queue_limit},
      {"faasvisor.async_concurrency", std::min<uint64_t>(limits.default_async_concurrency, spec.max_instances),
       spec.max_instances, &spec.async_concurrency},
  };
  for (const auto &c : async_counts) {
    auto n = parse_count(spec.annotations, c.key, c.fallback, 1, c.max, "annotations");
    if (!n) return n.error();
    *c.target = static_cast<uint32_t>(*n);
  }
  for (auto [key, target] : {std::pair{"faasvisor.timeout", &spec.timeout_ms},
                             std::pair{"faasvisor.boot_timeout", &spec.boot_timeout_ms}}) {
    auto it = spec.annotations.find(key);
    if (it == spec.annotations.end()) continue;
    auto ms = parse_duration_ms(it->second);
    if (!ms || *ms == 0 || *ms > 3'600'000)
      return field_error(std::string("annotations.") + key,
                         "must be a duration from 1ms to 1h, such as \"30s\"");
    *target = *ms;
  }
  auto network = net::parse_network_annotations(spec.annotations);
  if (!network) return network.error();
  spec.network = std::move(*network);
  if (Status st = read_mode(spec); !st.ok()) return st;
  if (auto it = spec.annotations.find("faasvisor.keepalive"); it != spec.annotations.end()) {
    auto keepalive = pool::parse_keepalive(it->second);
    if (!keepalive) return field_error("annotations.faasvisor.keepalive", keepalive.error().message());
    spec.keepalive = *keepalive;
  }
  if (Status st = derive_template(spec); !st.ok()) return st;
  if (Status st = api::check_namespace(spec.namespace_name, "field 'namespace'"); !st.ok()) return st;
  spec.namespace_name = std::string(api::kNamespace);
  return api::check_openfaas_fields(spec, api::node_labels());
}

// DeleteFunctionRequest and ScaleServiceRequest carry an optional "namespace".
Status check_body_namespace(dom::object object) {
  dom::element value;
  if (object["namespace"].get(value)) return {};
  std::string_view text;
  if (!value.is_null() && value.get_string().get(text)) return field_error("namespace", "must be a string");
  return api::check_namespace(text, "field 'namespace'");
}

}  // namespace

bool valid_function_name(std::string_view name) {
  if (name.empty() || name.size() > 63 || name[0] == '.' || name[0] == '-') return false;
  for (char c : name) {
    bool ok = std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == '.';
    if (!ok) return false;
  }
  return name != "." && name != "..";
}

Result<std::shared_ptr<FunctionSpec>> parse_deploy(std::string_view json,
                                                   const DeployLimits &limits) {
  auto spec = std::make_shared<FunctionSpec>();
  dom::parser parser;
  dom::element doc;
  if (auto err = parser.parse(json.data(), json.size()).get(doc))
    return plain_error("invalid JSON", simdjson::error_message(err));
  dom::object object;
  if (doc.get_object().get(object)) return plain_error("invalid deployment", "expected a JSON object");
  for (dom::key_value_pair member : object) {
    // Named copies, not structured bindings: clang 14 cannot capture those in a lambda.
    std::string_view key = member.key;
    dom::element value = member.value;
    std::string_view text;
    auto string_field = [&](std::string &out) -> Status {
      if (value.get_string().get(text)) return field_error(key, "must be a string");
      out = std::string(text);
      return {};
    };
    Status st;
    if (key == "service") st = string_field(spec->name);
    else if (key == "image") st = string_field(spec->image);
    else if (key == "envProcess") st = string_field(spec->env_process);
    else if (key == "namespace") st = string_field(spec->namespace_name);
    else if (key == "envVars")
      st = read_string_map(value, key, [&](std::string k, std::string v) {
        spec->env_vars.emplace_back(std::move(k), std::move(v));
      });
    else if (key == "labels")
      st = read_string_map(value, key, [&](std::string k, std::string v) { spec->labels[k] = v; });
    else if (key == "annotations")
      st = read_string_map(value, key,
                           [&](std::string k, std::string v) { spec->annotations[k] = v; });
    else if (key == "limits") st = read_limits(value, *spec);
    else if (key == "secrets") st = read_secrets(value, *spec);
    else st = api::read_openfaas_field(key, value, *spec);
    if (!st.ok()) return st.error();
  }
  Status st = derive(*spec, limits);
  if (!st.ok()) return st.error();
  return spec;
}

Result<std::string> parse_delete(std::string_view json) {
  dom::parser parser;
  dom::element doc;
  std::string_view name;
  if (auto err = parser.parse(json.data(), json.size()).get(doc))
    return plain_error("invalid JSON", simdjson::error_message(err));
  dom::object object;
  if (doc.get_object().get(object)) return plain_error("invalid request", "expected a JSON object");
  if (object["functionName"].get_string().get(name)) return field_error("functionName", "required string");
  if (Status st = check_body_namespace(object); !st.ok()) return st.error();
  return std::string(name);
}

Result<ScaleRequest> parse_scale(std::string_view json) {
  dom::parser parser;
  dom::element doc;
  ScaleRequest out;
  if (auto err = parser.parse(json.data(), json.size()).get(doc))
    return plain_error("invalid JSON", simdjson::error_message(err));
  dom::object object;
  if (doc.get_object().get(object)) return plain_error("invalid request", "expected a JSON object");
  bool have_replicas = false;
  for (auto [key, member] : object) {
    if (key == "serviceName") {
      std::string_view name;
      if (member.get_string().get(name)) return field_error("serviceName", "must be a string");
      out.service_name = std::string(name);
    } else if (key == "replicas") {
      int64_t n = 0;
      have_replicas = true;
      if (member.get_int64().get(n) || n < 0 || n > 100000)
        return field_error("replicas", "must be a whole number from 0 to 100000");
      out.replicas = static_cast<uint64_t>(n);
    }
  }
  if (!have_replicas) return field_error("replicas", "required");
  if (Status st = check_body_namespace(object); !st.ok()) return st.error();
  return out;
}

bool runs_runtime(const std::vector<std::string> &argv, std::string_view runtime_file) {
  for (std::string_view a : argv)
    if (a.size() >= runtime_file.size() && a.substr(a.size() - runtime_file.size()) == runtime_file) return true;
  return false;
}

}  // namespace faasvisor
