#include "backend/process.h"

#include "proc/spawn.h"

namespace faasvisor::backend {

bool ProcessBackend::available(std::string *) const { return true; }

Result<Launched> ProcessBackend::launch(const FunctionSpec &spec, std::string_view instance_name) {
  proc::CgroupLimits limits;
  limits.memory_bytes = spec.memory_bytes;
  limits.cpu_millis = spec.cpu_millis;
  limits.pids_max = spec.pids_max;
  auto cgroup = cgroups_.create(instance_name, limits);
  if (!cgroup) return cgroup.error();

  proc::SpawnSpec s;
  s.directory = spec.image;
  s.argv = spec.argv;
  s.env = {"PATH=/usr/local/bin:/usr/bin:/bin", "HOME=/tmp", "LANG=C.UTF-8",
           "FAASVISOR_FUNCTION=" + spec.name, "FAASVISOR_INSTANCE=" + std::string(instance_name)};
  for (const auto &[name, value] : spec.env_vars) s.env.push_back(name + "=" + value);
  // /tmp is a tmpfs charged to the instance's memory cgroup; cap it at a quarter of the limit.
  s.tmp_size_bytes = spec.memory_bytes / 4;
  s.cgroup = &*cgroup;
  auto spawned = proc::spawn(s);
  cgroup->close_fds();
  if (!spawned) {
    cgroups_.remove(*cgroup);
    return spawned.error();
  }
  Launched out;
  out.child = std::move(spawned->child);
  out.to_instance = spawned->stdin_fd;
  out.from_instance = spawned->stdout_fd;
  out.log = spawned->stderr_fd;
  out.cgroup = std::move(*cgroup);
  return out;
}

Status ProcessBackend::cleanup(Launched &launched) { return cgroups_.remove(launched.cgroup); }

}  // namespace faasvisor::backend
