#include "proc/cgroup.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <signal.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <vector>

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

// Removes child directories of `dir` and `dir`, for a clean shutdown (the instances' own
// sandboxes have removed theirs; this catches what a killed one left).
void remove_tree(const std::string &dir) {
  if (DIR *d = opendir(dir.c_str())) {
    while (dirent *e = readdir(d)) {
      if (e->d_type == DT_DIR && e->d_name[0] != '.') rmdir((dir + "/" + e->d_name).c_str());
    }
    closedir(d);
  }
  rmdir(dir.c_str());
}

// Every directory of the subtree at `dir`, deepest first.
void collect_dirs(const std::string &dir, std::vector<std::string> &out, int depth = 0) {
  if (depth > 16) return;  // cgroup trees are shallow; a deeper one is not ours to walk
  if (DIR *d = opendir(dir.c_str())) {
    while (dirent *e = readdir(d))
      if (e->d_type == DT_DIR && e->d_name[0] != '.') collect_dirs(dir + "/" + e->d_name, out, depth + 1);
    closedir(d);
  }
  out.push_back(dir);
}

// SIGKILLs every process listed in dir/cgroup.procs; returns how many were listed.
uint32_t kill_members(const std::string &dir, uint32_t &killed) {
  FILE *f = std::fopen((dir + "/cgroup.procs").c_str(), "re");
  if (f == nullptr) return 0;
  uint32_t listed = 0;
  int pid = 0;
  while (std::fscanf(f, "%d", &pid) == 1) {
    ++listed;
    // Through a pidfd, so the signal reaches the process listed, not a successor of its pid.
    int fd = static_cast<int>(syscall(SYS_pidfd_open, pid, 0));
    if (fd < 0) continue;
    if (syscall(SYS_pidfd_send_signal, fd, SIGKILL, nullptr, 0) == 0) ++killed;
    close(fd);
  }
  std::fclose(f);
  return listed;
}

// `waited_ms` is shared by every dead node of one sweep: a process that cannot die (stuck
// in the kernel) delays the start by wait_ms once, not once per node.
void sweep_one(const std::string &node_dir, SweepReport &report, uint64_t wait_ms, uint64_t &waited_ms) {
  std::vector<std::string> dirs;
  collect_dirs(node_dir, dirs);
  // cgroup v2 kills a whole subtree in one write where the kernel has cgroup.kill (5.14+).
  if (exists(node_dir + "/cgroup.kill")) (void)write_file(node_dir + "/cgroup.kill", "1");
  timespec pause{0, 10'000'000};
  // Kill until nothing is listed: a process may fork between the read and the kill.
  for (;;) {
    uint32_t listed = 0;
    for (const std::string &d : dirs) listed += kill_members(d, report.killed);
    if (listed == 0 || waited_ms >= wait_ms) break;
    nanosleep(&pause, nullptr);
    waited_ms += 10;
  }
  for (const std::string &d : dirs) {
    // rmdir is EBUSY for a moment after the last task left.
    while (rmdir(d.c_str()) != 0 && errno == EBUSY && waited_ms < wait_ms) {
      nanosleep(&pause, nullptr);
      waited_ms += 10;
    }
    if (exists(d)) ++report.left;
    else ++report.removed;
  }
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

namespace {
// node-<pid> names hold pids of the initial pid namespace. A node in a nested one sees other
// pids (or none) under those numbers, so it cannot tell a dead node from a live one.
bool in_nested_pid_namespace() {
  static const bool nested = [] {
    FILE *f = std::fopen("/proc/self/status", "re");
    if (f == nullptr) return true;  // cannot tell: assume the worst
    char line[256];
    int levels = 0;
    while (std::fgets(line, sizeof line, f)) {
      if (std::strncmp(line, "NSpid:", 6) != 0) continue;
      for (char *tok = std::strtok(line + 6, " \t\n"); tok != nullptr; tok = std::strtok(nullptr, " \t\n")) ++levels;
    }
    std::fclose(f);
    if (levels != 1) return true;
    // A nested namespace with its own /proc shows one level too; only the initial one has
    // the kernel's threads, kthreadd at pid 2.
    f = std::fopen("/proc/2/comm", "re");
    if (f == nullptr) return true;
    char comm[32] = {};
    bool kthreadd = std::fgets(comm, sizeof comm, f) != nullptr && std::strncmp(comm, "kthreadd", 8) == 0;
    std::fclose(f);
    return !kthreadd;
  }();
  return nested;
}
}  // namespace

// Every process with a node holds a shared lock on /run/faasvisor/live/<pid> from its first
// node on (the descriptor is never closed: the kernel drops the lock when the process ends).
// A program that embeds the node has any name, so its comm cannot tell the sweeps of other
// nodes that it is alive; the lock can.
namespace {
constexpr const char *kLiveDir = "/run/faasvisor/live";

void hold_liveness_lock() {
  static const bool held = [] {
    mkdir("/run/faasvisor", 0711);
    mkdir(kLiveDir, 0755);
    std::string path = std::string(kLiveDir) + "/" + std::to_string(getpid());
    int fd = open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0 || flock(fd, LOCK_SH | LOCK_NB) != 0) {
      FV_WARN("cannot hold %s (%s): other nodes judge this process by its name only", path.c_str(), std::strerror(errno));
      if (fd >= 0) close(fd);
      return false;
    }
    return true;
  }();
  (void)held;
}
}  // namespace

