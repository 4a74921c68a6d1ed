// Coarse timers (idle keep-alive, boot deadline, invocation deadline, stop grace) share one
// binary heap ticked by a single io_uring timeout armed for the earliest deadline
// (STYLE.md 4). A Timer is embedded in its owner; the owner cancels it before it goes away.
#pragma once

#include <cstdint>
#include <vector>

#include "io/ring.h"

namespace faasvisor::io {

class TimerQueue;

struct Timer {
  using Callback = void (*)(Timer &self);

  Callback callback = nullptr;
  void *owner = nullptr;
  uint64_t deadline_ns = 0;
  size_t heap_index = kUnarmed;

  static constexpr size_t kUnarmed = SIZE_MAX;
  bool armed() const { return heap_index != kUnarmed; }
  template <typename T>
  T &owner_as() { return *static_cast<T *>(owner); }

  Timer() = default;
  Timer(const Timer &) = delete;
  Timer &operator=(const Timer &) = delete;
  ~Timer();
};

// The queue keeps no clock: run_expired(now_ns) is told the time. With a ring, the kernel
// timeout runs it at monotonic_ns(); without one, the owner calls run_expired() itself, so
// tests drive the queue in virtual time.
class TimerQueue {
 public:
  // ring may be null: then nothing is armed and the owner calls run_expired() itself
  // (virtual-time tests).
  explicit TimerQueue(Ring *ring);
  ~TimerQueue();

  void start(Timer &t, uint64_t deadline_ns);  // re-arms if already armed
  void start_after(Timer &t, uint64_t delay_ns, uint64_t now_ns) { start(t, now_ns + delay_ns); }
  void stop(Timer &t);
  size_t size() const { return heap_.size(); }
  uint64_t next_deadline_ns() const { return heap_.empty() ? UINT64_MAX : heap_[0]->deadline_ns; }

  // Runs the callbacks of every timer due at now_ns. A callback may start or stop timers.
  void run_expired(uint64_t now_ns);

  // Makes sure the ring's single timeout is armed no later than the earliest deadline.
  // Called by the loop once per iteration, after callbacks.
  void sync_kernel_timeout();

 private:
  static void on_kernel_timeout(Completion &c, int result, uint32_t flags);
  void sift_up(size_t i);
  void sift_down(size_t i);
  void swap_nodes(size_t a, size_t b);
  void remove_at(size_t i);

  Ring *ring_;
  std::vector<Timer *> heap_;
  Completion kernel_timeout_{};
  __kernel_timespec armed_at_{};  // read by the kernel while kernel_timeout_ is in flight
  uint64_t armed_deadline_ns_ = UINT64_MAX;
};

}  // namespace faasvisor::io
