#include "net/network.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <poll.h>
#include <spawn.h>
#include <dirent.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cassert>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>

#include "proc/cgroup.h"
#include "proc/spawn.h"
#include "util/clock.h"
#include "util/log.h"
#include "util/number.h"

namespace faasvisor::net {
namespace {
char *const kHelperEnv[] = {const_cast<char *>("PATH=/usr/sbin:/usr/bin:/sbin:/bin"), nullptr};
constexpr const char *kBase = "/run/faasvisor/net";
// Refills run after the cold start that took a namespace, not inside it (as the stems').
constexpr uint64_t kRefillDelayNs = 20'000'000;
constexpr uint64_t kHelperTimeoutNs = 20'000'000'000;
constexpr uint64_t kRetryDelayNs = 1'000'000'000;

// The host's IPv4 nameservers, for resolv.conf when the node is given none.
std::vector<std::string> host_nameservers() {
  std::vector<std::string> out;
  std::ifstream in("/etc/resolv.conf");
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream words(line);
    std::string key, value;
    if (!(words >> key >> value) || key != "nameserver") continue;
    in_addr addr{};
    if (inet_pton(AF_INET, value.c_str(), &addr) == 1) out.push_back(value);
  }
  return out;
}
}  // namespace

// ---- Lease ----

Lease &Lease::operator=(Lease &&other) noexcept {
  if (this != &other) {
    release();
    owner_ = other.owner_;
    name_ = std::move(other.name_);
    ip_ = std::move(other.ip_);
    veth_ = std::move(other.veth_);
    fd_ = other.fd_;
    other.owner_ = nullptr;
    other.fd_ = -1;
  }
  return *this;
}

std::string Lease::path() const { return owner_ ? owner_->netns_dir() + "/" + name_ : std::string(); }

Result<std::string> Lease::fd_path() {
  if (fd_ < 0) fd_ = open(path().c_str(), O_RDONLY | O_CLOEXEC);
  if (fd_ < 0) return errno_error("open the instance's network namespace");
  return "/proc/" + std::to_string(getpid()) + "/fd/" + std::to_string(fd_);
}

bool Lease::traffic(uint64_t *sent, uint64_t *received) const {
  if (owner_ == nullptr || veth_.empty()) return false;
  // The host's end: what it receives the instance sent, and the other way round.
  const std::pair<const char *, uint64_t *> files[] = {{"rx_bytes", sent}, {"tx_bytes", received}};
  for (const auto &[file, out] : files) {
    std::string path = "/sys/class/net/" + veth_ + "/statistics/" + file;
    int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return false;
    char buf[32] = {};
    ssize_t n = ::read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0) return false;
    *out = std::strtoull(buf, nullptr, 10);
  }
  return true;
}

void Lease::release() {
  if (fd_ >= 0) close(fd_);
  fd_ = -1;
  if (owner_ == nullptr) return;
  Network *owner = owner_;
  owner_ = nullptr;
  owner->give_back(*this);
}

// ---- Network ----

struct Network::Job {
  Network *network = nullptr;
  bool prepare = false;  // else a release
  std::string policy;    // prepare: its policy's key
  std::string name;
  proc::Child child;
  int out_fd = -1;
  io::Completion exit_op{};
  io::Timer deadline{};
  ~Job() {
    if (out_fd >= 0) close(out_fd);
  }
};

