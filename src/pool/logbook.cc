#include "pool/logbook.h"

namespace faasvisor::pool {

LogBook::~LogBook() {
  while (LogFollower *f = followers_.pop_front()) f->log_ended();
}

void LogBook::append(std::string_view instance, std::string_view text, bool cut, uint64_t realtime_ns) {
  LogEntry entry;
  entry.realtime_ns = realtime_ns;
  entry.instance = std::string(instance);
  if (text.size() > kMaxLineBytes) {
    text = text.substr(0, kMaxLineBytes);
    cut = true;
  }
  entry.text = std::string(text);
  if (cut) entry.text += kCutMark;
  bytes_ += entry.text.size() + entry.instance.size();
  entries_.push_back(std::move(entry));
  while (entries_.size() > kMaxLines || bytes_ > kMaxBytes) {
    bytes_ -= entries_.front().text.size() + entries_.front().instance.size();
    entries_.pop_front();
    ++dropped_;
  }
  // A follower may unfollow itself from inside log_line (a slow reader is dropped).
  const LogEntry &last = entries_.back();
  followers_.for_each([&](LogFollower &f) { f.log_line(last); });
}

}  // namespace faasvisor::pool
