// Spawning an isolated instance process with clone3(CLONE_PIDFD) into new pid, mount, ipc,
// uts and (loopback-only) net namespaces.
#pragma once

#include <string>
#include <vector>

#include "proc/cgroup.h"
#include "proc/child.h"

namespace faasvisor::proc {

struct SpawnSpec {
  std::string directory;               // working directory (the function's directory)
  std::vector<std::string> argv;       // argv[0] is resolved against PATH in `env`, or relative to directory
  std::vector<std::string> env;        // "NAME=value"
  const InstanceCgroup *cgroup = nullptr;
  bool new_namespaces = true;          // pid, mount, ipc, uts, net
  bool read_only_root = true;          // host fs read-only, private /tmp and /proc
  uint64_t tmp_size_bytes = 64ull << 20;
  uid_t uid = 65534;                   // nobody; 0 keeps root (namespaced)
  gid_t gid = 65534;
};

struct SpawnedProcess {
  Child child;
  int stdin_fd = -1;   // node writes frames here (non-blocking, close-on-exec)
  int stdout_fd = -1;  // node reads frames here
  int stderr_fd = -1;  // node reads the instance's log here
};

// Failures inside the child after clone (mount, exec) are written to its stderr and it exits
// with status 127, so the node sees them as a failed boot with the reason in the log tail.
Result<SpawnedProcess> spawn(const SpawnSpec &spec);

// Splits a command line on whitespace, honouring single and double quotes (no expansion).
Result<std::vector<std::string>> split_command(std::string_view command);

}  // namespace faasvisor::proc
