#include "backend/oci.h"

#include <dirent.h>
#include <fcntl.h>
#include <ftw.h>
#include <linux/magic.h>
#include <linux/sched.h>
#include <signal.h>
#include <spawn.h>
#include <pthread.h>
#include <sched.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/sendfile.h>
#include <sys/stat.h>
#include <sys/utsname.h>
#include <sys/statfs.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>

#include "image/rootfs.h"
#include "backend/environment.h"
#include "proc/spawn.h"
#include "util/log.h"

namespace faasvisor::backend {
namespace {

constexpr const char *kUnshare = "/usr/bin/unshare";
constexpr uint64_t kCpuPeriodUs = 100'000;

void append_json_string(std::string &out, std::string_view s) {
  out += '"';
  for (char ch : s) {
    auto c = static_cast<unsigned char>(ch);
    switch (ch) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      default:
        if (c < 0x20) {
          char buf[8];
          std::snprintf(buf, sizeof buf, "\\u%04x", c);
          out += buf;
        } else {
          out += ch;
        }
    }
  }
  out += '"';
}

std::string json_string(std::string_view s) {
  std::string out;
  append_json_string(out, s);
  return out;
}

std::string json_string_array(const std::vector<std::string> &items) {
  std::string out = "[";
  for (size_t i = 0; i < items.size(); ++i) {
    if (i > 0) out += ',';
    append_json_string(out, items[i]);
  }
  return out + "]";
}

bool is_fs(const char *path, long magic) {
  struct statfs st{};
  return statfs(path, &st) == 0 && static_cast<long>(st.f_type) == magic;
}

// Hybrid layout: v1 controllers under a tmpfs, an (empty) cgroup2 at /sys/fs/cgroup/unified.
bool hybrid_cgroups() {
  return !is_fs("/sys/fs/cgroup", CGROUP2_SUPER_MAGIC) && is_fs("/sys/fs/cgroup/unified", CGROUP2_SUPER_MAGIC);
}

// Every cgroup hierarchy a runtime may use: each v1 controller directory and, on hybrid
// hosts, the controller-less unified one (runc makes its cgroups there too), or the single
// v2 root.
std::vector<std::string> cgroup_hierarchies(proc::CgroupMode mode) {
  std::vector<std::string> out;
  if (mode == proc::CgroupMode::v2) out.emplace_back("/sys/fs/cgroup");
  if (mode != proc::CgroupMode::v1) return out;
  DIR *d = opendir("/sys/fs/cgroup");
  if (d == nullptr) return out;
  while (dirent *e = readdir(d)) {
    if (e->d_name[0] == '.') continue;
    out.push_back(std::string("/sys/fs/cgroup/") + e->d_name);
  }
  closedir(d);
  return out;
}

using proc::SpawnSetup;

std::vector<char *> c_argv(std::vector<std::string> &args) {
  std::vector<char *> out;
  for (std::string &a : args) out.push_back(a.data());
  out.push_back(nullptr);
  return out;
}

char *const kEnv[] = {const_cast<char *>("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"),
                      nullptr};

// Runs a short helper command to completion, output to the node's stderr. Blocking: used
// only at start-up.
Status run_blocking(std::vector<std::string> args) {
  SpawnSetup setup;
  int devnull = open("/dev/null", O_RDONLY | O_CLOEXEC);
  if (devnull >= 0) posix_spawn_file_actions_adddup2(&setup.actions, devnull, 0);
  std::vector<char *> argv = c_argv(args);
  pid_t pid = -1;
  int rc = posix_spawn(&pid, argv[0], &setup.actions, &setup.attr, argv.data(), kEnv);
  if (devnull >= 0) close(devnull);
  if (rc != 0) return Error{rc, "posix_spawn", args[0]};
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
    return plain_error("helper command failed", args[0] + " " + args[1] + "... (wait status " + std::to_string(status) + ")");
  return {};
}

Status make_dir(const std::string &path, mode_t mode) {
  if (mkdir(path.c_str(), mode) < 0 && errno != EEXIST) return Error{errno, "mkdir", path};
  return {};
}

Status write_file(const std::string &path, std::string_view text) {
  int fd = open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) return Error{errno, "open", path};
  ssize_t n = ::write(fd, text.data(), text.size());
  int err = errno;
  close(fd);
  if (n != static_cast<ssize_t>(text.size())) return Error{n < 0 ? err : EIO, "write", path};
  return {};
}

// The container's user (make_oci_config's process.user) owns its secret files.
constexpr uid_t kContainerUid = 65534;
constexpr gid_t kContainerGid = 65534;

