// faasvisor: a Function-as-a-Service node on one io_uring event loop.
//
// The node is a library (docs/embedding.md). The daemon, faasvisord (src/main.cc), embeds it
// and serves its HTTP API; a load-test rig such as examples/rig embeds it to deploy and
// invoke functions in-process, driving the loop from its own. A Node owns its ring, its
// listening socket (if any), its instances and their cgroup subtree, which is its own even
// beside other Nodes in the same process. It changes nothing process-wide (signal mask,
// SIGPIPE, RLIMIT_NOFILE, stderr) unless NodeOptions asks it to.
//
// Threads: everything but request_stop() is called on the thread that drives the loop
// (run(), run_once() or poll()), and every callback runs on it.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "faasvisor/embed.h"

namespace faasvisor {

struct NodeImpl;

struct NodeOptions {
  std::string listen = "127.0.0.1:8080";     // ADDR:PORT; port 0 picks a free one; empty: no HTTP API
  uint32_t max_connections = 1024;
  uint64_t idle_timeout_ms = 60'000;         // keep-alive connections with no request; silence mid-request
  uint64_t header_timeout_ms = 10'000;       // a request's head must arrive within this of its first byte (408)
  uint64_t body_timeout_ms = 60'000;         // and its body within this of the end of the head (408)
  uint64_t shutdown_grace_ms = 10'000;       // in-flight invocations may finish this long
  uint64_t stop_grace_ms = 2'000;            // instance SIGTERM -> SIGKILL
  uint32_t max_header_bytes = 16 * 1024;     // 431 beyond
  uint64_t max_body_bytes = 6 * 1024 * 1024; // 413 beyond
  uint32_t max_queue_per_function = 1024;    // default for faasvisor.queue
  std::string stem_path;                     // faasvisor-stem; default: beside the running program
  // Where faasvisor-stem, -unpack, -adapter, -net and libfaasvisor-template.so are (an
  // embedder's program is not beside them); empty: beside the running program.
  std::string helper_dir;
  std::string image_cache_dir = "/var/lib/faasvisor/images";  // unpacked OCI images, by digest
  // Durable state (store/file_store.h): functions, secrets, scale targets, async calls, one
  // file per record, created 0700. "none" keeps them in memory only (lost on exit).
  std::string state_dir = "/var/lib/faasvisor/state";
  // "etcd://HOST:PORT[,HOST:PORT...]": records live in etcd under store_prefix, shared by
  // every node of a cluster (docs/cluster.md); empty: state_dir as above.
  std::string store;
  std::string store_prefix = "/faasvisor";
  std::string advertise;                     // ADDR:PORT other machines reach this node at; default: the bound address
  std::string unpack_path;                   // faasvisor-unpack; default: beside the running program
  // Registry images (docs/images.md): credentials as Docker's config.json, and the registries
  // (HOST:PORT) whose TLS certificate is not verified (plain HTTP ones too).
  std::string registry_auth;
  uint64_t max_image_bytes = 2ull << 30;     // POST /system/images: the largest tar taken (413 beyond)
  uint64_t image_cache_max_bytes = 0;        // unused images are evicted past this (0: never)
  std::vector<std::string> insecure_registries;
  uint32_t stem_pool_size = 64;              // sandboxes prepared ahead of cold starts (~0.6 MiB each, mostly kernel)
  uint64_t memory_budget_bytes = 0;          // instances' memory limits may not sum past it; 0: 80% of RAM
  uint64_t memory_sample_ms = 1000;          // how often instances' memory is measured
  double policy_time_scale = 1.0;            // keep-alive policies' clock: N policy seconds per real second
  // Async invocations (docs/async.md); the journal lives in STATE_DIR/async.
  uint32_t async_queue_per_function = 1024;  // default for faasvisor.async_queue: live calls, 429 beyond
  uint32_t async_concurrency = 8;            // default for faasvisor.async_concurrency: calls in the pool at once
  uint64_t async_memory_bytes = 256ull << 20;  // requests and results of live calls, all functions
  uint32_t async_callback_attempts = 5;      // then the result is dropped with a log line
  uint64_t async_callback_backoff_ms = 1000; // before the second attempt, doubling (at most 60 s)
  uint64_t async_callback_timeout_ms = 10'000;  // one attempt, connect to response head
  std::string qemu_path;                     // VM backends: empty finds qemu-system-x86_64 on PATH
  std::string vm_kernel;                     // microvm kernel; empty: BUILD/vm/vmlinux, else /boot/vmlinuz-*
  std::string accel = "auto";                // VM accelerator: auto (KVM if a probe guest runs), kvm, tcg
  // Security (docs/security.md). With basic_auth_dir (the OpenFaaS gateway's files
  // basic-auth-user and basic-auth-password), every /system/* route needs HTTP basic auth.
  std::string basic_auth_dir;
  bool protect_metrics = false;              // /metrics needs the credentials too
  bool insecure_no_auth = false;             // allow a non-loopback listen address without them
  // Host paths a deployment's image may name (after realpath); none: every host path is refused.
  std::vector<std::string> image_roots;
  // Instance networking (docs/network.md): resolv.conf's nameservers for instances with
  // faasvisor.network=egress (empty: the host's), the bridge's /24 (empty: one from the pid),
  // and faasvisor-net (empty: beside the running program).
  std::vector<std::string> dns;
  std::string network_subnet;
  std::string network_helper_path;
  bool instance_network = true;              // false: no faasvisor.network=egress (no bridge, no nft table)
  // Process-wide changes, each only when asked (faasvisord asks for all four):
  bool handle_signals = false;   // block SIGINT/SIGTERM and stop gracefully on them (signalfd)
  bool ignore_sigpipe = false;   // SIGPIPE to SIG_IGN. Without it the embedder must ignore or
                                 // handle SIGPIPE: a write to an instance that died raises it
  bool raise_fd_limit = false;   // RLIMIT_NOFILE's soft limit to the hard one
  bool print_banner = false;     // run() prints "faasvisord: listening on ..." to stderr
  unsigned ring_entries = 4096;
};

class Node {
 public:
  // Sets up the ring, the listener and the cgroup subtree. On failure returns null and
  // explains in *error.
  static std::unique_ptr<Node> create(const NodeOptions &options, std::string *error);
  ~Node();
  Node(const Node &) = delete;
  Node &operator=(const Node &) = delete;

