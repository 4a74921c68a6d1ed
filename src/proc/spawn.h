// Spawning sandboxes. A *stem* is faasvisor-stem started with posix_spawn (held by the pidfd
// of pidfd_open): it joins its own cgroup, unshares new pid, mount, ipc, uts and
// (loopback-only) net namespaces, makes the host read-only with private /tmp and /proc, and
// waits for one GO message naming the function to become (src/stem/stem.c). Making stems
// ahead of demand takes namespace creation and cgroup migration off the cold-start path.
#pragma once

#include <spawn.h>

#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "proc/cgroup.h"
#include "proc/child.h"

namespace faasvisor::proc {

struct StemSpec {
  std::string stem_path;               // the faasvisor-stem binary
  const InstanceCgroup *cgroup = nullptr;  // made, joined and removed by the stem
  uint64_t tmp_size_bytes = 64ull << 20;
  // A template's sandbox (--template, docs/templates.md): this socket becomes the stem's fd 3.
  int template_control_fd = -1;
  // The node's directory of prepared network namespaces (net/network.h), opened by the stem
  // before it leaves the host's mount namespace: a GO message may name one to join. Empty:
  // the node has no instance networking.
  std::string netns_dir;
};

struct SpawnedProcess {
  Child child;
  int stdin_fd = -1;   // node writes (the GO message, then frames); non-blocking, cloexec
  int stdout_fd = -1;  // node reads frames
  int stderr_fd = -1;  // node reads the instance's log
};

// Failures inside the child (mounts, exec) are written to its stderr and it exits 127, so
// the node sees a failed boot with the reason in the log tail.
Result<SpawnedProcess> spawn_stem(const StemSpec &spec);

// posix_spawn's file actions and attributes, released on every path. The child starts with
// no signal blocked and default dispositions for the signals the node handles or ignores
// (the node blocks SIGINT/SIGTERM for its signalfd and ignores SIGPIPE; a child must see the
// SIGTERM it is to forward).
struct SpawnSetup {
  posix_spawn_file_actions_t actions;
  posix_spawnattr_t attr;
  SpawnSetup();
  ~SpawnSetup();
  SpawnSetup(const SpawnSetup &) = delete;
  SpawnSetup &operator=(const SpawnSetup &) = delete;
};

// posix_spawn, then pidfd_open: the child as a Child (pid with its pidfd). `setup` holds the
// file actions; envp is the child's whole environment.
Result<Child> spawn_with_pidfd(const char *path, SpawnSetup &setup, char *const argv[],
                               char *const envp[]);

// Three pipes for a child's stdin, stdout and stderr. The child's ends (cloexec: a dup2 in
// the child clears it) go to fds 0-2 of the child; the node keeps the other ends,
// non-blocking. The destructor closes whatever was not released.
struct StdioPipes {
  int child[3] = {-1, -1, -1};  // stdin read end, stdout write end, stderr write end
  int node[3] = {-1, -1, -1};   // stdin write end, stdout read end, stderr read end
  StdioPipes() = default;
  StdioPipes(const StdioPipes &) = delete;
  StdioPipes &operator=(const StdioPipes &) = delete;
  ~StdioPipes() { close_all(); }
  void close_all();
  // Hands the node's ends to the caller; only the child's are closed from then on.
  void release_node_ends(int *to_child, int *from_child, int *log);
};
Status make_stdio_pipes(StdioPipes &pipes);

// What a stem becomes.
struct GoSpec {
  std::string directory;
  std::vector<std::string> argv;
  std::vector<std::string> env;  // "NAME=value"
  uid_t uid = 65534;             // nobody; 0 keeps (namespaced) root
  gid_t gid = 65534;
  uint64_t tmp_size_bytes = 0;   // 0 leaves /tmp as the stem made it
  CgroupLimits limits;           // the stem writes them to its cgroup before the exec
  // (name, value) views: the stem writes them as read-only files in /var/openfaas/secrets.
  std::vector<std::pair<std::string_view, std::string_view>> secrets;
  // exec: become the function; template: run a template (a --template stem only); adopt:
  // take a template's child in (src/stem/stem.c, docs/templates.md).
  enum class Mode : uint32_t { exec = 0, template_runtime = 1, adopt = 2 } mode = Mode::exec;
  // faasvisor.network=egress: the namespace to join (a name in StemSpec::netns_dir) and the
  // resolv.conf bound over /etc/resolv.conf. Empty: the stem's own loopback-only namespace.
  std::string netns_name;
  std::string resolv_conf;
};
std::string encode_go(const GoSpec &spec);
// What a cold start writes to a stem primed by a template (after its GO mode adopt): u32
// magic "FVST", u32 length, the instance's name. The template's child waiting in the stem
// reads it and forks the function (src/template/template.c, docs/templates.md).
std::string encode_template_start(std::string_view instance_name);

// Splits a command line on whitespace, honouring single and double quotes (no expansion).
Result<std::vector<std::string>> split_command(std::string_view command);

}  // namespace faasvisor::proc
