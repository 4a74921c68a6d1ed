// OCI image layouts (image-spec v1): the pure part. Parsing index.json, a manifest and an
// image config; checking digests and the paths of layer entries; and turning a resolved
// image into what a container runs (argv, env, cwd), with the deployment's envProcess and
// envVars taking precedence. No I/O here, except is_oci_image's stat.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "model/function_spec.h"
#include "util/result.h"

namespace faasvisor::image {

struct Descriptor {
  std::string media_type;
  std::string digest;  // "sha256:<64 hex>"
  uint64_t size = 0;
};

struct ImageConfig {
  std::vector<std::string> entrypoint;
  std::vector<std::string> cmd;
  std::vector<std::string> env;  // "NAME=value"
  std::string working_dir;
};

struct Manifest {
  Descriptor config;
  std::vector<Descriptor> layers;  // lowest first
};

// What the node learns about an image once it is unpacked (or found in the cache).
struct Resolved {
  std::string digest;  // the manifest's, the cache key
  std::string rootfs;  // absolute path of the shared, read-only root filesystem
  ImageConfig config;
  bool unpacked = false;  // false: found in the cache
};

// Bounds on what an image may ask of the node.
constexpr uint64_t kMaxJsonBlob = 4u << 20;        // index, manifest, config
constexpr size_t kMaxLayers = 128;
constexpr size_t kMaxConfigStrings = 1024;         // Entrypoint + Cmd + Env items
// The helper's answer (digest, rootfs and the config's Entrypoint, Cmd, Env, WorkingDir)
// fits a pipe's default buffer, so the helper never blocks writing it before it exits.
constexpr size_t kMaxAnswer = 60 * 1024;

// Whether the backend runs OCI images (crun, runc, gvisor).
bool runs_oci_images(std::string_view backend);
// A directory holding an `oci-layout` file, or, for a backend that runs OCI images, a
// regular file (a tar of such a directory).
bool is_oci_image(const FunctionSpec &spec);

// A registry image reference, as `docker pull` takes it: [HOST[:PORT]/]NAME[:TAG][@DIGEST].
// A first component with a '.' or ':' (or "localhost") is the registry; otherwise it is
// Docker Hub's (docker.io, "library/" before a one-component name). No tag and no digest
// means :latest. A digest pins the manifest (and wins over a tag).
struct Reference {
  std::string registry;    // "127.0.0.1:5000", "docker.io"
  std::string repository;  // "team/fn", "library/python"
  std::string tag;         // empty when a digest is given
  std::string digest;      // "sha256:..." or empty
  std::string source() const;  // skopeo's source: docker://registry/repository(:tag|@digest)
};
// Whether an image field names a registry image (not a host path, not an uploaded digest).
bool is_registry_reference(std::string_view image);
Result<Reference> parse_reference(std::string_view image);

bool valid_digest(std::string_view digest);         // sha256:<64 lowercase hex>
std::string_view digest_hex(std::string_view digest);  // the part after "sha256:"
// An uploaded (or peer-fetched) image's layout, the tar it came in, kept beside its rootfs
// so that peers can fetch it (GET /system/images/DIGEST serves it): CACHE/sha256/<hex>/layout.tar.
std::string layout_tar_path(const std::string &cache_dir, std::string_view digest);

// The one image manifest an index names (a single manifest, or the linux/amd64 one).
Result<Descriptor> parse_index(std::string_view json);
Result<Manifest> parse_manifest(std::string_view json);
Result<ImageConfig> parse_config(std::string_view json);

// The parts of text between separators, empty ones included ("a::b" -> a, "", b).
std::vector<std::string_view> split_on(std::string_view text, char separator);

// A layer entry's path, made relative to the image root: "./usr/bin/x" -> "usr/bin/x",
// "./" -> "". Absolute paths and any ".." component are refused (the error names why).
Result<std::string> clean_entry_path(std::string_view name);

// An OCI image needs a container backend: fails for the process backend.
Status check_runs_images(const FunctionSpec &spec);

// Fills spec.rootfs, argv, image_env and cwd from a resolved image. envProcess, when given,
// replaces Entrypoint + Cmd; envVars override the image's variables of the same name.
// Fails when nothing is left to run.
Status apply_image(FunctionSpec &spec, const Resolved &image);

// The helper's answer on its stdout, one JSON object; and its parser in the node.
std::string encode_resolved(const Resolved &image);
std::string encode_failure(std::string_view message);
Result<Resolved> decode_resolved(std::string_view json);

}  // namespace faasvisor::image
