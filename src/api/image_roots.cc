#include "api/image_roots.h"

#include <sys/stat.h>

#include <climits>
#include <cstdlib>

namespace faasvisor::api {
namespace {

Result<std::string> resolve(const std::string &path) {
  char buf[PATH_MAX];
  if (realpath(path.c_str(), buf) == nullptr) return errno_error("realpath");
  return std::string(buf);
}

}  // namespace

bool path_within(std::string_view path, std::string_view dir) {
  if (dir == "/") return !path.empty() && path[0] == '/';
  if (!path.starts_with(dir)) return false;
  return path.size() == dir.size() || path[dir.size()] == '/';
}

Result<ImageRoots> ImageRoots::create(const std::vector<std::string> &roots) {
  ImageRoots out;
  for (const std::string &root : roots) {
    if (root.empty() || root[0] != '/') return plain_error("--image-root", "wants an absolute directory, not '" + root + "'");
    auto resolved = resolve(root);
    struct stat st {};
    if (!resolved || stat(resolved->c_str(), &st) < 0 || !S_ISDIR(st.st_mode))
      return plain_error("--image-root", "'" + root + "' is not a directory");
    out.roots_.push_back(std::move(*resolved));
  }
  return out;
}

std::string ImageRoots::describe() const {
  if (roots_.empty()) return "no --image-root is configured on this node";
  std::string out = roots_.size() == 1 ? "the image root is " : "the image roots are ";
  for (size_t i = 0; i < roots_.size(); ++i) {
    if (i > 0) out += ", ";
    out += roots_[i];
  }
  return out;
}

Result<std::string> ImageRoots::check(const std::string &path) const {
  auto resolved = resolve(path);
  // A path that does not exist is judged by its deepest existing ancestor: under a root the
  // deployment is told it does not exist (existence there is no secret); elsewhere it is
  // refused like any other path.
  std::string ancestor = path;
  while (!resolved && ancestor.size() > 1) {
    size_t slash = ancestor.find_last_of('/');
    ancestor.resize(slash == 0 ? 1 : slash);
    resolved = resolve(ancestor);
  }
  if (resolved) {
    for (const std::string &root : roots_)
      if (path_within(*resolved, root)) return ancestor == path ? std::move(*resolved) : path;
  }
  return plain_error("outside the image roots", "'" + path + "' is not under an image root (" + describe() + ")");
}

}  // namespace faasvisor::api
