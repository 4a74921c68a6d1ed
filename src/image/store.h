// The node's side of OCI images: at deploy time an image is resolved to its cached rootfs
// and config by the faasvisor-unpack helper (image/unpack.h), a child process watched by its
// pidfd on the ring, so unpacking (seconds for a large image) never runs on the loop. A
// deploy waits for it as a Waiter and is answered when the helper exits. Deploys of the same
// image at the same time share one helper.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "image/layout.h"
#include "io/ring.h"
#include "io/timer.h"
#include "proc/child.h"
#include "util/intrusive_list.h"

namespace faasvisor::image {

class Waiter {
 public:
  // image_fault: the image itself is unusable (missing, corrupt, malicious); otherwise the
  // node could not resolve it (helper failed to start, timed out, node shutting down).
  virtual void image_ready(Result<Resolved> &result, bool image_fault) = 0;
  bool waiting() const { return waiter_hook.linked(); }

  ListHook waiter_hook;
  void *job = nullptr;  // the Store's job this waiter is on

 protected:
  ~Waiter() = default;
};

struct StoreOptions {
  std::string cache_dir = "/var/lib/faasvisor/images";
  std::string helper_path;          // faasvisor-unpack
  uint64_t timeout_ms = 300'000;    // a helper still running after this is killed
  uint32_t max_jobs = 8;            // images being unpacked at once; more deploys get 503
  std::string registry_auth;        // registry images: Docker-style config.json, or empty
  std::vector<std::string> insecure_registries;  // HOST:PORT not TLS-verified
  // --image-cache-max: a helper that added an image evicts unused ones past this (0: never).
  // in_use lists the digests functions use now (they are never evicted).
  uint64_t cache_max_bytes = 0;
  std::function<std::vector<std::string>()> in_use;
  // A cluster (docs/cluster.md): an uploaded image ("sha256:...") missing from the cache is
  // fetched from these nodes ("HOST:PORT", asked at each resolve), with this Authorization
  // header value (the node's own credentials; empty: none), at most max_fetch_bytes. The
  // header reaches the helper in its environment (FAASVISOR_PEER_AUTHORIZATION), which
  // only root can read, not in its argv, which every user can.
  std::function<std::vector<std::string>()> peers;
  std::string peer_authorization;
  uint64_t max_fetch_bytes = 2ull << 30;
};

struct StoreStats {
  uint64_t resolved = 0;  // helper runs that answered with an image
  uint64_t unpacked = 0;  // of those, how many unpacked it (the others found it cached)
  uint64_t failed = 0;
};

class Store {
 public:
  Store(io::Ring &ring, io::TimerQueue &timers, StoreOptions options);
  ~Store();
  Store(const Store &) = delete;
  Store &operator=(const Store &) = delete;

  // Starts resolving `image` (or joins a helper already resolving it); w.image_ready runs
  // later from the loop. Fails at once, calling nothing, if no helper can be started.
  Status resolve(const std::string &image, Waiter &w);
  // POST /system/images: starts a helper that reads an OCI layout tar on its stdin (at most
  // max_bytes) into the cache and unpacks it; *stdin_fd is the pipe's write end (the
  // caller's, non-blocking: it writes the request body there as it arrives and closes it at
  // the end). w.image_ready runs once the helper exits. Never shared with other jobs.
  Status receive(uint64_t max_bytes, Waiter &w, int *stdin_fd);
  // DELETE /system/images/DIGEST: a helper takes the image out of the cache.
  Status remove(const std::string &digest, Waiter &w);
  // An upload whose body will not be complete (its client left, or sent too much): the
  // waiter is not called, and the helper is told to stop (SIGTERM: it drops what it got).
  void abort_upload(Waiter &w);
  // The waiter goes away (its client left): it is not called. The helper runs on.
  void cancel(Waiter &w);
  // Kills every helper; their waiters are answered as their exits arrive.
  void shutdown();
  bool idle() const { return jobs_.empty(); }
  size_t running() const { return jobs_.size(); }

  const StoreOptions &options() const { return options_; }
  const StoreStats &stats() const { return stats_; }

 private:
  struct Job;
  static void on_exit(io::Completion &c, int result, uint32_t flags);
  static void on_deadline(io::Timer &t);
  void finish(Job &job);
  Status start(const std::string &key, std::vector<std::string> args, int stdin_fd, Waiter &w);
  uint64_t next_upload_ = 1;

  io::Ring &ring_;
  io::TimerQueue &timers_;
  StoreOptions options_;
  StoreStats stats_;
  bool shutting_down_ = false;
  std::unordered_map<std::string, std::unique_ptr<Job>> jobs_;  // by image path
};

}  // namespace faasvisor::image
