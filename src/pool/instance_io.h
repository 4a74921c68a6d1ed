// What an Instance does to the outside world besides asking its backend: I/O on the streams
// a backend launched, watching and reaping the launched process, signalling it. In the node
// this is the ring and the pidfd (RingInstanceIo); in the seeded simulation (tests/sim/,
// docs/simulation.md) it is a virtual-time model of the instance. The contract is the
// ring's: an operation arms its Completion, which completes exactly once, never from inside
// the call that armed it; cancel asks for an early completion (usually -ECANCELED).
#pragma once

#include <cstddef>

#include "backend/backend.h"
#include "io/ring.h"
#include "proc/child.h"

namespace faasvisor::pool {

class InstanceIo {
 public:
  virtual ~InstanceIo() = default;
  virtual void read(io::Completion &c, int fd, void *buf, size_t len) = 0;
  // buf is read until the completion arrives: it lives in the owner.
  virtual void write(io::Completion &c, int fd, const void *buf, size_t len) = 0;
  // Completes once the launched process may have exited (try_reap tells).
  virtual void watch_exit(io::Completion &c, const backend::Launched &launched) = 0;
  virtual void cancel(io::Completion &c) = 0;
  virtual Status signal(backend::Launched &launched, int signo) = 0;
  // Non-blocking reap: true and *status once the process has exited.
  virtual Result<bool> try_reap(backend::Launched &launched, proc::ExitStatus *status) = 0;
  // Closes one of the launched streams (an fd the backend made).
  virtual void close_stream(int fd) = 0;
  // The ring, for work this interface does not cover (the memory meter's file reads), or
  // none: the simulation has no ring, and memory comes from its backend's memory_usage().
  virtual io::Ring *ring() { return nullptr; }
};

// The node's: the ring, the pidfd, close(2).
class RingInstanceIo final : public InstanceIo {
 public:
  explicit RingInstanceIo(io::Ring &ring) : ring_(ring) {}
  void read(io::Completion &c, int fd, void *buf, size_t len) override { ring_.read(c, fd, buf, len); }
  void write(io::Completion &c, int fd, const void *buf, size_t len) override { ring_.write(c, fd, buf, len); }
  void watch_exit(io::Completion &c, const backend::Launched &launched) override;
  void cancel(io::Completion &c) override { ring_.cancel(c); }
  Status signal(backend::Launched &launched, int signo) override { return launched.child.signal(signo); }
  Result<bool> try_reap(backend::Launched &launched, proc::ExitStatus *status) override {
    return launched.child.try_reap(status);
  }
  void close_stream(int fd) override;
  io::Ring *ring() override { return &ring_; }

 private:
  io::Ring &ring_;
};

}  // namespace faasvisor::pool