// An instance's secrets as files DIR/NAME, 0400, owned by the container's user, in its
// bundle (on /run's tmpfs, like config.json: the writes wait on no disk). The directory is
// bound read-only on /var/openfaas/secrets and removed with the bundle.
Status write_secret_files(const std::string &dir, const std::vector<secrets::SecretValue> &values) {
  if (Status st = make_dir(dir, 0755); !st.ok()) return st;
  for (const secrets::SecretValue &v : values) {
    std::string path = dir + "/" + v.name;  // a plain file name (fv_secret_name_valid)
    int fd = open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0400);
    if (fd < 0) return Error{errno, "create a secret file", v.name};
    ssize_t n = v.value.empty() ? 0 : ::write(fd, v.value.data(), v.value.size());
    int err = errno;
    bool owned = fchown(fd, kContainerUid, kContainerGid) == 0;
    if (!owned) err = errno;
    close(fd);
    if (n != static_cast<ssize_t>(v.value.size()) || !owned) return Error{n < 0 || !owned ? err : EIO, "write a secret file", v.name};
  }
  return {};
}

void remove_secret_files(const std::string &dir) {
  DIR *d = opendir(dir.c_str());
  if (d == nullptr) return;
  while (dirent *e = readdir(d))
    if (e->d_name[0] != '.') unlinkat(dirfd(d), e->d_name, 0);
  closedir(d);
  rmdir(dir.c_str());
}

// What a runtime's child needs between clone and exec; it lives on the parent's stack,
// which the child shares (CLONE_VM) while the parent waits (CLONE_VFORK).
struct ExecPlan {
  char *const *argv;
  int exec_fd;   // a sealed copy of the runtime (execveat), or -1: argv[0] by path
  int mntns_fd;  // a mount namespace to enter first, or -1
  int fds[3];    // stdin, stdout, stderr
};

int exec_runtime(void *arg) {
  const auto *plan = static_cast<const ExecPlan *>(arg);
  // Its own signal dispositions (no CLONE_SIGHAND): the node ignores SIGPIPE.
  for (int sig : {SIGINT, SIGTERM, SIGPIPE, SIGCHLD, SIGHUP}) signal(sig, SIG_DFL);
  const char *failed = nullptr;
  if (plan->mntns_fd >= 0 && setns(plan->mntns_fd, CLONE_NEWNS) < 0) failed = "setns";
  for (int i = 0; i < 3 && failed == nullptr; ++i)
    if (dup2(plan->fds[i], i) < 0) failed = "dup2";
  if (failed == nullptr) {
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, nullptr);
    if (plan->exec_fd >= 0) syscall(SYS_execveat, plan->exec_fd, "", plan->argv, kEnv, AT_EMPTY_PATH);
    else execve(plan->argv[0], plan->argv, kEnv);
    failed = "exec";
  }
  char msg[96];
  int n = std::snprintf(msg, sizeof msg, "faasvisord: %s %s: %s\n", failed, plan->argv[0], strerrorname_np(errno));
  if (n > 0 && ::write(plan->fds[2], msg, static_cast<size_t>(n)) < 0) _exit(127);
  _exit(127);
}

// Starts a runtime like posix_spawn does (a vfork: no page tables copied, the loop waits
// only for the exec), but the child may first enter a mount namespace, which posix_spawn
// cannot do: on hybrid hosts crun runs where /sys/fs/cgroup/unified is gone, without an
// nsenter(1) exec in between. All signals stay blocked in the parent until the child has
// exec'd, so no handler of the node's runs on the child's stack.
Result<proc::Child> spawn_runtime(char *const *argv, int exec_fd, int mntns_fd, int in_fd, int out_fd, int err_fd) {
  constexpr size_t kStackBytes = 64 * 1024;
  alignas(64) static char stack[kStackBytes];  // one thread, and the parent waits: one stack
  ExecPlan plan{argv, exec_fd, mntns_fd, {in_fd, out_fd, err_fd}};
  sigset_t all, old;
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &old);
  int pidfd = -1;
  pid_t pid = clone(exec_runtime, stack + kStackBytes, CLONE_VM | CLONE_VFORK | CLONE_PIDFD | SIGCHLD, &plan, &pidfd);
  int err = errno;
  pthread_sigmask(SIG_SETMASK, &old, nullptr);
  if (pid < 0) return errno_error("clone", err);
  return proc::Child(pid, pidfd);
}

// A sealed in-memory copy of a runtime binary, made once. crun and runc protect the host's
// binary from a container (CVE-2019-5736) by re-executing themselves from a read-only
// copy on every start unless /proc/self/exe already is a fully sealed memfd, which cannot be
// written at all: started from this copy they skip that (about 3-5 ms of a crun start).
int sealed_copy(const std::string &path) {
  int src = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (src < 0) return -1;
  int fd = memfd_create("runtime", MFD_CLOEXEC | MFD_ALLOW_SEALING);
  struct stat st{};
  bool ok = fd >= 0 && fstat(src, &st) == 0;
  off_t done = 0;
  while (ok && done < st.st_size) {
    ssize_t n = sendfile(fd, src, nullptr, static_cast<size_t>(st.st_size - done));
    ok = n > 0;
    done += n > 0 ? n : 0;
  }
  close(src);
  if (ok) ok = fcntl(fd, F_ADD_SEALS, F_SEAL_SEAL | F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE) == 0;
  if (!ok && fd >= 0) close(fd);
  return ok ? fd : -1;
}

