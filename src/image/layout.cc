#include "image/layout.h"

#include <sys/stat.h>

#include <cctype>

#include <simdjson.h>

#include "util/json.h"
#include "proc/spawn.h"
#include "util/number.h"

namespace faasvisor::image {
namespace {

namespace dom = simdjson::dom;

constexpr std::string_view kManifestTypes[] = {"application/vnd.oci.image.manifest.v1+json",
                                               "application/vnd.docker.distribution.manifest.v2+json"};

Result<dom::object> parse_object(dom::parser &parser, std::string_view json, const char *what) {
  if (json.size() > kMaxJsonBlob) return plain_error(what, "larger than 4 MiB");
  dom::element doc;
  if (auto err = parser.parse(json.data(), json.size()).get(doc))
    return plain_error(what, std::string("not JSON: ") + simdjson::error_message(err));
  dom::object object;
  if (doc.get_object().get(object)) return plain_error(what, "not a JSON object");
  return object;
}

Result<Descriptor> read_descriptor(dom::element value, const char *what) {
  Descriptor d;
  dom::object object;
  if (value.get_object().get(object)) return plain_error(what, "descriptor is not an object");
  std::string_view text;
  if (object["digest"].get_string().get(text) || !valid_digest(text))
    return plain_error(what, "descriptor has no valid sha256 digest");
  d.digest = std::string(text);
  if (!object["mediaType"].get_string().get(text)) d.media_type = std::string(text);
  int64_t size = 0;
  if (object["size"].get_int64().get(size) || size < 0) return plain_error(what, "descriptor has no valid size");
  d.size = static_cast<uint64_t>(size);
  return d;
}

// A JSON array of strings, or null/absent (empty).
Status read_strings(dom::object object, const char *key, std::vector<std::string> &out, size_t &budget) {
  dom::element value;
  if (object[key].get(value) || value.is_null()) return {};
  dom::array array;
  if (value.get_array().get(array)) return plain_error("image config", std::string(key) + " is not an array of strings");
  for (dom::element item : array) {
    std::string_view text;
    if (item.get_string().get(text) || text.find('\0') != std::string_view::npos)
      return plain_error("image config", std::string(key) + " is not an array of strings");
    if (budget-- == 0) return plain_error("image config", "too many strings in Entrypoint, Cmd and Env");
    out.emplace_back(text);
  }
  return {};
}

std::string_view env_name(std::string_view entry) { return entry.substr(0, entry.find('=')); }

}  // namespace

bool runs_oci_images(std::string_view backend) {
  return backend == "crun" || backend == "runc" || backend == "gvisor";
}

bool is_oci_image(const FunctionSpec &spec) {
  struct stat st{};
  if (stat(spec.image.c_str(), &st) != 0) return false;
  // A regular file is a tar of a layout only where images run: the VM backends boot files
  // of their own (an initramfs, a unikernel).
  if (S_ISREG(st.st_mode)) return runs_oci_images(spec.backend);
  return S_ISDIR(st.st_mode) && stat((spec.image + "/oci-layout").c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

bool valid_digest(std::string_view digest) {
  if (digest.size() != 7 + 64 || digest.substr(0, 7) != "sha256:") return false;
  for (char c : digest.substr(7))
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  return true;
}

std::string_view digest_hex(std::string_view digest) { return digest.substr(7); }

bool is_registry_reference(std::string_view image) {
  return !image.empty() && image[0] != '/' && !image.starts_with("sha256:");
}

namespace {
// The distribution spec's path component: [a-z0-9]+ joined by '.', '_', '__' or '-'s.
bool valid_path_component(std::string_view c) {
  if (c.empty() || c.size() > 128) return false;
  auto alnum = [](char ch) { return (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9'); };
  if (!alnum(c.front()) || !alnum(c.back())) return false;
  for (size_t i = 0; i < c.size(); ++i)
    if (!alnum(c[i]) && c[i] != '.' && c[i] != '_' && c[i] != '-') return false;
  return true;
}

bool valid_tag(std::string_view tag) {
  if (tag.empty() || tag.size() > 128 || tag[0] == '.' || tag[0] == '-') return false;
  for (char ch : tag)
    if (!std::isalnum(static_cast<unsigned char>(ch)) && ch != '_' && ch != '.' && ch != '-') return false;
  return true;
}

bool valid_host(std::string_view host) {
  if (host.empty() || host.size() > 255) return false;
  for (char ch : host)
    if (!std::isalnum(static_cast<unsigned char>(ch)) && ch != '.' && ch != '-' && ch != ':' && ch != '[' && ch != ']')
      return false;
  return true;
}
}  // namespace

Result<Reference> parse_reference(std::string_view image) {
  auto bad = [&](const std::string &why) {
    return plain_error("field 'image'", "'" + std::string(image) + "' is not a registry image reference (" + why + ")");
  };
  if (image.size() > 1024) return bad("longer than 1024 characters");
  Reference ref;
  std::string_view rest = image;
  if (size_t at = rest.find('@'); at != std::string_view::npos) {
    ref.digest = std::string(rest.substr(at + 1));
    if (!valid_digest(ref.digest)) return bad("the digest must be sha256: and 64 lowercase hex digits");
    rest = rest.substr(0, at);
  }
  size_t slash = rest.find('/');
  std::string_view first = rest.substr(0, slash);
  if (slash != std::string_view::npos &&
      (first.find('.') != std::string_view::npos || first.find(':') != std::string_view::npos || first == "localhost")) {
    if (!valid_host(first)) return bad("bad registry host '" + std::string(first) + "'");
    ref.registry = std::string(first);
    rest = rest.substr(slash + 1);
  } else {
    ref.registry = "docker.io";
  }
  size_t last_slash = rest.rfind('/');
  size_t colon = rest.find(':', last_slash == std::string_view::npos ? 0 : last_slash);
  if (colon != std::string_view::npos) {
    std::string_view tag = rest.substr(colon + 1);
    if (!valid_tag(tag)) return bad("bad tag '" + std::string(tag) + "'");
    if (ref.digest.empty()) ref.tag = std::string(tag);
    rest = rest.substr(0, colon);
  }
  for (std::string_view c : split_on(rest, '/'))
    if (!valid_path_component(c)) return bad("bad name component '" + std::string(c) + "'");
  ref.repository = std::string(rest);
  if (ref.registry == "docker.io" && ref.repository.find('/') == std::string::npos)
    ref.repository = "library/" + ref.repository;
  if (ref.tag.empty() && ref.digest.empty()) ref.tag = "latest";
  return ref;
}

std::string Reference::source() const {
  return "docker://" + registry + "/" + repository + (digest.empty() ? ":" + tag : "@" + digest);
}

Result<Descriptor> parse_index(std::string_view json) {
  dom::parser parser;
  auto object = parse_object(parser, json, "index.json");
  if (!object) return object.error();
  dom::array manifests;
  if ((*object)["manifests"].get_array().get(manifests))
    return plain_error("index.json", "has no manifests array");
  std::vector<std::pair<Descriptor, bool>> found;  // descriptor, is linux/amd64
  for (dom::element m : manifests) {
    auto d = read_descriptor(m, "index.json");
    if (!d) return d.error();
    bool known = false;
    for (std::string_view t : kManifestTypes) known |= d->media_type == t;
    if (!known) continue;  // nested indexes, attestations...
    std::string_view os, arch;
    bool amd64 = !m["platform"]["os"].get_string().get(os) && !m["platform"]["architecture"].get_string().get(arch) &&
                 os == "linux" && arch == "amd64";
    found.emplace_back(std::move(*d), amd64);
  }
  if (found.empty()) return plain_error("index.json", "names no image manifest");
  if (found.size() == 1) return found[0].first;
  for (auto &[d, amd64] : found)
    if (amd64) return d;
  return plain_error("index.json", "names several manifests and none for linux/amd64");
}

Result<Manifest> parse_manifest(std::string_view json) {
  dom::parser parser;
  auto object = parse_object(parser, json, "manifest");
  if (!object) return object.error();
  Manifest m;
  dom::element config;
  if ((*object)["config"].get(config)) return plain_error("manifest", "has no config");
  auto c = read_descriptor(config, "manifest config");
  if (!c) return c.error();
  m.config = std::move(*c);
  dom::array layers;
  if ((*object)["layers"].get_array().get(layers)) return plain_error("manifest", "has no layers array");
  for (dom::element l : layers) {
    auto d = read_descriptor(l, "manifest layer");
    if (!d) return d.error();
    if (m.layers.size() == kMaxLayers) return plain_error("manifest", "more than 128 layers");
    m.layers.push_back(std::move(*d));
  }
  return m;
}

Result<ImageConfig> parse_config(std::string_view json) {
  dom::parser parser;
  auto object = parse_object(parser, json, "image config");
  if (!object) return object.error();
  ImageConfig out;
  dom::element value;
  if ((*object)["config"].get(value) || value.is_null()) return out;  // no runtime config at all
  dom::object config;
  if (value.get_object().get(config)) return plain_error("image config", "'config' is not an object");
  size_t budget = kMaxConfigStrings;
  for (auto [key, target] : {std::pair{"Entrypoint", &out.entrypoint}, std::pair{"Cmd", &out.cmd},
                             std::pair{"Env", &out.env}})
    if (Status st = read_strings(config, key, *target, budget); !st.ok()) return st.error();
  std::string_view dir;
  if (!config["WorkingDir"].get_string().get(dir)) out.working_dir = std::string(dir);
  return out;
}

std::vector<std::string_view> split_on(std::string_view text, char separator) {
  std::vector<std::string_view> out;
  size_t at = 0;
  while (true) {
    size_t next = text.find(separator, at);
    if (next == std::string_view::npos) {
      out.push_back(text.substr(at));
      return out;
    }
    out.push_back(text.substr(at, next - at));
    at = next + 1;
  }
}

Result<std::string> clean_entry_path(std::string_view name) {
  if (!name.empty() && name[0] == '/') return plain_error("absolute path", std::string(name));
  std::string out;
  for (std::string_view part : split_on(name, '/')) {
    if (part.empty() || part == ".") continue;
    if (part == "..") return plain_error("path with '..'", std::string(name));
    if (!out.empty()) out += '/';
    out += part;
  }
  if (out.find('\0') != std::string::npos) return plain_error("path with a NUL byte", std::string(name));
  return out;
}

Status check_runs_images(const FunctionSpec &spec) {
  if (!runs_oci_images(spec.backend))
    return plain_error("field 'image'", spec.image + " is an OCI image: it runs on a container backend "
                                        "(annotation faasvisor.backend: crun, runc or gvisor), not on " + spec.backend);
  return {};
}

namespace {
// A variable of the instance's environment as it will be: envVars over the image's Env.
std::optional<std::string> merged_env(const FunctionSpec &spec, const ImageConfig &config, std::string_view name) {
  for (const auto &[n, v] : spec.env_vars)
    if (n == name) return v;
  for (const std::string &e : config.env)
    if (env_name(e) == name && e.size() > name.size()) return e.substr(name.size() + 1);
  return std::nullopt;
}

// The TCP port of of-watchdog's upstream_url ("http://127.0.0.1:5000"); 0 if it names none.
uint16_t upstream_port(std::string_view url) {
  if (size_t scheme = url.find("://"); scheme != std::string_view::npos) url.remove_prefix(scheme + 3);
  url = url.substr(0, url.find('/'));
  size_t colon = url.rfind(':');
  if (colon == std::string_view::npos) return 0;
  std::optional<uint64_t> port = parse_decimal(url.substr(colon + 1));
  return port && *port >= 1 && *port <= 65535 ? static_cast<uint16_t>(*port) : 0;
}

// An image built for OpenFaaS (faas-cli build) runs the watchdog as its entrypoint with
// fprocess naming the function: faasvisor-adapter takes the watchdog's place, so fprocess
// is the command, `mode` (of-watchdog) chooses http or a fork per request (the classic
// watchdog has no `mode`), and upstream_url gives the http server's port (docs/modes.md).
Status apply_watchdog_env(FunctionSpec &spec, const ImageConfig &config) {
  std::optional<std::string> fprocess = merged_env(spec, config, "fprocess");
  if (!fprocess) fprocess = merged_env(spec, config, "function_process");
  if (!fprocess) return {};
  if (!spec.mode_annotated) {
    std::string mode = merged_env(spec, config, "mode").value_or("");
    if (mode == "http") spec.mode = FunctionSpec::Mode::http;
    else if (mode.empty() || mode == "streaming" || mode == "serializing") spec.mode = FunctionSpec::Mode::stdio;
    else
      return plain_error("field 'image'", spec.image + ": of-watchdog mode '" + mode +
                                              "' is not supported (http, streaming and serializing are)");
  }
  if (spec.mode == FunctionSpec::Mode::protocol) return {};
  if (!spec.port_annotated) {
    std::optional<std::string> url = merged_env(spec, config, "upstream_url");
    if (!url) url = merged_env(spec, config, "http_upstream_url");
    if (url && upstream_port(*url) != 0) spec.port = upstream_port(*url);
  }
  if (spec.ready_path.empty()) spec.ready_path = merged_env(spec, config, "ready_path").value_or("");
  if (spec.argv.empty()) {
    auto argv = proc::split_command(*fprocess);
    if (!argv) return plain_error("field 'image'", spec.image + ": fprocess: " + argv.error().message());
    spec.argv = std::move(*argv);
  }
  return {};
}
}  // namespace

Status apply_image(FunctionSpec &spec, const Resolved &image) {
  if (Status st = check_runs_images(spec); !st.ok()) return st;
  spec.rootfs = image.rootfs;
  spec.image_digest = image.digest;
  if (Status st = apply_watchdog_env(spec, image.config); !st.ok()) return st;
  if (spec.argv.empty()) {
    spec.argv = image.config.entrypoint;
    spec.argv.insert(spec.argv.end(), image.config.cmd.begin(), image.config.cmd.end());
  }
  if (spec.argv.empty() || spec.argv[0].empty())
    return plain_error("field 'image'", spec.image + " has no runnable entrypoint (its config has no Entrypoint "
                                        "or Cmd, and the deployment gives no envProcess)");
  spec.image_env.clear();
  for (const std::string &e : image.config.env) {
    if (e.find('=') == std::string::npos) continue;
    bool overridden = false;
    for (const auto &[name, value] : spec.env_vars) overridden |= env_name(e) == name;
    if (!overridden) spec.image_env.push_back(e);
  }
  spec.cwd = image.config.working_dir.empty() ? "/" : image.config.working_dir;
  if (spec.cwd[0] != '/')
    return plain_error("field 'image'", spec.image + ": WorkingDir '" + spec.cwd + "' is not absolute");
  return {};
}

namespace {
void write_strings(JsonWriter &w, std::string_view key, const std::vector<std::string> &items) {
  w.key(key).begin_array();
  for (const std::string &s : items) w.string(s);
  w.end_array();
}

Status read_string_list(dom::object object, const char *key, std::vector<std::string> &out) {
  size_t budget = kMaxConfigStrings;
  return read_strings(object, key, out, budget);
}
}  // namespace

std::string encode_resolved(const Resolved &image) {
  std::string out;
  JsonWriter w(out);
  w.begin_object().field("digest", image.digest).field("rootfs", image.rootfs).field("unpacked", image.unpacked);
  write_strings(w, "Entrypoint", image.config.entrypoint);
  write_strings(w, "Cmd", image.config.cmd);
  write_strings(w, "Env", image.config.env);
  w.field("WorkingDir", image.config.working_dir);
  w.end_object();
  return out + "\n";
}

std::string encode_failure(std::string_view message) {
  std::string out;
  JsonWriter w(out);
  w.begin_object().field("error", message).end_object();
  return out + "\n";
}

Result<Resolved> decode_resolved(std::string_view json) {
  dom::parser parser;
  auto object = parse_object(parser, json, "image helper answer");
  if (!object) return object.error();
  std::string_view text;
  if (!(*object)["error"].get_string().get(text)) return plain_error("image", std::string(text));
  Resolved r;
  if ((*object)["digest"].get_string().get(text) || !valid_digest(text))
    return plain_error("image helper answer", "no digest");
  r.digest = std::string(text);
  if ((*object)["rootfs"].get_string().get(text) || text.empty() || text[0] != '/')
    return plain_error("image helper answer", "no rootfs");
  r.rootfs = std::string(text);
  bool unpacked = false;
  if (!(*object)["unpacked"].get_bool().get(unpacked)) r.unpacked = unpacked;
  for (auto [key, target] : {std::pair{"Entrypoint", &r.config.entrypoint}, std::pair{"Cmd", &r.config.cmd},
                             std::pair{"Env", &r.config.env}})
    if (Status st = read_string_list(*object, key, *target); !st.ok()) return st.error();
  if (!(*object)["WorkingDir"].get_string().get(text)) r.config.working_dir = std::string(text);
  return r;
}

std::string layout_tar_path(const std::string &cache_dir, std::string_view digest) {
  return cache_dir + "/sha256/" + std::string(digest_hex(digest)) + "/layout.tar";
}

}  // namespace faasvisor::image
