#include "proc/cgroup.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>

#include "util/log.h"

// The node's cgroupfs calls on the loop are reads, and the rmdir of what a sandbox killed by
// a signal left (one that exits by itself has removed its directories). mkdir and rmdir of instance cgroups are done by the
// sandbox (src/stem/stem.c): on cgroup v1 hosts either can wait for an RCU grace period
// while other cgroups are created, migrated into or removed, up to ~20-30 ms measured under
// boot churn (bench/policy/replay). io_uring's mkdirat would not help (it runs the same call
// in a kernel worker and the loop still waits for the directory before spawning).

namespace faasvisor::proc {
namespace {

constexpr const char *kCgroupMount = "/sys/fs/cgroup";
constexpr const char *kV1Controllers[] = {"memory", "cpu", "pids"};

bool exists(const std::string &path) {
  struct stat st {};
  return stat(path.c_str(), &st) == 0;
}

Status write_file(const std::string &path, std::string_view value) {
  int fd = open(path.c_str(), O_WRONLY | O_CLOEXEC);
  if (fd < 0) return Error{errno, "open", path};
  ssize_t n;
  // cgroup v1's memory.limit_in_bytes gives up with EINTR when the writer has pending
  // task work (io_uring completions count): retry.
  do {
    n = ::write(fd, value.data(), value.size());
  } while (n < 0 && errno == EINTR);
  int err = errno;
  close(fd);
  if (n < 0) return Error{err, "write", path};
  return {};
}

Status make_dir(const std::string &path) {
  int rc;
  do {
    rc = mkdir(path.c_str(), 0755);
  } while (rc < 0 && errno == EINTR);
  if (rc < 0 && errno != EEXIST) return Error{errno, "mkdir", path};
  return {};
}

// Removes child directories of `dir` (instance cgroups left by a node that died) and `dir`.
void remove_tree(const std::string &dir) {
  if (DIR *d = opendir(dir.c_str())) {
    while (dirent *e = readdir(d)) {
      if (e->d_type == DT_DIR && e->d_name[0] != '.') rmdir((dir + "/" + e->d_name).c_str());
    }
    closedir(d);
  }
  rmdir(dir.c_str());
}

// Cleans node-<pid> subtrees whose node is gone.
void remove_stale_nodes(const std::string &parent) {
  DIR *d = opendir(parent.c_str());
  if (d == nullptr) return;
  while (dirent *e = readdir(d)) {
    int pid = 0;
    if (std::sscanf(e->d_name, "node-%d", &pid) != 1 || pid <= 0) continue;
    if (exists("/proc/" + std::to_string(pid))) continue;
    remove_tree(parent + "/" + e->d_name);
  }
  closedir(d);
}

std::string read_small_file(const std::string &path) {
  int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return {};
  char buf[256];
  ssize_t n = ::read(fd, buf, sizeof buf - 1);
  close(fd);
  return n > 0 ? std::string(buf, static_cast<size_t>(n)) : std::string();
}

}  // namespace

const char *to_string(CgroupMode mode) {
  switch (mode) {
    case CgroupMode::none: return "none";
    case CgroupMode::v1: return "v1";
    case CgroupMode::v2: return "v2";
  }
  return "?";
}

CgroupTree CgroupTree::detect(std::string_view node_name) {
  CgroupTree tree;
  std::string base = kCgroupMount;
  if (exists(base + "/cgroup.controllers")) {
    // Pure v2. Enable the controllers down to our subtree; instances are leaves.
    std::string top = base + "/faasvisor";
    std::string root = top + "/" + std::string(node_name);
    Status st = make_dir(top);
    if (st.ok()) remove_stale_nodes(top);
    if (st.ok()) st = write_file(base + "/cgroup.subtree_control", "+memory +pids +cpu");
    if (st.ok()) st = write_file(top + "/cgroup.subtree_control", "+memory +pids +cpu");
    if (st.ok()) st = make_dir(root);
    if (st.ok()) st = write_file(root + "/cgroup.subtree_control", "+memory +pids +cpu");
    if (!st.ok()) {
      tree.why_none_ = "cgroup v2: " + st.error().message();
      return tree;
    }
    tree.mode_ = CgroupMode::v2;
    tree.roots_.push_back(root);
    tree.controllers_.push_back("unified");
    return tree;
  }
  for (const char *controller : kV1Controllers) {
    std::string top = base + "/" + controller + "/faasvisor";
    std::string root = top + "/" + std::string(node_name);
    Status st = make_dir(top);
    if (st.ok()) remove_stale_nodes(top);
    if (st.ok()) st = make_dir(root);
    if (!st.ok()) {
      tree.why_none_ = std::string("cgroup v1 ") + controller + ": " + st.error().message();
      tree.remove_roots();
      tree.roots_.clear();
      tree.controllers_.clear();
      return tree;
    }
    tree.roots_.push_back(root);
    tree.controllers_.push_back(controller);
  }
  tree.mode_ = CgroupMode::v1;
  return tree;
}

InstanceCgroup CgroupTree::plan(std::string_view instance_name) const {
  InstanceCgroup cg;
  for (size_t i = 0; i < roots_.size(); ++i) {
    cg.dirs.push_back(roots_[i] + "/" + std::string(instance_name));
    cg.controllers.push_back(controllers_[i]);
  }
  return cg;
}

Status CgroupTree::remove(InstanceCgroup &cg) const {
  Status result;
  std::vector<std::string> left;
  for (const std::string &dir : cg.dirs) {
    if (rmdir(dir.c_str()) < 0 && errno != ENOENT) {
      if (result.ok()) result = Error{errno, "rmdir", dir};
      left.push_back(dir);
    }
  }
  cg.dirs = std::move(left);
  return result;
}

Result<uint64_t> CgroupTree::memory_usage(const InstanceCgroup &cg) const {
  if (mode_ == CgroupMode::none || cg.dirs.empty()) return plain_error("no cgroup");
  std::string file = mode_ == CgroupMode::v2 ? cg.dirs[0] + "/memory.current"
                                              : cg.dirs[0] + "/memory.usage_in_bytes";
  std::string text = read_small_file(file);
  if (text.empty()) return Error{errno, "read", file};
  return static_cast<uint64_t>(std::strtoull(text.c_str(), nullptr, 10));
}

Result<uint64_t> CgroupTree::process_pss(const InstanceCgroup &cg) const {
  if (mode_ == CgroupMode::none || cg.dirs.empty()) return plain_error("no cgroup");
  FILE *procs = std::fopen((cg.dirs[0] + "/cgroup.procs").c_str(), "re");
  if (procs == nullptr) return Error{errno, "open", cg.dirs[0] + "/cgroup.procs"};
  uint64_t total_kb = 0;
  int pid = 0;
  bool any = false;
  while (std::fscanf(procs, "%d", &pid) == 1) {
    FILE *rollup = std::fopen(("/proc/" + std::to_string(pid) + "/smaps_rollup").c_str(), "re");
    if (rollup == nullptr) continue;  // exited meanwhile
    char line[256];
    while (std::fgets(line, sizeof line, rollup)) {
      unsigned long long kb = 0;
      if (std::sscanf(line, "Pss: %llu kB", &kb) == 1) {
        total_kb += kb;
        any = true;
        break;
      }
    }
    std::fclose(rollup);
  }
  std::fclose(procs);
  if (!any) return plain_error("no process to measure");
  return total_kb * 1024;
}

uint64_t CgroupTree::oom_kills(const InstanceCgroup &cg) const {
  if (mode_ == CgroupMode::none || cg.dirs.empty()) return 0;
  // v1: memory.oom_control has "oom_kill N"; v2: memory.events has the same line.
  std::string file = cg.dirs[0] + (mode_ == CgroupMode::v2 ? "/memory.events" : "/memory.oom_control");
  std::string text = read_small_file(file);
  size_t at = text.find("oom_kill ");
  if (at == std::string::npos) return 0;
  return std::strtoull(text.c_str() + at + 9, nullptr, 10);
}

void CgroupTree::remove_roots() const {
  for (const std::string &root : roots_) {
    remove_tree(root);
    std::string top = root.substr(0, root.rfind('/'));
    rmdir(top.c_str());  // only succeeds once no other node uses it
  }
}

}  // namespace faasvisor::proc
