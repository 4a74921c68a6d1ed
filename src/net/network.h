// Instance networking (docs/network.md): opt-in egress, closed by default.
//
// A function deployed with annotation faasvisor.network=egress gets, per instance, a network
// namespace with its own IPv4 address on the node's bridge, a default route through the host
// with masquerade NAT, and the node's resolv.conf. The node's nftables table (`inet
// faasvisor_<pid>`, installed at start, removed at stop, swept after a killed node) keeps the
// host, the node's API, other instances and 169.254.0.0/16 out of reach whatever the
// annotations say; faasvisor.egress.allow narrows the destinations further.
//
// What a function asks for is a NetworkSpec (net/policy.h). Everything slow (netns, veth, addresses, nft transactions: ~150 ms) runs in the helper
// faasvisor-net (src/net/faasvisor-net: the CNI bridge and host-local plugins, iproute2,
// nft), as child processes watched on the ring. Namespaces are prepared ahead of demand, a
// few per policy (allow list, rate, connection limit), so a cold start only takes one.
#pragma once

#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "io/ring.h"
#include "net/policy.h"
#include "io/timer.h"
#include "proc/child.h"
#include "util/result.h"

namespace faasvisor::net {

struct NetworkOptions {
  std::string helper_path;           // faasvisor-net
  std::vector<std::string> dns;      // resolv.conf's nameservers; empty: the host's
  std::string subnet;                // the bridge's IPv4 /24 "A.B.C.0/24"; empty: from the pid
  uint32_t ready_per_policy = 2;     // namespaces kept prepared for each allow list in use
  uint32_t max_namespaces = 250;     // prepared plus leased, node-wide (the /24 holds 253)
  uint32_t max_helpers = 4;          // faasvisor-net processes at once
  // Non-empty: no instance network, for this reason (the helper names it by the pid, so a
  // process has one: a second Node in the same process goes without).
  std::string disabled;
};

class Network;

// A prepared namespace, held by one instance. Giving it back (destruction) has the helper
// remove it, off the loop.
class Lease {
 public:
  Lease() = default;
  Lease(Lease &&other) noexcept { *this = std::move(other); }
  Lease &operator=(Lease &&other) noexcept;
  Lease(const Lease &) = delete;
  Lease &operator=(const Lease &) = delete;
  ~Lease() { release(); }

  bool held() const { return owner_ != nullptr; }
  const std::string &name() const { return name_; }  // relative to Network::netns_dir()
  std::string path() const;                           // the nsfs file
  // The namespace as /proc/<node>/fd/N: the same in every mount namespace (an OCI runtime
  // may run in one made before the namespace was). Opens the file (once, microseconds on
  // tmpfs); it stays open while the lease is held.
  Result<std::string> fd_path();
  const std::string &ip() const { return ip_; }
  // Bytes the instance sent and received so far (the host end's counters, from sysfs).
  bool traffic(uint64_t *sent, uint64_t *received) const;
  void release();

 private:
  friend class Network;
  Network *owner_ = nullptr;
  std::string name_, ip_, veth_;
  int fd_ = -1;  // the nsfs file, open while held
};

class Network {
 public:
  // Sweeps what dead nodes left, then installs this node's table. A host where that fails
  // (no nft, no CNI plugins, not root) gets a Network that is not available(): deploys with
  // egress are refused, naming why.
  Network(io::Ring &ring, io::TimerQueue &timers, NetworkOptions options);
  ~Network();  // removes the table, the bridge and every namespace (blocking: at stop)
  Network(const Network &) = delete;
  Network &operator=(const Network &) = delete;

  bool available(std::string *why_not) const;
  const std::string &netns_dir() const { return netns_dir_; }
  const std::string &resolv_conf() const { return resolv_conf_; }
  const std::string &subnet() const { return subnet_; }
  const std::string &gateway() const { return gateway_; }
  const std::vector<std::string> &dns() const { return dns_; }

  // Deploy: a function with this policy exists; its namespaces are prepared from now on.
  Status want(const NetworkSpec &spec);
  // Whether a cold start for `spec` would find a namespace now (else it waits: on_ready).
  bool ready(const NetworkSpec &spec) const;
  Result<Lease> take(const NetworkSpec &spec);
  // Called (on the loop) when a namespace became ready: queued cold starts may go on.
  void set_on_ready(std::function<void()> callback) { on_ready_ = std::move(callback); }

  // Stop: no new helpers; running ones are killed. idle(): none is left in flight.
  void shutdown();
  bool idle() const { return jobs_.empty(); }
  size_t ready_count() const;  // prepared namespaces waiting, all policies

 private:
  friend class Lease;
  struct Policy {
    std::string key;
    NetworkSpec spec;
    uint32_t index = 0;
    std::deque<Lease> ready;
    uint32_t preparing = 0;
  };
  struct Job;

  void give_back(Lease &lease);
  Policy *find(const std::string &key);
  const Policy *find(const std::string &key) const;
  void refill(Policy &policy);
  Status spawn_job(std::unique_ptr<Job> job, std::vector<std::string> args);
  static void on_job_exit(io::Completion &c, int result, uint32_t flags);
  static void on_refill(io::Timer &t);
  void finish(Job &job);
  Result<proc::Child> spawn_helper(std::vector<std::string> args, bool nonblocking, int *out_fd);
  Status run_blocking(std::vector<std::string> args, std::string *output);
  void sweep_dead_nodes();

  io::Ring &ring_;
  io::TimerQueue &timers_;
  NetworkOptions options_;
  std::string node_, netns_dir_, resolv_conf_, subnet_, gateway_, why_not_;
  std::vector<std::string> dns_;
  bool up_ = false, tried_up_ = false, shutting_down_ = false;
  std::map<std::string, Policy> policies_;
  std::map<Job *, std::unique_ptr<Job>> jobs_;
  uint32_t namespaces_ = 0;  // ready, preparing and leased
  uint64_t next_name_ = 1;
  uint64_t retry_after_ns_ = 0;  // no preparation before (monotonic): the last one failed
  io::Timer refill_timer_{};
  std::function<void()> on_ready_;
};

}  // namespace faasvisor::net
