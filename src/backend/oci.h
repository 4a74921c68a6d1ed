// The OCI backends: each instance is a container run by an OCI runtime (crun, runc, or
// gVisor's runsc) from the function's image, a rootfs directory shared read-only by every
// instance. Per instance the node writes a bundle (config.json) under its own state
// directory and runs `<runtime> --root <private> run --bundle B ID` in the foreground: the
// runtime exits with the container, so its pidfd is the instance's exit, and the container
// process's stdin/stdout are the protocol pipes.
//
// Hybrid cgroup hosts (v1 controllers, an empty cgroup2 at /sys/fs/cgroup/unified): crun
// refuses them. The backend keeps one mount namespace in which the unified mount is gone
// (made once at start by unshare(1), pinned by a bind mount of its nsfs file); each crun's
// child enters it between clone and exec (no nsenter(1) in between). Pure v2 hosts run the
// runtime directly. crun and runc are executed from a sealed in-memory copy, so they skip
// copying themselves on every start. runsc runs as
// pid 1 of its own pid namespace, so its sandbox processes cannot outlive it.
#pragma once

#include <initializer_list>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "backend/backend.h"
#include "io/ring.h"

namespace faasvisor::backend {

enum class OciRuntime { crun, runc, gvisor };
const char *to_string(OciRuntime runtime);

struct OciBackendOptions {
  OciRuntime runtime = OciRuntime::crun;
  std::string runtime_path;  // empty: /usr/bin/crun, /usr/bin/runc or /usr/bin/runsc
  std::string state_dir;     // empty: /run/faasvisor/<node dir of the cgroup tree>
  // gVisor's platform. ptrace works everywhere; kvm is faster but opt-in: on the development
  // machines /dev/kvm opens and creates VMs, yet a runsc sandbox on it never boots (nested).
  std::string gvisor_platform = "ptrace";
  std::string adapter_path;  // faasvisor-adapter on the host, bound into http/stdio containers
};

// What config.json is made of; the pure part of a launch, exposed for tests.
struct OciConfigInput {
  std::string rootfs;        // absolute path of the image's rootfs directory
  std::string cgroups_path;  // e.g. /faasvisor/node-123/echo-1; empty: the runtime's default
  std::string hostname;
  bool limits = true;        // false when the host gives no cgroups
  std::string adapter_path;  // faasvisor-adapter on the host (used by http and stdio modes)
  std::string secrets_dir;   // the instance's secret files, bound read-only on
                             // /var/openfaas/secrets; empty: the function has none
  std::string netns_path;    // faasvisor.network=egress: the namespace to join; empty: a new one
  std::string resolv_conf;   // bound read-only on /etc/resolv.conf (with netns_path)
};

// Where faasvisor-adapter appears inside a container: a file on the runtime's /dev tmpfs,
// so the shared read-only rootfs needs no mount point for it.
inline constexpr const char *kAdapterInContainer = "/dev/.faasvisor-adapter";

// The seccomp profile every container gets (linux.seccomp, JSON text): see oci_seccomp.cc.
std::string default_seccomp_profile();

// The OCI runtime configuration for one instance of spec (JSON text).
std::string make_oci_config(const FunctionSpec &spec, std::string_view instance_name,
                            const OciConfigInput &input);

class OciBackend final : public Backend {
 public:
  OciBackend(const proc::CgroupTree &cgroups, io::Ring &ring, OciBackendOptions options);
  ~OciBackend() override;

