// The local durable store: one file per record, DIR/KIND/KEY, each written by a DurableOp
// (temp file, fsync, rename, directory fsync, all on the ring).
//
// A record file is a 12-byte header, "FVR1", the payload length (u32, little endian) and the
// CRC-32 of the payload, then the payload. load_all skips (and logs) a file whose header,
// length or checksum is wrong, so a record damaged outside the node's control is never
// mistaken for a good one; a crash cannot produce one (the rename publishes only complete
// files). Files whose names start with '.' are temp files of writes a crash interrupted:
// load_all removes them.
//
// DIR is created 0700 (parents 0755) and locked with flock(DIR/lock): a second node on the
// same directory fails to open it instead of corrupting it.
//
// At most max_in_flight changes run at once; further ones wait in FIFO order, up to
// max_queued, and put/remove beyond that fail with EAGAIN (the caller answers 503).
// Changes to one key run one after another (they share the temp name), in issue order.
#pragma once

#include <cstdint>
#include <deque>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "store/durable.h"
#include "store/store.h"

namespace faasvisor::store {

struct FileStoreOptions {
  std::string dir = "/var/lib/faasvisor/state";
  std::vector<std::string> kinds = default_kinds();
  uint32_t max_in_flight = 32;   // durable changes running at once
  uint32_t max_queued = 4096;    // changes issued and not done (running ones included)
  uint32_t max_record_bytes = 16u << 20;  // bigger values are refused (EFBIG), bigger files skipped at load
};

class FileStore final : public Store {
 public:
  // Creates DIR and its kind directories if needed and takes the lock. Blocking: call at
  // start, before the loop runs.
  static Result<std::unique_ptr<FileStore>> open(io::Ring &ring, FileStoreOptions options);
  ~FileStore() override;

  Result<LoadReport> load_all() override;
  Status put(std::string_view kind, std::string_view key, std::string value, Done done) override;
  Status remove(std::string_view kind, std::string_view key, Done done) override;
  bool idle() const override { return stats_.queued_now == 0; }
  bool full() const override { return stats_.queued_now >= options_.max_queued; }
  bool durable() const override { return true; }
  std::string describe() const override { return "file:" + options_.dir; }
  const StoreStats &stats() const override { return stats_; }

  // The on-disk encoding, exposed for tests and tools.
  static std::string encode(std::string_view payload);
  // The payload, or an error saying what is wrong with the file's bytes.
  static Result<std::string> decode(std::string_view file_bytes);

 private:
  struct Change;
  struct Chain;  // the changes of one (kind, key), oldest first; the first is running or waiting
  FileStore(io::Ring &ring, FileStoreOptions options);
  Status issue(std::string_view kind, std::string_view key, bool is_remove, std::string value, Done done);
  void start(Chain &chain);
  void start_waiting();
  static void on_durable(DurableOp &op, Status status);

  io::Ring &ring_;
  FileStoreOptions options_;
  int dir_fd_ = -1;
  int lock_fd_ = -1;
  std::vector<int> kind_fds_;  // parallel to options_.kinds
  std::unordered_map<std::string, std::unique_ptr<Chain>> chains_;  // by "kind/key"
  std::deque<Chain *> waiting_;  // chains whose first change waits for a slot
  uint32_t in_flight_ = 0;
  StoreStats stats_;
};

}  // namespace faasvisor::store
