// The async call journal: append-only segment files in STATE_DIR/async, written with group
// commit on the ring (docs/async.md).
//
// Appends go into a pending buffer. While no write is in flight, the pending buffer becomes
// the batch: one WRITE at the segment's end, then one FSYNC, and only then is every waiter
// of that batch told its record is durable. Appends made while a batch is on its way wait
// for the next one, so under load many calls share one fsync and the loop never blocks.
//
// Compaction: a segment holds the accept records of the calls appended while it was current
// and done records of any call. Once it passes segment_bytes a new one is started (created,
// directory fsynced, before anything is acknowledged in it). A segment that is not current
// and whose calls are all done is unlinked, oldest first, so a done record never outlives
// the accept it refers to being replayed: the journal holds what is pending plus at most
// one segment's worth of history.
//
// With no directory (state dir "none") nothing is written: an append is "durable" on the
// next loop turn, and a restart forgets every call.
#pragma once

#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "async/record.h"
#include "io/ring.h"
#include "util/result.h"

namespace faasvisor::async {

class JournalWaiter {
 public:
  // The record is durable in `segment` (ok), or could not be written (the call is not
  // accepted, and must not be marked done).
  virtual void journal_done(Status status, uint64_t segment) = 0;

 protected:
  ~JournalWaiter() = default;
};

struct JournalOptions {
  std::string dir;                       // empty: memory only
  uint64_t segment_bytes = 4u << 20;     // start a new segment past this
  uint32_t max_record_bytes = 16u << 20; // a bigger record found at open is damage
};

struct JournalStats {
  uint64_t batches = 0;       // fsyncs
  uint64_t records = 0;       // records made durable
  uint64_t bytes = 0;         // bytes written
  uint64_t segments_removed = 0;
  uint64_t failures = 0;      // batches that failed to write
};

struct Replay {
  struct Pending {
    CallRecord call;
    uint64_t segment;  // where its accept record is, for append_done
  };
  std::vector<Pending> pending;     // accepted and not done, oldest first
  uint32_t segments = 0;            // segments read
  std::vector<std::string> damage;  // what was found wrong, per segment (logged by the caller)
};

class Journal {
 public:
  // Opens DIR (creating it 0700), reads every segment and returns the calls still pending,
  // then starts a new segment. Blocking: call at start, before the loop runs.
  static Result<std::unique_ptr<Journal>> open(io::Ring &ring, JournalOptions options, Replay *replay);
  ~Journal();
  Journal(const Journal &) = delete;
  Journal &operator=(const Journal &) = delete;

  uint64_t next_seq() { return next_seq_++; }
  // Appends an accept record; waiter.journal_done runs from the loop, never from inside this
  // call, and names the segment for append_done.
  void append_accept(const CallRecord &call, JournalWaiter &waiter);
  // Marks a call done: a done record (nobody waits for it: if it is lost in a crash the call
  // runs again, which at-least-once allows), and the call's segment may go.
  void append_done(uint64_t seq, uint64_t segment);

  bool idle() const;
  bool durable() const { return dir_fd_ >= 0; }
  const JournalStats &stats() const { return stats_; }
  uint64_t segment_count() const { return live_.size(); }

 private:
  enum class Step { idle, write, fsync, open_segment, fsync_dir, unlink };

  Journal(io::Ring &ring, JournalOptions options);
  Status open_blocking(Replay *replay);
  static void on_step(io::Completion &c, int result, uint32_t flags);
  void kick();
  void start_batch();
  void batch_done(Status status);
  void start_rotation();
  void rotation_failed(int err);
  void fail_pending(const Status &status);
  bool start_unlink();

  io::Ring &ring_;
  JournalOptions options_;
  int dir_fd_ = -1;
  int fd_ = -1;                   // the current segment
  uint64_t segment_ = 0;          // its number
  uint64_t offset_ = 0;           // its size
  uint64_t next_seq_ = 1;
  std::map<uint64_t, uint64_t> live_;  // segment -> accept records not yet done (current included)
  std::string pending_;
  std::vector<JournalWaiter *> pending_waiters_;
  std::string batch_;             // read by the kernel while a write is in flight
  std::vector<JournalWaiter *> batch_waiters_;
  uint64_t batch_records_ = 0, pending_records_ = 0;
  size_t batch_written_ = 0;
  io::Completion op_{};
  Step step_ = Step::idle;
  std::string path_;              // read by the kernel while an open or unlink is in flight
  uint64_t unlinking_ = 0;
  int new_fd_ = -1;
  bool need_rotate_ = false;      // the segment is full, or a failed write left it suspect
  JournalStats stats_;
};

// "seg-0000000000000042.log" for segment 42; 0 if NAME is not a segment's name.
std::string segment_name(uint64_t segment);
uint64_t parse_segment_name(std::string_view name);

}  // namespace faasvisor::async