bool node_alive(int pid) {
  if (in_nested_pid_namespace()) return true;  // never sweep what we cannot judge
  std::string lock = std::string(kLiveDir) + "/" + std::to_string(pid);
  int lock_fd = open(lock.c_str(), O_RDONLY | O_CLOEXEC);
  if (lock_fd >= 0) {
    bool locked = flock(lock_fd, LOCK_EX | LOCK_NB) != 0 && errno == EWOULDBLOCK;
    if (!locked) unlink(lock.c_str());  // its process is gone (or the pid is another's now)
    close(lock_fd);
    return locked;
  }
  // No lock file: a node from before the lock, judged by its name.
  std::string comm = "/proc/" + std::to_string(pid) + "/comm";
  FILE *f = std::fopen(comm.c_str(), "re");
  if (f == nullptr) return false;
  char name[32] = {};
  bool alive = std::fgets(name, sizeof name, f) != nullptr && std::strncmp(name, "faasvisor", 9) == 0;
  std::fclose(f);
  if (!alive) return false;
  // A zombie (SIGKILLed, not yet reaped) is dead: its instances are ours to clean.
  f = std::fopen(("/proc/" + std::to_string(pid) + "/stat").c_str(), "re");
  if (f == nullptr) return false;
  char stat[512] = {};
  size_t n = std::fread(stat, 1, sizeof stat - 1, f);
  std::fclose(f);
  const char *paren = std::strrchr(stat, ')');
  if (n == 0 || paren == nullptr || paren[1] == '\0') return true;
  return paren[2] != 'Z' && paren[2] != 'X';
}

void sweep_dead_nodes(const std::string &parent, SweepReport &report, uint64_t wait_ms) {
  DIR *d = opendir(parent.c_str());
  if (d == nullptr) return;
  std::vector<std::string> dead;
  while (dirent *e = readdir(d)) {
    int pid = 0;
    if (std::sscanf(e->d_name, "node-%d", &pid) != 1 || pid <= 0) continue;
    if (pid == getpid() || node_alive(pid)) continue;
    dead.push_back(parent + "/" + e->d_name);
  }
  closedir(d);
  uint64_t waited_ms = 0;
  for (const std::string &node : dead) {
    ++report.nodes;
    sweep_one(node, report, wait_ms, waited_ms);
  }
}

const char *to_string(CgroupMode mode) {
  switch (mode) {
    case CgroupMode::none: return "none";
    case CgroupMode::v1: return "v1";
    case CgroupMode::v2: return "v2";
  }
  return "?";
}

CgroupTree CgroupTree::detect(std::string_view node_name) {
  hold_liveness_lock();  // before the sweep: a node sweeping this process's pid must see it alive
  CgroupTree tree;
  tree.node_name_ = std::string(node_name);
  std::string base = kCgroupMount;
  if (exists(base + "/cgroup.controllers")) {
    // Pure v2. Enable the controllers down to our subtree; instances are leaves.
    std::string top = base + "/faasvisor";
    std::string root = top + "/" + std::string(node_name);
    Status st = make_dir(top);
    if (st.ok()) sweep_dead_nodes(top, tree.swept_);
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
    tree.log_sweep();
    return tree;
  }
  for (const char *controller : kV1Controllers) {
    std::string top = base + "/" + controller + "/faasvisor";
    std::string root = top + "/" + std::string(node_name);
    Status st = make_dir(top);
    if (st.ok()) sweep_dead_nodes(top, tree.swept_);
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
  tree.log_sweep();
  return tree;
}

void CgroupTree::log_sweep() const {
  if (swept_.nodes == 0) return;
  FV_INFO("swept %u dead nodes' cgroups: %u processes killed, %u directories removed, %u still busy",
          swept_.nodes, swept_.killed, swept_.removed, swept_.left);
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

MemoryFiles CgroupTree::memory_files(const InstanceCgroup &cg, bool pss) const {
  if (mode_ == CgroupMode::none || cg.dirs.empty()) return {};
  MemoryFiles files;
  if (pss) files.procs = cg.dirs[0] + "/cgroup.procs";
  files.usage = cg.dirs[0] + (mode_ == CgroupMode::v2 ? "/memory.current" : "/memory.usage_in_bytes");
  return files;
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
