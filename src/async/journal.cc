#include "async/journal.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cassert>
#include <cinttypes>
#include <cstdio>
#include <set>
#include <unordered_map>

#include "util/log.h"

namespace faasvisor::async {
namespace {

Status make_dirs(const std::string &dir) {
  // Parents 0755, the journal's own directory 0700 (it holds request bodies).
  for (size_t pos = 1; pos <= dir.size(); ++pos) {
    if (pos != dir.size() && dir[pos] != '/') continue;
    std::string part = dir.substr(0, pos);
    mode_t mode = pos == dir.size() ? 0700 : 0755;
    if (mkdir(part.c_str(), mode) != 0 && errno != EEXIST) return errno_error("creating the async journal directory");
  }
  return {};
}

Result<std::string> read_file(int dir_fd, const std::string &name) {
  int fd = openat(dir_fd, name.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return errno_error("opening a journal segment");
  std::string data;
  char buf[1 << 16];
  for (;;) {
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      int err = errno;
      ::close(fd);
      return errno_error("reading a journal segment", err);
    }
    if (n == 0) break;
    data.append(buf, static_cast<size_t>(n));
  }
  ::close(fd);
  return data;
}

}  // namespace

std::string segment_name(uint64_t segment) {
  char name[40];
  std::snprintf(name, sizeof name, "seg-%016" PRIu64 ".log", segment);
  return name;
}

uint64_t parse_segment_name(std::string_view name) {
  if (name.size() != 24 || name.substr(0, 4) != "seg-" || name.substr(20) != ".log") return 0;
  uint64_t n = 0;
  for (char c : name.substr(4, 16)) {
    if (c < '0' || c > '9') return 0;
    n = n * 10 + static_cast<uint64_t>(c - '0');
  }
  return n;
}

Journal::Journal(io::Ring &ring, JournalOptions options) : ring_(ring), options_(std::move(options)) {
  op_.owner = this;
  op_.callback = &Journal::on_step;
}

Journal::~Journal() {
  assert(!op_.in_flight && "journal destroyed with an operation in flight");
  if (fd_ >= 0) ::close(fd_);
  if (new_fd_ >= 0) ::close(new_fd_);
  if (dir_fd_ >= 0) ::close(dir_fd_);
}

Result<std::unique_ptr<Journal>> Journal::open(io::Ring &ring, JournalOptions options, Replay *replay) {
  std::unique_ptr<Journal> j(new Journal(ring, std::move(options)));
  if (!j->options_.dir.empty()) {
    if (Status st = j->open_blocking(replay); !st.ok()) return st.error();
  }
  return j;
}

Status Journal::open_blocking(Replay *replay) {
  if (Status st = make_dirs(options_.dir); !st.ok()) return st;
  dir_fd_ = ::open(options_.dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dir_fd_ < 0) return errno_error("opening the async journal directory");
  std::vector<uint64_t> segments;
  if (DIR *d = fdopendir(dup(dir_fd_))) {
    while (dirent *e = readdir(d))
      if (uint64_t n = parse_segment_name(e->d_name); n != 0) segments.push_back(n);
    closedir(d);
  }
  std::sort(segments.begin(), segments.end());

  // Every accept, then every done record: a done record may sit in a later segment than its
  // accept. What is accepted and not done is pending.
  std::vector<Replay::Pending> accepted;
  std::set<uint64_t> done;
  uint64_t max_seq = 0;
  for (uint64_t seg : segments) {
    auto bytes = read_file(dir_fd_, segment_name(seg));
    if (!bytes) return bytes.error();
    DecodedSegment dec = decode_segment(*bytes, options_.max_record_bytes);
    if (!dec.damage.empty()) replay->damage.push_back(segment_name(seg) + ": " + dec.damage);
    for (CallRecord &c : dec.accepted) {
      max_seq = std::max(max_seq, c.seq);
      accepted.push_back({std::move(c), seg});
    }
    for (uint64_t s : dec.done) {
      max_seq = std::max(max_seq, s);
      done.insert(s);
    }
    live_[seg] = 0;
    ++replay->segments;
  }
  std::set<uint64_t> seen;
  for (Replay::Pending &p : accepted) {
    // The same seq twice can only be a call carried over by hand; run it once.
    if (done.count(p.call.seq) != 0 || !seen.insert(p.call.seq).second) continue;
    ++live_[p.segment];
    replay->pending.push_back(std::move(p));
  }
  std::sort(replay->pending.begin(), replay->pending.end(),
            [](const Replay::Pending &a, const Replay::Pending &b) { return a.call.seq < b.call.seq; });
  next_seq_ = max_seq + 1;

  // Segments with nothing pending are history: remove them now, oldest first, stopping at
  // the first that still holds a pending call (later ones may hold its done records... of
  // other calls, which must not come back).
  for (auto it = live_.begin(); it != live_.end() && it->second == 0;) {
    if (unlinkat(dir_fd_, segment_name(it->first).c_str(), 0) != 0 && errno != ENOENT)
      return errno_error("removing a finished journal segment");
    ++stats_.segments_removed;
    it = live_.erase(it);
  }

  // Appends go to a fresh segment: whatever a crash left at the end of the last one stays
  // behind the point where decoding stopped.
  segment_ = segments.empty() ? 1 : segments.back() + 1;
  fd_ = openat(dir_fd_, segment_name(segment_).c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd_ < 0) return errno_error("creating a journal segment");
  if (fsync(dir_fd_) != 0) return errno_error("fsync of the async journal directory");
  live_[segment_] = 0;
  return {};
}

void Journal::append_accept(const CallRecord &call, JournalWaiter &waiter) {
  if (durable()) encode_accept(pending_, call);
  ++pending_records_;
  pending_waiters_.push_back(&waiter);
  kick();
}

void Journal::append_done(uint64_t seq, uint64_t segment) {
  if (!durable()) return;
  auto it = live_.find(segment);
  assert(it != live_.end() && it->second > 0);
  --it->second;
  encode_done(pending_, seq);
  ++pending_records_;
  kick();
}

bool Journal::idle() const { return step_ == Step::idle && pending_waiters_.empty() && !op_.in_flight; }

void Journal::kick() {
  if (step_ != Step::idle) return;
  if (durable() && need_rotate_) return start_rotation();
  if (durable() && start_unlink()) return;
  if (pending_records_ > 0) start_batch();
}

void Journal::start_batch() {
  batch_.swap(pending_);
  pending_.clear();
  batch_waiters_.swap(pending_waiters_);
  pending_waiters_.clear();
  batch_records_ = pending_records_;
  pending_records_ = 0;
  batch_written_ = 0;
  step_ = Step::write;
  if (!durable()) {
    ring_.nop(op_);  // "durable" on the next loop turn, never from inside append
    return;
  }
  ring_.write_at(op_, fd_, batch_.data(), batch_.size(), offset_);
}

bool Journal::start_unlink() {
  auto oldest = live_.begin();
  if (oldest == live_.end() || oldest->first == segment_ || oldest->second != 0) return false;
  unlinking_ = oldest->first;
  path_ = segment_name(unlinking_);
  step_ = Step::unlink;
  ring_.unlinkat(op_, dir_fd_, path_.c_str(), 0);
  return true;
}

void Journal::start_rotation() {
  step_ = Step::open_segment;
  path_ = segment_name(segment_ + 1);
  ring_.openat(op_, dir_fd_, path_.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
}

void Journal::on_step(io::Completion &c, int result, uint32_t) {
  auto &j = c.owner_as<Journal>();
  switch (j.step_) {
    case Step::write:
      if (!j.durable()) return j.batch_done({});
      if (result < 0) return j.batch_done(errno_error("writing the async journal", -result));
      j.batch_written_ += static_cast<size_t>(result);
      if (result == 0) return j.batch_done(plain_error("writing the async journal", "no progress"));
      if (j.batch_written_ < j.batch_.size()) {
        j.ring_.write_at(j.op_, j.fd_, j.batch_.data() + j.batch_written_, j.batch_.size() - j.batch_written_,
                         j.offset_ + j.batch_written_);
        return;
      }
      j.step_ = Step::fsync;
      j.ring_.fsync(j.op_, j.fd_);
      return;
    case Step::fsync:
      if (result < 0) return j.batch_done(errno_error("fsync of the async journal", -result));
      return j.batch_done({});
    case Step::open_segment:
      if (result < 0) return j.rotation_failed(-result);
      j.new_fd_ = result;
      j.step_ = Step::fsync_dir;
      j.ring_.fsync(j.op_, j.dir_fd_);
      return;
    case Step::fsync_dir:
      if (result < 0) {
        ::close(j.new_fd_);
        j.new_fd_ = -1;
        unlinkat(j.dir_fd_, j.path_.c_str(), 0);  // empty and never acknowledged
        return j.rotation_failed(-result);
      }
      ::close(j.fd_);
      j.fd_ = j.new_fd_;
      j.new_fd_ = -1;
      ++j.segment_;
      j.offset_ = 0;
      j.live_[j.segment_] = 0;
      j.need_rotate_ = false;
      j.step_ = Step::idle;
      return j.kick();
    case Step::unlink:
      if (result < 0 && result != -ENOENT)
        FV_WARN("async journal: removing %s: %s (left in place)", j.path_.c_str(), std::strerror(-result));
      ++j.stats_.segments_removed;
      j.live_.erase(j.unlinking_);
      j.step_ = Step::idle;
      return j.kick();
    case Step::idle: break;
  }
  assert(false && "journal completion with no step");
}

void Journal::batch_done(Status status) {
  step_ = Step::idle;
  if (status.ok()) {
    offset_ += batch_.size();
    ++stats_.batches;
    stats_.records += batch_records_;
    stats_.bytes += batch_.size();
    if (durable()) live_[segment_] += batch_waiters_.size();  // one accept per waiter
    if (durable() && offset_ >= options_.segment_bytes) need_rotate_ = true;
  } else {
    // What reached the file is unknown: nothing more goes after it (decoding would stop at
    // the damage and lose what follows). Later appends go to a new segment.
    ++stats_.failures;
    need_rotate_ = true;
    FV_ERROR("async journal: %s", status.error().message().c_str());
  }
  std::vector<JournalWaiter *> waiters;
  waiters.swap(batch_waiters_);
  batch_.clear();
  if (batch_.capacity() > (1u << 20)) std::string().swap(batch_);
  // Waiters may append (a call that finishes at once marks itself done): those records wait
  // for the next batch, which kick() starts once every waiter has heard.
  step_ = Step::idle;
  uint64_t segment = segment_;  // rotation, if due, starts only in kick()
  for (JournalWaiter *w : waiters) w->journal_done(status, segment);
  kick();
}

void Journal::rotation_failed(int err) {
  step_ = Step::idle;
  Status st = errno_error("starting a new async journal segment", err);
  FV_ERROR("async journal: %s", st.error().message().c_str());
  // Nothing can be made durable now: refuse what waits (the clients get 503); the next
  // append tries again (not before: a full disk would spin).
  fail_pending(st);
}

void Journal::fail_pending(const Status &status) {
  std::vector<JournalWaiter *> waiters;
  waiters.swap(pending_waiters_);
  pending_.clear();
  pending_records_ = 0;
  for (JournalWaiter *w : waiters) w->journal_done(status, segment_);
}

}  // namespace faasvisor::async