[[noreturn]] void child_fail(int err_fd, const char *what) {
  char msg[160];
  int n = std::snprintf(msg, sizeof msg, "faasvisord: %s: %s\n", what, strerrorname_np(errno));
  if (n > 0 && ::write(err_fd, msg, static_cast<size_t>(n)) < 0) _exit(127);
  _exit(127);
}

// `runsc run` exits without waiting for its sandbox and gofer (they die after it, by
// PDEATHSIG), so they would be orphans, re-parented to init or to a subreaper. Run as pid 1
// of a new pid namespace instead, with its own /proc: when it exits the kernel kills and
// reaps everything in the namespace before its parent, the node, sees the exit. That needs
// a fork of the node (clone3 with new namespaces; posix_spawn cannot unshare): about a
// millisecond of page-table copying, small beside gVisor's ~150 ms start. The child makes
// only async-signal-safe calls. A pid namespace's init ignores SIGTERM without a handler,
// hence SIGKILL as this runtime's kill signal.
Result<proc::Child> spawn_pid_namespace(std::vector<char *> &argv, int in_fd, int out_fd, int err_fd) {
  int pidfd = -1;
  clone_args args{};
  args.flags = CLONE_PIDFD | CLONE_NEWPID | CLONE_NEWNS;
  args.pidfd = reinterpret_cast<uint64_t>(&pidfd);
  args.exit_signal = SIGCHLD;
  long pid = syscall(SYS_clone3, &args, sizeof args);
  if (pid < 0) return errno_error("clone3");
  if (pid == 0) {
    if (mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) < 0) child_fail(err_fd, "make mounts private");
    if (mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, nullptr) < 0) child_fail(err_fd, "mount /proc");
    if (dup2(in_fd, 0) < 0 || dup2(out_fd, 1) < 0 || dup2(err_fd, 2) < 0) child_fail(err_fd, "dup2");
    for (int sig : {SIGINT, SIGTERM, SIGPIPE, SIGCHLD, SIGHUP}) signal(sig, SIG_DFL);
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, nullptr);
    execve(argv[0], argv.data(), kEnv);
    child_fail(2, "exec");
  }
  return proc::Child(static_cast<pid_t>(pid), pidfd);
}

int remove_entry(const char *path, const struct stat *, int type, struct FTW *) {
  if (type == FTW_DP) rmdir(path);
  else unlink(path);
  return 0;
}

// A node that was SIGKILLed (or crashed) leaves its state dir, and for crun on hybrid hosts
// two mounts (the state dir bound on itself and the pinned mount namespace). Each backend
// removes its own runtime's part for nodes whose process is gone; the last one removes the
// node's directory. Their containers ended with them: a runtime's stdin closes with the node.
void sweep_dead_nodes(const char *runtime) {
  DIR *d = opendir("/run/faasvisor");
  if (d == nullptr) return;
  while (dirent *e = readdir(d)) {
    if (std::strncmp(e->d_name, "node-", 5) != 0) continue;
    pid_t pid = static_cast<pid_t>(std::strtol(e->d_name + 5, nullptr, 10));
    if (pid <= 0 || pid == getpid() || proc::node_alive(pid)) continue;
    std::string node = std::string("/run/faasvisor/") + e->d_name;
    std::string dir = node + "/" + runtime;
    umount2((dir + "/mntns").c_str(), MNT_DETACH);
    umount2(dir.c_str(), MNT_DETACH);
    nftw(dir.c_str(), remove_entry, 8, FTW_DEPTH | FTW_PHYS | FTW_MOUNT);
    if (rmdir(node.c_str()) == 0) FV_INFO("removed the state of dead node %s", e->d_name);
  }
  closedir(d);
}

// On v1 the runtime also makes /faasvisor/node-<pid> in hierarchies the node's cgroup tree
// does not use (blkio, devices, freezer...), removed at a clean shutdown. For nodes that died
// without one: their empty directories there (and any container cgroup left in them). The
// tree's own hierarchies are swept by proc::CgroupTree.
void sweep_dead_node_cgroups(const std::vector<std::string> &hierarchies, const std::vector<std::string> &tree_roots) {
  for (const std::string &hierarchy : hierarchies) {
    bool ours = false;
    for (const std::string &root : tree_roots) ours |= root.rfind(hierarchy + "/", 0) == 0;
    if (ours) continue;
    proc::SweepReport report;
    proc::sweep_dead_nodes(hierarchy + "/faasvisor", report);
  }
}

}  // namespace

const char *to_string(OciRuntime runtime) {
  switch (runtime) {
    case OciRuntime::crun: return "crun";
    case OciRuntime::runc: return "runc";
    case OciRuntime::gvisor: return "gvisor";
  }
  return "?";
}

namespace {
// A plain rootfs directory is its own root; an OCI image's is its unpacked rootfs.
const std::string &rootfs_of(const FunctionSpec &spec) { return spec.rootfs.empty() ? spec.image : spec.rootfs; }
}  // namespace

