// A function's log: the lines its instances write to stderr (or send as LOG frames), kept in
// a bounded ring, with followers that receive each new line as it arrives.
#pragma once

#include <cstdint>
#include <deque>
#include <string>
#include <string_view>

#include "util/intrusive_list.h"

namespace faasvisor::pool {

struct LogEntry {
  uint64_t realtime_ns = 0;
  std::string instance;
  std::string text;
};

class LogFollower {
 public:
  virtual void log_line(const LogEntry &entry) = 0;
  virtual void log_ended() = 0;  // the function is gone: no more lines will come
  ListHook follower_hook;

 protected:
  ~LogFollower() = default;
};

class LogBook {
 public:
  static constexpr size_t kMaxLines = 2000;
  static constexpr size_t kMaxBytes = 1u << 20;
  static constexpr size_t kMaxLineBytes = 4096;  // longer lines are cut and marked
  static constexpr std::string_view kCutMark = " [line cut]";

  LogBook() = default;
  LogBook(const LogBook &) = delete;
  LogBook &operator=(const LogBook &) = delete;
  ~LogBook();

  void append(std::string_view instance, std::string_view text, bool cut, uint64_t realtime_ns);
  const std::deque<LogEntry> &entries() const { return entries_; }
  uint64_t dropped() const { return dropped_; }  // lines pushed out of the ring

  void follow(LogFollower &f) { followers_.push_back(f); }
  void unfollow(LogFollower &f) {
    if (f.follower_hook.linked()) followers_.remove(f);
  }

 private:
  std::deque<LogEntry> entries_;
  size_t bytes_ = 0;
  uint64_t dropped_ = 0;
  IntrusiveList<LogFollower, &LogFollower::follower_hook> followers_;
};

}  // namespace faasvisor::pool
