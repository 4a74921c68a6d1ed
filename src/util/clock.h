#pragma once

#include <cstdint>
#include <ctime>

namespace faasvisor {

// Monotonic nanoseconds: every duration in the node is measured with this clock.
inline uint64_t monotonic_ns() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1'000'000'000ull + static_cast<uint64_t>(ts.tv_nsec);
}

// The clock the scheduler (pool::Pool, pool::Instance) and its timer queue read: the node's
// monotonic clock in production, a virtual one in the seeded simulation (tests/sim/).
class Clock {
 public:
  virtual uint64_t now_ns() const = 0;

 protected:
  ~Clock() = default;
};

class MonotonicClock final : public Clock {
 public:
  uint64_t now_ns() const override { return monotonic_ns(); }
  static const MonotonicClock &instance() {
    static const MonotonicClock clock;
    return clock;
  }
};

inline uint64_t realtime_ns() {
  timespec ts{};
  clock_gettime(CLOCK_REALTIME, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1'000'000'000ull + static_cast<uint64_t>(ts.tv_nsec);
}

}  // namespace faasvisor