std::string make_oci_config(const FunctionSpec &spec, std::string_view instance_name,
                            const OciConfigInput &input) {
  std::vector<std::string> env = instance_environment(spec, instance_name);
  // /tmp is a tmpfs charged to the container's memory cgroup; a quarter of the limit, as
  // for the process backend.
  uint64_t tmp_bytes = spec.memory_bytes / 4;

  std::string j;
  j += "{\"ociVersion\":\"1.0.2\",";
  j += "\"process\":{\"terminal\":false,\"user\":{\"uid\":65534,\"gid\":65534},";
  j += "\"args\":" + json_string_array(instance_argv(spec, kAdapterInContainer)) + ",";
  j += "\"env\":" + json_string_array(env) + ",";
  j += "\"cwd\":" + json_string(spec.cwd.empty() ? "/" : spec.cwd) + ",\"noNewPrivileges\":true,";
  j += "\"capabilities\":{\"bounding\":[],\"effective\":[],\"inheritable\":[],\"permitted\":[],\"ambient\":[]},";
  j += "\"rlimits\":[{\"type\":\"RLIMIT_NOFILE\",\"hard\":1024,\"soft\":1024}]},";
  j += "\"root\":{\"path\":" + json_string(input.rootfs) + ",\"readonly\":true},";
  j += "\"hostname\":" + json_string(input.hostname) + ",";
  j += "\"mounts\":[";
  j += "{\"destination\":\"/proc\",\"type\":\"proc\",\"source\":\"proc\",\"options\":[\"nosuid\",\"noexec\",\"nodev\"]},";
  // A tmpfs /dev: the runtime adds the default devices (null, zero, full, random, urandom, tty).
  j += "{\"destination\":\"/dev\",\"type\":\"tmpfs\",\"source\":\"tmpfs\",\"options\":[\"nosuid\",\"strictatime\",\"mode=755\",\"size=64k\"]},";
  j += "{\"destination\":\"/tmp\",\"type\":\"tmpfs\",\"source\":\"tmpfs\",\"options\":[\"nosuid\",\"nodev\",\"mode=1777\",\"size=" +
       std::to_string(tmp_bytes) + "\"]}";
  if (spec.mode != FunctionSpec::Mode::protocol)
    j += ",{\"destination\":" + json_string(kAdapterInContainer) + ",\"type\":\"bind\",\"source\":" +
         json_string(input.adapter_path) + ",\"options\":[\"bind\",\"ro\",\"nosuid\",\"nodev\"]}";
  if (!input.secrets_dir.empty())
    j += ",{\"destination\":\"/var/openfaas/secrets\",\"type\":\"bind\",\"source\":" + json_string(input.secrets_dir) +
         ",\"options\":[\"rbind\",\"ro\",\"nosuid\",\"nodev\",\"noexec\"]}";
  if (!input.resolv_conf.empty())
    j += ",{\"destination\":\"/etc/resolv.conf\",\"type\":\"bind\",\"source\":" + json_string(input.resolv_conf) +
         ",\"options\":[\"bind\",\"ro\",\"nosuid\",\"nodev\",\"noexec\"]}";
  j += "],";
  j += "\"linux\":{";
  if (!input.cgroups_path.empty()) j += "\"cgroupsPath\":" + json_string(input.cgroups_path) + ",";
  j += "\"resources\":{\"devices\":[{\"allow\":false,\"access\":\"rwm\"}]";
  if (input.limits) {
    j += ",\"memory\":{\"limit\":" + std::to_string(spec.memory_bytes) + "}";
    if (spec.cpu_millis > 0)
      j += ",\"cpu\":{\"quota\":" + std::to_string(uint64_t{spec.cpu_millis} * kCpuPeriodUs / 1000) +
           ",\"period\":" + std::to_string(kCpuPeriodUs) + "}";
    if (spec.pids_max > 0) j += ",\"pids\":{\"limit\":" + std::to_string(spec.pids_max) + "}";
  }
  j += "},";
  // No path: new, empty namespaces; the network one has only a loopback device, unless the
  // function has egress: then the node's prepared namespace (net/network.h).
  std::string network = "{\"type\":\"network\"}";
  if (!input.netns_path.empty()) network = "{\"type\":\"network\",\"path\":" + json_string(input.netns_path) + "}";
  j += "\"namespaces\":[{\"type\":\"pid\"}," + network + ",{\"type\":\"ipc\"},{\"type\":\"uts\"},{\"type\":\"mount\"}],";
  j += "\"maskedPaths\":[\"/proc/acpi\",\"/proc/kcore\",\"/proc/keys\",\"/proc/latency_stats\",\"/proc/timer_list\","
       "\"/proc/sched_debug\",\"/proc/scsi\",\"/sys/firmware\"],";
  j += "\"readonlyPaths\":[\"/proc/bus\",\"/proc/fs\",\"/proc/irq\",\"/proc/sys\",\"/proc/sysrq-trigger\"],";
  j += "\"seccomp\":" + default_seccomp_profile();
  j += "}}";
  return j;
}