  // The address actually bound (useful with port 0); empty without a listener.
  std::string listen_address() const;
  // This node's id, unique in the process: "node-<pid>" for the first, "node-<pid>-<n>" for
  // later ones. Its cgroup subtrees are <hierarchy>/faasvisor/<id> and its run directory
  // /run/faasvisor/<id>.
  std::string id() const;
  std::vector<std::string> cgroup_roots() const;  // empty when instances run without cgroups
  std::string run_dir() const;

  // The loop. run() turns it until the node has stopped and returns the exit code (0 on a
  // clean shutdown). run_once() turns it once, waiting for at least one completion; poll()
  // turns it once without waiting. Both return the number of completions handled. A rig
  // with its own loop calls poll(), then waits for fd() to become readable (poll(2), epoll)
  // before it calls poll() again: calls made since the last turn are submitted only by the
  // next one, so wait on fd() only right after poll() or run_once().
  int run();
  int run_once();
  int poll();
  // An eventfd, readable when the node has work for poll(); -1 if it cannot be made.
  int fd();
  bool stopped() const;
  // Starts a graceful shutdown (as SIGTERM does): in-flight invocations may finish within
  // shutdown_grace_ms, new ones get 503. Thread-safe and async-signal-safe (an eventfd).
  void request_stop();

  // Functions, as the HTTP API's routes (docs/api.md), checked as they are. A change is in
  // effect when the call returns; with a state_dir it is also written to the store (a failure
  // to make it durable is logged).
  ApiError deploy(const FunctionConfig &config);
  ApiError update(const FunctionConfig &config);
  ApiError remove(const std::string &name);
  ApiError scale(const std::string &name, uint64_t replicas);
  // Invokes `function` in-process: the same queue, limits, timeouts and statistics as
  // POST /function/NAME. On success `done` is called exactly once (see InvokeCallback); on an
  // error (no such function, no callback, the node stopping) it is not called.
  ApiError invoke(const std::string &function, InvokeRequest request, InvokeCallback done);

  NodeStats stats() const;
  // Every instance's start, READY and stop, until unsubscribed. Returns a subscription id.
  uint64_t subscribe_events(InstanceEventCallback callback);
  void unsubscribe_events(uint64_t id);
  // The log lines `function`'s instances write from now on. 0 and *error when there is no
  // such function. The subscription ends by itself when the function is deleted.
  uint64_t subscribe_logs(const std::string &function, LogCallback callback, ApiError *error);
  void unsubscribe_logs(uint64_t id);

 private:
  explicit Node(std::unique_ptr<NodeImpl> impl);
  std::unique_ptr<NodeImpl> impl_;
};

}  // namespace faasvisor