Network::Network(io::Ring &ring, io::TimerQueue &timers, NetworkOptions options)
    : ring_(ring), timers_(timers), options_(std::move(options)) {
  refill_timer_.owner = this;
  refill_timer_.callback = &Network::on_refill;
  pid_t pid = getpid();
  node_ = std::to_string(pid);
  netns_dir_ = std::string(kBase) + "/" + node_ + "/ns";
  resolv_conf_ = std::string(kBase) + "/" + node_ + "/resolv.conf";
  subnet_ = options_.subnet;
  if (subnet_.empty()) {
    // In 100.64.0.0/10 (shared address space, rarely a host's own): nodes side by side on
    // one host get different /24s unless their pids agree in their low 14 bits.
    char buf[32];
    std::snprintf(buf, sizeof buf, "100.%u.%u.0/24", 64u + ((static_cast<uint32_t>(pid) >> 8) & 63u),
                  static_cast<uint32_t>(pid) & 255u);
    subnet_ = buf;
  }
  gateway_ = subnet_.substr(0, subnet_.rfind(".0/")) + ".1";
  if (!options_.disabled.empty()) {
    why_not_ = options_.disabled;
    return;
  }
  if (access(options_.helper_path.c_str(), X_OK) != 0) {
    why_not_ = "the network helper " + options_.helper_path + " is missing";
    return;
  }
  for (const char *tool : {"/usr/sbin/nft", "/usr/lib/cni/bridge", "/usr/lib/cni/host-local"}) {
    if (access(tool, X_OK) != 0) {
      why_not_ = std::string(tool) + " is missing (tools/setup installs nftables and containernetworking-plugins)";
      return;
    }
  }
  std::string out;
  sweep_dead_nodes();
  mkdir("/run/faasvisor", 0755);
  mkdir(kBase, 0755);
  std::vector<std::string> args = {"up", node_, subnet_, gateway_};
  dns_ = options_.dns.empty() ? host_nameservers() : options_.dns;
  for (std::string &server : dns_) args.push_back(server);
  tried_up_ = true;
  if (Status st = run_blocking(args, &out); !st.ok()) {
    why_not_ = "installing the node's network failed: " + st.error().message();
    return;
  }
  up_ = true;
  FV_INFO("network: bridge fvb%s on %s, nft table inet faasvisor_%s", node_.c_str(), subnet_.c_str(), node_.c_str());
}

// What nodes that died without a clean stop left (their instances died with them): the
// same judgement of "dead" as the cgroup and container sweeps (proc::node_alive), applied
// to the node directories under /run/faasvisor/net.
void Network::sweep_dead_nodes() {
  DIR *d = opendir(kBase);
  if (d == nullptr) return;
  std::vector<std::string> dead;
  while (dirent *e = readdir(d)) {
    auto pid = parse_decimal(e->d_name);
    if (!pid || *pid == 0 || *pid > 0x7fffffff || static_cast<pid_t>(*pid) == getpid()) continue;
    if (!proc::node_alive(static_cast<int>(*pid))) dead.emplace_back(e->d_name);
  }
  closedir(d);
  for (const std::string &node : dead) {
    std::string out;
    if (Status st = run_blocking({"down", node}, &out); st.ok())
      FV_INFO("network: removed the network of dead node %s", node.c_str());
    else
      FV_WARN("network: removing the network of dead node %s failed: %s", node.c_str(), st.error().message().c_str());
  }
}

Network::~Network() {
  shutdown();
  // Normally the node turned the ring until idle(); a node that failed to start did not.
  for (auto &[job, owned] : jobs_) owned->child.wait();
  jobs_.clear();
  for (auto &[allow, policy] : policies_) {
    for (Lease &lease : policy.ready) lease.owner_ = nullptr;  // `down` removes them all
    policy.ready.clear();
  }
  if (tried_up_) {
    std::string out;
    if (Status st = run_blocking({"down", node_}, &out); !st.ok())
      FV_WARN("network: removing the node's network failed: %s", st.error().message().c_str());
  }
}

bool Network::available(std::string *why_not) const {
  if (up_) return true;
  *why_not = why_not_;
  return false;
}