OciBackend::OciBackend(const proc::CgroupTree &cgroups, io::Ring &ring, OciBackendOptions options)
    : cgroups_(cgroups), ring_(ring), options_(std::move(options)) {
  if (options_.runtime_path.empty())
    options_.runtime_path = options_.runtime == OciRuntime::gvisor ? "/usr/bin/runsc"
                                                                   : std::string("/usr/bin/") + to_string(options_.runtime);
  if (options_.runtime == OciRuntime::gvisor) {
    // With --network=none the sandbox's netstack has only a loopback device, like the
    // other runtimes' empty network namespace.
    global_flags_.push_back("--platform=" + options_.gvisor_platform);
    global_flags_.emplace_back("--network=none");
    // The config's seccomp profile, applied by the sandbox's kernel to the function (runsc
    // ignores it otherwise; gVisor's own host-side filters apply either way).
    global_flags_.emplace_back("--oci-seccomp");
  }
  // The cgroup tree's roots are <hierarchy>/faasvisor/node-<pid>: the runtime is given the
  // same place, as an absolute cgroupsPath (cgroupfs manager, v1 and v2 alike).
  if (!cgroups_.roots().empty()) {
    const std::string &root = cgroups_.roots()[0];
    size_t at = root.rfind("/faasvisor/");
    if (at != std::string::npos) cgroup_base_ = root.substr(at);
    node_dir_ = root.substr(root.rfind('/') + 1);
  }
  if (node_dir_.empty()) node_dir_ = cgroups_.node_name();
  if (node_dir_.empty()) node_dir_ = "node-" + std::to_string(getpid());
  hierarchies_ = cgroup_hierarchies(cgroups_.mode());
  if (cgroups_.mode() == proc::CgroupMode::v1) sweep_dead_node_cgroups(hierarchies_, cgroups_.roots());
  Status st = prepare_state_dir();
  if (!st.ok()) setup_error_ = st.error().message();
}

OciBackend::~OciBackend() { release_state_dir(); }

Status OciBackend::prepare_state_dir() {
  if (access(options_.runtime_path.c_str(), X_OK) != 0) return plain_error("OCI runtime not installed", options_.runtime_path);
  std::string base = options_.state_dir;
  if (base.empty()) {
    if (Status st = make_dir("/run/faasvisor", 0711); !st.ok()) return st;
    sweep_dead_nodes(to_string(options_.runtime));
    base = "/run/faasvisor/" + node_dir_;
    if (Status st = make_dir(base, 0711); !st.ok()) return st;
    base += std::string("/") + to_string(options_.runtime);
  }
  options_.state_dir = base;
  if (Status st = make_dir(base, 0711); !st.ok()) return st;
  root_dir_ = base + "/root";
  bundles_dir_ = base + "/bundles";
  if (Status st = make_dir(root_dir_, 0700); !st.ok()) return st;
  if (Status st = make_dir(bundles_dir_, 0711); !st.ok()) return st;
  if (options_.runtime != OciRuntime::gvisor) exec_fd_ = sealed_copy(options_.runtime_path);  // -1: by path
  // runc copes with the hybrid layout; crun needs the unified mount hidden.
  if (options_.runtime == OciRuntime::crun && hybrid_cgroups()) return make_hybrid_namespace();
  return {};
}

// One mount namespace, made once, where /sys/fs/cgroup/unified is unmounted. Its nsfs file
// is bound onto a file in the state dir; unshare(1) wants that file on a mount that does not
// propagate, so the state dir is first bound onto itself and made private.
Status OciBackend::make_hybrid_namespace() {
  const std::string &dir = options_.state_dir;
  if (mount(dir.c_str(), dir.c_str(), nullptr, MS_BIND, nullptr) < 0) return Error{errno, "bind mount", dir};
  state_mounted_ = true;
  if (mount(nullptr, dir.c_str(), nullptr, MS_PRIVATE, nullptr) < 0) return Error{errno, "make private", dir};
  std::string file = dir + "/mntns";
  if (Status st = write_file(file, ""); !st.ok()) return st;
  // Slave propagation: mounts made on the host later still appear inside, the unmount of
  // the unified hierarchy does not leak out.
  Status st = run_blocking({kUnshare, "--mount=" + file, "--propagation", "slave", "umount", "/sys/fs/cgroup/unified"});
  if (!st.ok()) {
    unlink(file.c_str());
    return st;
  }
  mntns_file_ = file;
  mntns_fd_ = open(file.c_str(), O_RDONLY | O_CLOEXEC);
  if (mntns_fd_ < 0) return Error{errno, "open", file};
  return {};
}

