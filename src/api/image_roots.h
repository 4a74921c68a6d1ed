// Image roots: the host directories under which a deployment may name its image (a function
// directory, a rootfs, an OCI layout or archive, a VM image) and, for the process backend,
// the program its envProcess runs. Everything is compared after realpath(), so ".." and
// symbolic links cannot lead out of a root. docs/security.md.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "util/result.h"

namespace faasvisor::api {

class ImageRoots {
 public:
  ImageRoots() = default;
  // Resolves each root with realpath(); a root that does not exist or is not a directory is
  // an error (a typo must not silently refuse every deployment).
  static Result<ImageRoots> create(const std::vector<std::string> &roots);

  const std::vector<std::string> &roots() const { return roots_; }
  // The resolved path of `path` if it lies in a root (or is one); an error naming the roots
  // otherwise, also when it does not exist (the answer must not tell which paths exist).
  Result<std::string> check(const std::string &path) const;
  // "the image roots are /a, /b" or "no --image-root is configured": for error messages.
  std::string describe() const;

 private:
  std::vector<std::string> roots_;  // resolved, no trailing slash (but "/" itself)
};

// True if the resolved path `path` is `dir` or lies below it (both resolved).
bool path_within(std::string_view path, std::string_view dir);

}  // namespace faasvisor::api
