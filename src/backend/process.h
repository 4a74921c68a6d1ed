// The process backend: the function's command runs as a Linux process in its own pid, mount,
// ipc, uts and net namespaces, with a read-only view of the host, a private /tmp, and a
// per-instance cgroup.
#pragma once

#include "backend/backend.h"

namespace faasvisor::backend {

class ProcessBackend final : public Backend {
 public:
  explicit ProcessBackend(const proc::CgroupTree &cgroups) : cgroups_(cgroups) {}
  const char *name() const override { return "process"; }
  bool available(std::string *why_not) const override;
  Result<Launched> launch(const FunctionSpec &spec, std::string_view instance_name) override;
  Status cleanup(Launched &launched) override;

 private:
  const proc::CgroupTree &cgroups_;
};

}  // namespace faasvisor::backend