void OciBackend::release_state_dir() {
  if (options_.state_dir.empty()) return;
  if (mntns_fd_ >= 0) close(mntns_fd_);
  if (exec_fd_ >= 0) close(exec_fd_);
  mntns_fd_ = exec_fd_ = -1;
  if (!mntns_file_.empty()) {
    umount2(mntns_file_.c_str(), MNT_DETACH);
    unlink(mntns_file_.c_str());
  }
  if (state_mounted_) umount2(options_.state_dir.c_str(), MNT_DETACH);
  rmdir(bundles_dir_.c_str());
  rmdir(root_dir_.c_str());
  rmdir(options_.state_dir.c_str());
  if (!node_dir_.empty()) {
    std::string node_state = "/run/faasvisor/" + node_dir_;
    rmdir(node_state.c_str());
    rmdir("/run/faasvisor");  // fails, harmlessly, while another node uses it
  }
  // On v1 the runtime makes /faasvisor/node-<pid> in every hierarchy, the node's cgroup tree
  // only in those it uses: remove the others (empty once every container is deleted).
  if (cgroups_.mode() != proc::CgroupMode::v1 || cgroup_base_.empty()) return;
  for (const std::string &hierarchy : hierarchies_) {
    bool ours = false;
    for (const std::string &root : cgroups_.roots()) ours |= root.rfind(hierarchy + "/", 0) == 0;
    if (ours) continue;
    rmdir((hierarchy + cgroup_base_).c_str());
    rmdir((hierarchy + "/faasvisor").c_str());  // only if no other node uses it
  }
}

bool OciBackend::available(std::string *why_not) const {
  if (!setup_error_.empty()) {
    *why_not = setup_error_;
    return false;
  }
  return true;
}

Status OciBackend::validate(const FunctionSpec &spec) const {
  const std::string &rootfs = rootfs_of(spec);
  if (rootfs.empty() || rootfs[0] != '/')
    return plain_error("field 'image'", std::string("the ") + name() + " backend needs the absolute path of a rootfs directory or an OCI image");
  // The rootfs is shared and read-only: the mount points must exist in it already (the
  // runtime would otherwise create them in the image). tools/mkimage and the unpacker make them.
  for (const char *dir : {"/proc", "/dev", "/tmp"}) {
    struct stat st{};
    if (stat((rootfs + dir).c_str(), &st) != 0 || !S_ISDIR(st.st_mode))
      return plain_error("field 'image'", spec.image + " has no " + dir + " directory (build it with tools/mkimage)");
  }
  const char *field = spec.env_process.empty() ? "field 'image'" : "field 'envProcess'";
  if (spec.argv.empty()) return plain_error(field, "no command to run");
  auto command = image::find_command(rootfs, spec.argv[0], instance_environment(spec, spec.name));
  if (!command) return plain_error(field, command.error().message() + " (" + spec.image + ")");
  if (!image::is_directory_in(rootfs, spec.cwd.empty() ? "/" : spec.cwd))
    return plain_error("field 'image'", "the working directory " + spec.cwd + " is not a directory in " + spec.image);
  if (!spec.secrets.empty() && !image::is_directory_in(rootfs, "/var/openfaas/secrets"))
    return plain_error("field 'secrets'", spec.image + " has no /var/openfaas/secrets directory to mount them on (tools/mkimage and the OCI unpacker make it)");
  return check_adapter(spec, options_.adapter_path);
}

std::vector<std::string> OciBackend::runtime_argv(std::initializer_list<std::string_view> args) const {
  std::vector<std::string> out;
  out.push_back(options_.runtime_path);
  out.emplace_back("--root");
  out.push_back(root_dir_);
  for (const std::string &f : global_flags_) out.push_back(f);
  for (std::string_view a : args) out.emplace_back(a);
  return out;
}

bool OciBackend::network_support(std::string *why_not) const {
  if (options_.runtime != OciRuntime::gvisor) return true;
  // runsc --network=sandbox (its own netstack over the namespace's veth) is what egress
  // would use; this node runs runsc with --network=none, since with the sandbox network the
  // sandbox fails to start on kernels 6.11 and later (gVisor issue 10704), as here.
  utsname u{};
  uname(&u);
  unsigned major = 0, minor = 0;
  std::sscanf(u.release, "%u.%u", &major, &minor);
  if (major > 6 || (major == 6 && minor >= 11))
    *why_not = std::string("runsc's sandbox network fails to start on kernel ") + u.release +
               " (gVisor issue 10704, kernels >= 6.11); gVisor functions run with --network=none";
  else
    *why_not = "this node does not give gVisor sandboxes a network yet (runsc --network=sandbox is not wired in)";
  return false;
}

