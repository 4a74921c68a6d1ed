// One io_uring ring, driven by one thread.
//
// Every in-flight operation is a Completion embedded in the object that owns it; the SQE's
// user_data is the Completion's address. The reaper first drains the CQ into a batch and only
// then runs callbacks, so a callback never runs from inside submit and never recursively
// (TigerBeetle's io/linux.zig does the same). An owner may be freed only when none of its
// Completions is in flight: `in_flight` stays true until the callback of the last CQE that
// refers to it has started.
#pragma once

#include <liburing.h>

#include <cstdint>
#include <vector>

#include "util/result.h"

namespace faasvisor::io {

struct Completion {
  using Callback = void (*)(Completion &self, int result, uint32_t cqe_flags);

  Callback callback = nullptr;
  void *owner = nullptr;  // the object that embeds this completion
  bool in_flight = false;

  template <typename T>
  T &owner_as() { return *static_cast<T *>(owner); }
};

class Ring {
 public:
  static Result<Ring *> create(unsigned entries);
  ~Ring();
  Ring(const Ring &) = delete;
  Ring &operator=(const Ring &) = delete;

  // Operations. Each arms `c` (asserting it is idle) and queues one SQE; nothing is submitted
  // until the loop calls run_once().
  void accept_multishot(Completion &c, int listen_fd);
  // *addr is read by the kernel until the CQE: it lives in the owner.
  void connect(Completion &c, int fd, const sockaddr *addr, socklen_t addr_len);
  void recv(Completion &c, int fd, void *buf, size_t len);
  void send(Completion &c, int fd, const void *buf, size_t len);
  void read(Completion &c, int fd, void *buf, size_t len);    // pipes: offset -1
  void write(Completion &c, int fd, const void *buf, size_t len);
  void poll(Completion &c, int fd, unsigned poll_mask);
  // Files, for the durable store (store/durable.h). `path`/`buf` are read by the kernel until
  // the CQE arrives: they must live in the owner, not on the caller's stack.
  void openat(Completion &c, int dir_fd, const char *path, int flags, mode_t mode);
  void write_at(Completion &c, int fd, const void *buf, size_t len, uint64_t offset);
  void fsync(Completion &c, int fd);  // full fsync (data and metadata); works on directories
  void close_fd(Completion &c, int fd);
  void renameat(Completion &c, int old_dir_fd, const char *old_path, int new_dir_fd, const char *new_path);
  void unlinkat(Completion &c, int dir_fd, const char *path, int flags);
  // Completes (result 0) on the next loop turn: defers a continuation out of its caller.
  void nop(Completion &c);
  void timeout_abs(Completion &c, __kernel_timespec *deadline);  // *deadline read until the CQE
  void timeout_update(Completion &c, __kernel_timespec *deadline);
  // Asks the kernel to cancel every request armed with `target`. The target still gets its
  // own CQE (usually -ECANCELED); the cancel request's own CQE is ignored.
  void cancel(Completion &target);

  // Submits queued SQEs, waits for at least one CQE, then runs the callbacks of every CQE
  // reaped. Returns the number of callbacks run.
  int run_once();

  unsigned in_flight() const { return in_flight_; }
  // The ring's descriptor: readable when completions wait (an embedder's loop waits on it).
  int fd() const { return ring_.ring_fd; }

 private:
  Ring() = default;
  io_uring_sqe *get_sqe();
  void arm(Completion &c, io_uring_sqe *sqe);

  struct Reaped {
    Completion *completion;
    int result;
    uint32_t flags;
  };

  io_uring ring_{};
  bool initialised_ = false;
  unsigned in_flight_ = 0;  // CQEs still expected, for the debugger and the shutdown check
  std::vector<Reaped> batch_;
};

}  // namespace faasvisor::io