  const char *name() const override { return to_string(options_.runtime); }
  bool available(std::string *why_not) const override;
  // crun and runc join the prepared namespace (config.json); gVisor: see oci.cc.
  bool network_support(std::string *why_not) const override;
  Status validate(const FunctionSpec &spec) const override;
  Result<Launched> launch(const FunctionSpec &spec, std::string_view instance_name) override;
  Status cleanup(Launched &launched) override;
  Result<uint64_t> memory_usage(const Launched &launched) const override {
    return cgroups_.memory_usage(launched.cgroup);
  }
  proc::MemoryFiles memory_files(const Launched &launched) const override {
    return cgroups_.memory_files(launched.cgroup, false);
  }
  bool out_of_memory(const Launched &launched) const override {
    return cgroups_.oom_kills(launched.cgroup) > 0;
  }
  // crun and runc forward SIGTERM to the container's process (the SDK handles it; as pid 1
  // of its namespace it would ignore it otherwise). SIGKILL cannot be forwarded: should the
  // grace run out, the node kills the runtime and cleanup's `delete --force` ends the
  // container. runsc runs as pid 1 of its own pid namespace (see spawn_pid_namespace in
  // oci.cc), where SIGTERM is ignored: SIGKILL ends it and everything in the namespace.
  int kill_signal() const override { return options_.runtime == OciRuntime::gvisor ? SIGKILL : SIGTERM; }
  // crun/runc: `<runtime> kill ID KILL` first, so `run` sees its container end, reaps it and
  // deletes it as usual (a SIGKILLed runtime would leave the container orphaned, re-parented
  // to init); SIGKILL to the runtime only if that does not end it either.
  bool force_kill(Launched &launched) override;
  // No unlinkat of a bundle is in flight (the ring must not outlive one).
  bool idle() const override;

 private:
  Status prepare_state_dir();
  Status make_hybrid_namespace();
  Status delete_container(uint64_t instance_key, const std::string &id);
  Result<proc::Child> spawn_runtime_command(std::initializer_list<std::string_view> args) const;
  void release_state_dir();
  // An instance's bundle (its config.json, secret files and directories), removed on the
  // ring one unlinkat after another; EBUSY until the last has completed.
  struct BundleRemoval {
    io::Completion op;
    io::Ring *ring = nullptr;
    std::vector<std::pair<std::string, int>> steps;  // path, unlinkat flags; read by the kernel
    size_t next = 0;                                 // in flight, or steps.size(): done
  };
  Status remove_bundle(uint64_t instance_key, const std::string &id);
  static void on_bundle_step(io::Completion &c, int result, uint32_t flags);
  std::vector<std::string> runtime_argv(std::initializer_list<std::string_view> args) const;

  const proc::CgroupTree &cgroups_;
  io::Ring &ring_;
  OciBackendOptions options_;
  std::string node_dir_;     // node-<pid>
  std::string cgroup_base_;  // /faasvisor/node-<pid>, the cgroupsPath prefix
  std::string root_dir_;     // the runtime's --root
  std::string bundles_dir_;
  std::string mntns_file_;   // empty unless hybrid crun
  int mntns_fd_ = -1;        // that namespace, entered by each crun before its exec
  int exec_fd_ = -1;         // sealed copy of crun/runc (see sealed_copy in oci.cc), or -1
  bool state_mounted_ = false;
  std::vector<std::string> global_flags_;  // runsc: platform and network
  std::vector<std::string> hierarchies_;  // every cgroup hierarchy (v1: one per controller)
  std::string setup_error_;
  // By Launched::backend_key, which is never reused: a pidfd number is, once a cleanup that
  // gave up lets its Launched go with the entries still here.
  uint64_t next_key_ = 1;
  // Container id of each live instance.
  std::unordered_map<uint64_t, std::string> ids_;
  // `delete --force` children under way, for the instance they clean up after.
  std::unordered_map<uint64_t, proc::Child> deletes_;
  // `kill ID KILL` children, for the instance they end (reaped by cleanup).
  std::unordered_map<uint64_t, proc::Child> kills_;
  // Secret files written into each live instance's bundle (their names).
  std::unordered_map<uint64_t, std::vector<std::string>> secret_files_;
  std::unordered_map<uint64_t, std::unique_ptr<BundleRemoval>> removals_;
};

}  // namespace faasvisor::backend