Result<Launched> OciBackend::launch(const FunctionSpec &spec, std::string_view instance_name) {
  if (!setup_error_.empty()) return plain_error("OCI backend unavailable", setup_error_);
  std::string id(instance_name);
  std::string bundle = bundles_dir_ + "/" + id;
  if (Status st = make_dir(bundle, 0700); !st.ok()) return st.error();

  auto values = secret_values(spec);
  if (!values) {
    rmdir(bundle.c_str());
    return values.error();
  }
  OciConfigInput input;
  if (!values->empty()) {
    input.secrets_dir = bundle + "/secrets";
    if (Status st = write_secret_files(input.secrets_dir, *values); !st.ok()) {
      remove_secret_files(input.secrets_dir);
      rmdir(bundle.c_str());
      return st.error();
    }
  }
  input.rootfs = rootfs_of(spec);
  input.hostname = spec.name;
  input.adapter_path = options_.adapter_path;
  auto lease = take_network(spec);
  if (!lease) {
    remove_secret_files(input.secrets_dir);
    rmdir(bundle.c_str());
    return lease.error();
  }
  if (lease->held()) {
    auto path = lease->fd_path();
    if (!path) {
      remove_secret_files(input.secrets_dir);
      rmdir(bundle.c_str());
      return path.error();
    }
    input.netns_path = std::move(*path);
    // The image's own /etc/resolv.conf is the mount point (the rootfs is shared and
    // read-only: the runtime must not create one in it); an image without one keeps none.
    struct stat st{};
    if (stat((input.rootfs + "/etc/resolv.conf").c_str(), &st) == 0 && S_ISREG(st.st_mode))
      input.resolv_conf = network()->resolv_conf();
  }
  input.limits = cgroups_.mode() != proc::CgroupMode::none;
  if (input.limits && !cgroup_base_.empty()) input.cgroups_path = cgroup_base_ + "/" + id;
  // A few kB, and no fsync: the write lands in the page cache even where /run is a disk
  // filesystem (ext4 here), so it stays on the loop. Measured with the mkdir above, the
  // open and the close: ~70 us at load 15. Its removal is another matter (remove_bundle).
  std::string config_path = bundle + "/config.json";
  if (Status st = write_file(config_path, make_oci_config(spec, instance_name, input)); !st.ok()) {
    remove_secret_files(bundle + "/secrets");
    rmdir(bundle.c_str());
    return st.error();
  }

  auto undo = [&] {
    unlink(config_path.c_str());
    remove_secret_files(bundle + "/secrets");
    rmdir(bundle.c_str());
  };
  proc::StdioPipes pipes;
  if (Status st = proc::make_stdio_pipes(pipes); !st.ok()) {
    undo();
    return st.error();
  }

  std::vector<std::string> args = runtime_argv({"run", "--bundle", bundle, id});
  std::vector<char *> argv = c_argv(args);
  auto spawned = options_.runtime == OciRuntime::gvisor
                     ? spawn_pid_namespace(argv, pipes.child[0], pipes.child[1], pipes.child[2])
                     : spawn_runtime(argv.data(), exec_fd_, mntns_fd_, pipes.child[0], pipes.child[1], pipes.child[2]);
  if (!spawned) {
    undo();
    return spawned.error();
  }
  Launched out;
  out.child = std::move(*spawned);
  out.backend_key = next_key_++;
  pipes.release_node_ends(&out.to_instance, &out.from_instance, &out.log);
  // The container's cgroup, made by the runtime, where the node's tree would put it: memory
  // usage and OOM kills read it like a process instance's. The runtime removes it.
  for (const std::string &root : cgroups_.roots()) out.cgroup.dirs.push_back(root + "/" + id);
  ids_[out.backend_key] = id;
  if (!values->empty()) {
    std::vector<std::string> &names = secret_files_[out.backend_key];
    for (const secrets::SecretValue &v : *values) names.push_back(v.name);
  }
  out.network = std::move(*lease);
  return out;
}

// A runtime command (kill, delete) with stdin from /dev/null and its output on the node's
// stderr, started like `run` (same namespace, same sealed binary) and never waited for here.
Result<proc::Child> OciBackend::spawn_runtime_command(std::initializer_list<std::string_view> args) const {
  int devnull = open("/dev/null", O_RDONLY | O_CLOEXEC);
  if (devnull < 0) return errno_error("open /dev/null");
  std::vector<std::string> argv_strings = runtime_argv(args);
  std::vector<char *> argv = c_argv(argv_strings);
  auto spawned = spawn_runtime(argv.data(), exec_fd_, mntns_fd_, devnull, STDERR_FILENO, STDERR_FILENO);
  close(devnull);
  return spawned;
}

bool OciBackend::force_kill(Launched &launched) {
  uint64_t key = launched.backend_key;
  auto it = ids_.find(key);
  if (options_.runtime == OciRuntime::gvisor || it == ids_.end() || kills_.count(key) != 0) {
    launched.child.signal(SIGKILL);
    return false;
  }
  auto spawned = spawn_runtime_command({"kill", it->second, "KILL"});
  if (!spawned) {
    FV_WARN("%s kill %s: %s", name(), it->second.c_str(), spawned.error().message().c_str());
    launched.child.signal(SIGKILL);
    return false;
  }
  kills_.emplace(key, std::move(*spawned));
  return true;
}

// `<runtime> delete --force ID` as a child of its own, never waited for on the loop: the
// first call starts it and asks to be called again (EBUSY); later calls reap it without
// blocking. A failed delete is started again on the next call.
Status OciBackend::delete_container(uint64_t instance_key, const std::string &id) {
  auto running = deletes_.find(instance_key);
  if (running == deletes_.end()) {
    auto spawned = spawn_runtime_command({"delete", "--force", id});
    if (!spawned) return spawned.error();
    deletes_.emplace(instance_key, std::move(*spawned));
    return errno_error("delete container", EBUSY);
  }
  proc::ExitStatus status;
  auto reaped = running->second.try_reap(&status);
  if (reaped && !*reaped) return errno_error("delete container", EBUSY);
  deletes_.erase(running);
  if (!reaped) return reaped.error();
  if (!status.exited || status.code_or_signal != 0)
    return plain_error("delete container", id + ": the runtime's delete " + status.describe());
  return {};
}

