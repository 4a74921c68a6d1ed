#include "image/rootfs.h"

#include <fcntl.h>
#include <linux/openat2.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "image/layout.h"

namespace faasvisor::image {
namespace {

constexpr const char *kDefaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

// stat of `path` inside rootfs; false if it does not resolve there.
bool stat_in(const std::string &rootfs, const std::string &path, struct stat *st) {
  int root = open(rootfs.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC);
  if (root < 0) return false;
  open_how how{};
  how.flags = O_PATH | O_CLOEXEC;
  how.resolve = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS;
  int fd = static_cast<int>(syscall(SYS_openat2, root, path.c_str(), &how, sizeof how));
  close(root);
  if (fd < 0) return false;
  bool ok = fstat(fd, st) == 0;
  close(fd);
  return ok;
}

bool executable_in(const std::string &rootfs, const std::string &path) {
  struct stat st{};
  return stat_in(rootfs, path, &st) && S_ISREG(st.st_mode) && (st.st_mode & 0111) != 0;
}

}  // namespace

bool is_directory_in(const std::string &rootfs, const std::string &dir) {
  struct stat st{};
  return stat_in(rootfs, dir, &st) && S_ISDIR(st.st_mode);
}

Result<std::string> find_command(const std::string &rootfs, const std::string &command,
                                 const std::vector<std::string> &env) {
  if (command.empty()) return plain_error("command", "empty");
  if (command.find('/') != std::string::npos) {
    if (command[0] != '/') return plain_error("command", "'" + command + "' must be absolute or a bare name looked up in PATH");
    if (!executable_in(rootfs, command)) return plain_error("command", command + " is not an executable file in the image");
    return command;
  }
  std::string path = kDefaultPath;
  for (const std::string &e : env)
    if (e.rfind("PATH=", 0) == 0) path = e.substr(5);
  for (std::string_view dir : split_on(path, ':')) {
    if (dir.empty() || dir[0] != '/') continue;
    std::string candidate = std::string(dir) + "/" + command;
    if (executable_in(rootfs, candidate)) return candidate;
  }
  return plain_error("command", "'" + command + "' is not an executable in the image's PATH (" + path + ")");
}

}  // namespace faasvisor::image
