// A backend turns a function spec into a running instance that speaks the instance protocol
// over a pair of byte streams. Everything after launch (framing, readiness, invocation,
// watching the exit, stopping) is the same for every backend and lives in pool::Instance.
#pragma once

#include <csignal>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "model/function_spec.h"
#include "net/network.h"
#include "proc/cgroup.h"
#include "proc/child.h"
#include "secrets/table.h"

namespace faasvisor::backend {

struct Launched {
  proc::Child child;        // the process whose exit ends the instance (the function, a VMM...)
  int to_instance = -1;     // node writes frames (non-blocking)
  int from_instance = -1;   // node reads frames (non-blocking)
  int log = -1;             // the instance's stderr, or -1
  proc::InstanceCgroup cgroup;
  // Bytes the instance must receive before any frame, written through the ring by the
  // instance: what of the process backend's GO message (a big environment, or secrets) the
  // pipe did not take at once. It may hold secrets: the instance wipes it once written.
  std::string initial_input;
  // The backend's own name for this launch, never reused (unlike a pidfd number, which the
  // kernel hands out again once the Launched is gone, even after a cleanup that gave up).
  uint64_t backend_key = 0;
  // The instance's network namespace (faasvisor.network=egress), given back when it ends.
  net::Lease network;
};

class Backend {
 public:
  virtual ~Backend() = default;
  virtual const char *name() const = 0;
  // Whether the host can run this backend; if not, why (shown by /system/info and deploy).
  virtual bool available(std::string *why_not) const = 0;
  // Checks a spec at deploy time (e.g. that an image is runnable). Default: nothing to check.
  // Runs on the loop, synchronously (a deploy, and at start-up each restored function): its
  // stats and reads (an image directory, a command in a rootfs, an initramfs's headers)
  // hit the dentry and page caches for an image just built or unpacked, but a cold one
  // waits on the disk. Moving it into a helper, as image resolution is, is still open.
  virtual Status validate(const FunctionSpec &) const { return {}; }
  virtual Result<Launched> launch(const FunctionSpec &spec, std::string_view instance_name) = 0;
  // Releases what launch created once the process is gone. EBUSY asks to be called again.
  virtual Status cleanup(Launched &launched) = 0;
  // The instance's current memory footprint (its whole sandbox), if the backend can tell.
  virtual Result<uint64_t> memory_usage(const Launched &) const { return plain_error("not measured"); }
  // The files memory_usage reads, so the pool can read them through the ring instead
  // (sampling 64 instances' smaps_rollup on the loop stalled it). Empty: call memory_usage.
  virtual proc::MemoryFiles memory_files(const Launched &) const { return {}; }
  // The signal that ends an instance at once (SIGKILL unless the launched process is a
  // supervisor that must take its children with it).
  virtual int kill_signal() const { return SIGKILL; }
  // The last resort once kill_signal() has not ended the instance within the grace period.
  // Returns true to be called again after another grace period if that does not end it
  // either. Default: SIGKILL to the launched process.
  virtual bool force_kill(Launched &launched) {
    launched.child.signal(SIGKILL);
    return false;
  }
  // The node is shutting down: release anything prepared ahead of demand.
  virtual void drain() {}
  // Whether the instance's memory limit was hit (the kernel killed something for it).
  virtual bool out_of_memory(const Launched &) const { return false; }
  // True where firmware or a kernel may print on the stream before the first frame.
  virtual bool console_preamble() const { return false; }
  // The boot deadline for functions that set none (faasvisor.boot_timeout); 0: the spec's.
  virtual uint64_t default_boot_timeout_ms() const { return 0; }
  // Records in the spec what the backend decides once per deployment, so that launch (on
  // every cold start) need not look again. Default: nothing.
  virtual void settle(FunctionSpec &) const {}
  // Memory an instance costs beyond its function's limit (e.g. the VMM beside a guest's RAM),
  // held against the node's memory budget.
  virtual uint64_t memory_overhead_bytes(const FunctionSpec &) const { return 0; }
  // A function definition was deployed (or is the new one of an update): make what is kept
  // for it ahead of its cold starts (a template). Default: nothing.
  virtual void prepare(const FunctionSpec &) {}
  // A function definition is gone (updated or deleted): release what was kept for it.
  virtual void retire(const FunctionSpec &) {}
  // What the backend keeps for a definition besides its instances (a template), for stats.
  struct KeptFacts {
    const char *state = nullptr;  // nullptr: nothing kept
    int64_t pid = 0;
    uint64_t memory_bytes = 0;
    uint64_t forks = 0;
    uint64_t builds = 0;
    uint64_t primed = 0;  // sandboxes prepared for its next cold starts
    uint64_t primed_target = 0;
  };
  virtual KeptFacts kept_facts(const FunctionSpec &) { return {}; }
  // Nothing of the backend's own (beside instances) is still ending: the node may exit.
  virtual bool idle() const { return true; }
  // Facts about how the backend runs on this host, shown by /system/info (name, value).
  virtual void describe(std::vector<std::pair<std::string, std::string>> &) const {}

  // Whether instances can have a network (faasvisor.network=egress); if not, why.
  virtual bool network_support(std::string *why_not) const {
    *why_not = std::string("the ") + name() + " backend has no instance networking";
    return false;
  }
  // Where launch() takes prepared network namespaces from (set once, at start; may be null).
  void set_network(net::Network *network) { network_ = network; }

  // Where launch() finds the values of spec.secrets (the node's table; set once, at start).
  void set_secrets(const secrets::SecretTable *table) { secrets_ = table; }

 protected:
  // The values of spec.secrets as of now, for the instance being launched.
  Result<std::vector<secrets::SecretValue>> secret_values(const FunctionSpec &spec) const {
    if (spec.secrets.empty()) return std::vector<secrets::SecretValue>{};
    if (secrets_ == nullptr) return plain_error("no secrets on this node", spec.secrets[0]);
    return secrets_->resolve(spec.secrets);
  }
  // The prepared namespace a launch of `spec` runs in; none held when it has no egress.
  Result<net::Lease> take_network(const FunctionSpec &spec) const {
    if (!spec.network.egress) return net::Lease{};
    if (network_ == nullptr) return plain_error("network", "this node has no instance networking");
    return network_->take(spec.network);
  }
  const net::Network *network() const { return network_; }

 private:
  const secrets::SecretTable *secrets_ = nullptr;
  net::Network *network_ = nullptr;
};

}  // namespace faasvisor::backend