Status OciBackend::cleanup(Launched &launched) {
  auto it = ids_.find(launched.backend_key);
  if (it == ids_.end()) return {};
  if (auto kill = kills_.find(launched.backend_key); kill != kills_.end()) {
    proc::ExitStatus status;
    auto reaped = kill->second.try_reap(&status);
    if (reaped && !*reaped) return errno_error("runtime kill", EBUSY);
    kills_.erase(kill);
  }
  const std::string &id = it->second;
  // `run` in the foreground deletes the container when it ends. Its state survives only if
  // the runtime itself was killed (SIGTERM for runsc, or the stop grace ran out).
  std::string runsc_state = root_dir_ + "/" + id + "_sandbox:" + id;  // + .state, .lock
  // These stats are lookups of entries the runtime made moments ago (in the dentry cache:
  // no disk read), so they stay on the loop; what frees blocks goes through remove_bundle.
  struct stat st{};
  if (options_.runtime == OciRuntime::gvisor) {
    // `runsc delete` takes ~1.8 s here: far too long for the loop. Not needed either: the
    // sandbox and gofer run --attached (they die with `runsc run`), so what remains is the
    // state file and the empty cgroups, removed directly. EBUSY while tasks still exit.
    if (stat((runsc_state + ".state").c_str(), &st) == 0) {
      for (const std::string &hierarchy : hierarchies_)
        if (rmdir((hierarchy + cgroup_base_ + "/" + id).c_str()) < 0 && errno == EBUSY)
          return errno_error("rmdir", EBUSY);
      unlink((runsc_state + ".state").c_str());
    }
  } else if (stat((root_dir_ + "/" + id).c_str(), &st) == 0) {
    // crun/runc: `delete --force` kills the orphaned container and removes its cgroup.
    if (Status deleted = delete_container(launched.backend_key, id); !deleted.ok()) return deleted;
  } else if (deletes_.count(launched.backend_key) != 0) {
    if (Status deleted = delete_container(launched.backend_key, id); !deleted.ok()) return deleted;
  }
  if (Status removed = remove_bundle(launched.backend_key, id); !removed.ok()) return removed;
  // The runtime removed the container's cgroup; EBUSY while the kernel still releases it.
  // cgroupfs: an rmdir here touches no disk (~3 us measured), so it stays on the loop.
  for (const std::string &dir : launched.cgroup.dirs)
    if (rmdir(dir.c_str()) < 0 && errno == EBUSY) return errno_error("rmdir", EBUSY);
  launched.cgroup.dirs.clear();
  ids_.erase(it);
  return {};
}

// On a disk filesystem an unlinkat that frees blocks waits for them (with ext4's online
// discard, as on this machine, an rmdir of a bundle took ~4 ms): the removal goes through
// the ring, each step started by the last one's completion (a directory only once it is
// empty). Errors are not the instance's: a file already gone is what was wanted.
Status OciBackend::remove_bundle(uint64_t instance_key, const std::string &id) {
  auto running = removals_.find(instance_key);
  if (running == removals_.end()) {
    auto removal = std::make_unique<BundleRemoval>();
    removal->op.owner = removal.get();
    removal->op.callback = &OciBackend::on_bundle_step;
    removal->ring = &ring_;
    std::string runsc_lock = root_dir_ + "/" + id + "_sandbox:" + id + ".lock";
    std::string bundle = bundles_dir_ + "/" + id;
    if (options_.runtime == OciRuntime::gvisor) removal->steps.emplace_back(runsc_lock, 0);
    removal->steps.emplace_back(bundle + "/config.json", 0);
    if (auto secrets = secret_files_.find(instance_key); secrets != secret_files_.end()) {
      for (const std::string &name : secrets->second) removal->steps.emplace_back(bundle + "/secrets/" + name, 0);
      removal->steps.emplace_back(bundle + "/secrets", AT_REMOVEDIR);
      secret_files_.erase(secrets);
    }
    removal->steps.emplace_back(bundle, AT_REMOVEDIR);
    const auto &first = removal->steps[0];
    ring_.unlinkat(removal->op, AT_FDCWD, first.first.c_str(), first.second);
    removals_.emplace(instance_key, std::move(removal));
    return errno_error("remove bundle", EBUSY);
  }
  BundleRemoval &removal = *running->second;
  if (removal.op.in_flight || removal.next < removal.steps.size()) return errno_error("remove bundle", EBUSY);
  removals_.erase(running);
  return {};
}

bool OciBackend::idle() const {
  for (const auto &[key, removal] : removals_)
    if (removal->op.in_flight) return false;
  return true;
}

void OciBackend::on_bundle_step(io::Completion &c, int, uint32_t) {
  BundleRemoval &removal = c.owner_as<BundleRemoval>();
  if (++removal.next == removal.steps.size()) return;
  const auto &step = removal.steps[removal.next];
  removal.ring->unlinkat(removal.op, AT_FDCWD, step.first.c_str(), step.second);
}

}  // namespace faasvisor::backend