// The helper with `args`, its stdout a pipe whose read end goes to *out_fd (blocking or not).
Result<proc::Child> Network::spawn_helper(std::vector<std::string> args, bool nonblocking, int *out_fd) {
  int fds[2];
  if (pipe2(fds, O_CLOEXEC) < 0) return errno_error("pipe2");
  if (nonblocking) fcntl(fds[0], F_SETFL, O_NONBLOCK);
  proc::SpawnSetup setup;
  posix_spawn_file_actions_adddup2(&setup.actions, fds[1], 1);
  posix_spawn_file_actions_addclosefrom_np(&setup.actions, 3);
  args.insert(args.begin(), options_.helper_path);
  std::vector<char *> argv;
  for (std::string &a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  auto child = proc::spawn_with_pidfd(options_.helper_path.c_str(), setup, argv.data(), kHelperEnv);
  close(fds[1]);
  if (!child) {
    close(fds[0]);
    return child.error();
  }
  *out_fd = fds[0];
  return child;
}

Status Network::run_blocking(std::vector<std::string> args, std::string *output) {
  // Start and stop only, before the loop serves or after it stopped.
  std::string what = args[0];
  int out_fd = -1;
  auto child = spawn_helper(std::move(args), false, &out_fd);
  if (!child) return child.error();
  char buf[4096];
  ssize_t n;
  while ((n = ::read(out_fd, buf, sizeof buf)) > 0) output->append(buf, static_cast<size_t>(n));
  close(out_fd);
  child->wait();
  if (!child->exit_status().exited || child->exit_status().code_or_signal != 0)
    return plain_error("faasvisor-net", what + ": " + child->exit_status().describe() + " (its stderr is the node's)");
  return {};
}

Network::Policy *Network::find(const std::string &key) {
  auto it = policies_.find(key);
  return it == policies_.end() ? nullptr : &it->second;
}
const Network::Policy *Network::find(const std::string &key) const {
  auto it = policies_.find(key);
  return it == policies_.end() ? nullptr : &it->second;
}

Status Network::want(const NetworkSpec &spec) {
  std::string why;
  if (!available(&why)) return plain_error("network", why);
  std::string key = spec.key();
  Policy *policy = find(key);
  if (policy == nullptr) {
    if (policies_.size() >= 256) return plain_error("network", "this node already has 256 different egress policies");
    policy = &policies_[key];
    policy->key = key;
    policy->spec = spec;
    policy->index = static_cast<uint32_t>(policies_.size());
  }
  refill(*policy);
  return {};
}

bool Network::ready(const NetworkSpec &spec) const {
  const Policy *policy = find(spec.key());
  return policy != nullptr && !policy->ready.empty();
}

Result<Lease> Network::take(const NetworkSpec &spec) {
  Policy *policy = find(spec.key());
  if (policy == nullptr || policy->ready.empty())
    return plain_error("network", "no network namespace is ready for this function yet");
  Lease lease = std::move(policy->ready.front());
  policy->ready.pop_front();
  if (!refill_timer_.armed() && !shutting_down_) timers_.start(refill_timer_, monotonic_ns() + kRefillDelayNs);
  return lease;
}

void Network::on_refill(io::Timer &t) {
  auto &self = t.owner_as<Network>();
  for (auto &[allow, policy] : self.policies_) self.refill(policy);
}

void Network::refill(Policy &policy) {
  if (monotonic_ns() < retry_after_ns_) return;  // the last preparation failed: wait
  while (!shutting_down_ && policy.ready.size() + policy.preparing < options_.ready_per_policy &&
         namespaces_ < options_.max_namespaces && jobs_.size() < options_.max_helpers) {
    auto job = std::make_unique<Job>();
    job->prepare = true;
    job->policy = policy.key;
    job->name = "i" + std::to_string(next_name_++);
    std::vector<std::string> args = {"prepare", node_, job->name, std::to_string(policy.index),
                                     std::to_string(policy.spec.rate_bytes),
                                     std::to_string(policy.spec.max_connections),
                                     policy.spec.tap ? "tap" : "netns"};
    if (!policy.spec.allow.empty()) args.push_back(policy.spec.allow);
    if (Status st = spawn_job(std::move(job), std::move(args)); !st.ok()) {
      FV_WARN("network: cannot start the helper: %s", st.error().message().c_str());
      return;
    }
    ++policy.preparing;
    ++namespaces_;
  }
}

void Network::give_back(Lease &lease) {
  assert(namespaces_ > 0);
  --namespaces_;
  if (shutting_down_) return;  // the node's `down` removes every namespace at once
  auto job = std::make_unique<Job>();
  job->name = lease.name_;
  if (Status st = spawn_job(std::move(job), {"release", node_, lease.name_, lease.ip_}); !st.ok())
    FV_WARN("network: cannot release namespace %s: %s (removed at stop)", lease.name_.c_str(),
            st.error().message().c_str());
}

Status Network::spawn_job(std::unique_ptr<Job> job, std::vector<std::string> args) {
  int out_fd = -1;
  auto child = spawn_helper(std::move(args), true, &out_fd);
  if (!child) return child.error();
  Job &j = *job;
  j.network = this;
  j.child = std::move(*child);
  j.out_fd = out_fd;
  j.exit_op.owner = &j;
  j.exit_op.callback = &Network::on_job_exit;
  j.deadline.owner = &j;
  j.deadline.callback = [](io::Timer &t) {
    Job &timed_out = t.owner_as<Job>();
    FV_WARN("network: the helper for %s ran past its deadline; killing it", timed_out.name.c_str());
    (void)timed_out.child.signal(SIGKILL);
  };
  ring_.poll(j.exit_op, j.child.pidfd(), POLLIN);
  timers_.start(j.deadline, monotonic_ns() + kHelperTimeoutNs);
  jobs_.emplace(&j, std::move(job));
  return {};
}

void Network::on_job_exit(io::Completion &c, int result, uint32_t) {
  Job &job = c.owner_as<Job>();
  proc::ExitStatus status;
  auto reaped = job.child.try_reap(&status);
  if (result >= 0 && reaped && !*reaped) {
    job.network->ring_.poll(job.exit_op, job.child.pidfd(), POLLIN);  // not exited yet
    return;
  }
  if (!reaped || !*reaped) {
    (void)job.child.signal(SIGKILL);
    job.child.wait();
  }
  job.network->finish(job);
}

void Network::finish(Job &job) {
  timers_.stop(job.deadline);
  std::unique_ptr<Job> owned = std::move(jobs_.at(&job));
  jobs_.erase(&job);
  const proc::ExitStatus &status = job.child.exit_status();
  bool ok = status.exited && status.code_or_signal == 0;
  if (!job.prepare) {
    if (!ok) FV_WARN("network: releasing namespace %s failed (%s)", job.name.c_str(), status.describe().c_str());
  } else {
    char buf[128] = {};
    ssize_t n = ::read(job.out_fd, buf, sizeof buf - 1);
    // "IP VETH\n"
    std::string answer(buf, n > 0 ? static_cast<size_t>(n) : 0);
    while (!answer.empty() && (answer.back() == '\n' || answer.back() == ' ')) answer.pop_back();
    size_t space = answer.find(' ');
    std::string ip = answer.substr(0, space);
    std::string veth = space == std::string::npos ? std::string() : answer.substr(space + 1);
    in_addr addr{};
    Policy *policy = find(job.policy);
    assert(policy != nullptr && policy->preparing > 0);
    --policy->preparing;
    Lease lease;
    lease.owner_ = this;
    lease.name_ = job.name;
    lease.ip_ = ip;
    if (veth.find('/') == std::string::npos && veth.find('.') == std::string::npos) lease.veth_ = veth;
    if (!ok || inet_pton(AF_INET, ip.c_str(), &addr) != 1) {
      FV_WARN("network: preparing namespace %s failed (%s)", job.name.c_str(), status.describe().c_str());
      if (ok) lease.release();  // it answered nonsense: remove what it made
      else {
        lease.owner_ = nullptr;  // it cleaned up after itself (or `down` will)
        --namespaces_;
      }
    } else if (shutting_down_) {
      lease.owner_ = nullptr;
      --namespaces_;
    } else {
      policy->ready.push_back(std::move(lease));
      if (on_ready_) on_ready_();
    }
  }
  if (shutting_down_) return;
  if (job.prepare && !ok) {
    // A helper that fails keeps failing for a while (nft gone, addresses used up): retry in
    // a second, not at once.
    retry_after_ns_ = monotonic_ns() + kRetryDelayNs;
    timers_.stop(refill_timer_);
    timers_.start(refill_timer_, retry_after_ns_);
    return;
  }
  for (auto &[key, each] : policies_) refill(each);
}

void Network::shutdown() {
  shutting_down_ = true;
  timers_.stop(refill_timer_);
  for (auto &[job, owned] : jobs_) (void)owned->child.signal(SIGKILL);
  // The exit polls complete on the ring; the node turns it until idle().
}

size_t Network::ready_count() const {
  size_t ready = 0;
  for (const auto &[allow, policy] : policies_) ready += policy.ready.size();
  return ready;
}

}  // namespace faasvisor::net
