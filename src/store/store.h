// The node's durable state: a narrow key-value interface, (kind, key) -> bytes.
//
// Everything the node must remember across a restart (functions, secrets, scale targets,
// accepted async calls) is a record. The interface is small on purpose so that a cluster can
// later put etcd behind it: put and remove complete asynchronously with done(Status), which
// runs on the loop once the change is durable (or has failed); load_all reads every record
// once, at start, before the node serves.
//
// Implementations: FileStore (store/file_store.h: one file per record under --state-dir,
// written with temp file + fsync + rename + directory fsync on the ring) and MemoryStore
// (below: --state-dir none, nothing survives the process; for tests and the "without a
// store" benchmark).
//
// Contract, for every implementation:
// - put/remove return an error at once (bad kind or key, too many writes queued, store closed)
//   and then never call `done`; or they return ok and call `done` exactly once, later, from the
//   loop (never from inside put/remove), so a caller may answer its client in `done`.
// - Changes to the same (kind, key) become durable in the order they were issued: after
//   put(k, a), put(k, b) the record is b once both are done, whatever the timing. Changes to
//   different keys are independent (no ordering, no transactions).
// - Once done(ok) has run, the change survives kill -9 and power loss (as far as fsync
//   does). Before that, after a crash the record is either the old value or the new one,
//   never a mixture.
// - `done` may call put/remove again.
// - The caller keeps whatever `done` refers to alive, or makes `done` check (a weak
//   pointer, a sequence number): the store does not know the caller's lifetimes.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "io/ring.h"
#include "util/result.h"

namespace faasvisor::store {

// The kinds in use. A kind is [a-z][a-z0-9_]{0,31}; implementations accept exactly the kinds
// they were opened with (FileStore makes one directory per kind).
namespace kind {
inline constexpr std::string_view function = "function";  // key: function name; value: store/records.h
inline constexpr std::string_view secret = "secret";      // key: secret name; value: the raw secret bytes
inline constexpr std::string_view scale = "scale";        // key: function name; value: replicas asked for
inline constexpr std::string_view call = "call";          // key: async call id; value: the call
}  // namespace kind
std::vector<std::string> default_kinds();  // all of the above

// A key is 1-200 bytes of [A-Za-z0-9_.-] and does not start with '.': it is a file name in
// FileStore and an etcd key segment elsewhere, with nothing to escape. Function names,
// secret names (Kubernetes DNS names) and hex call ids all qualify.
bool valid_key(std::string_view key);
bool valid_kind(std::string_view kind);

struct Record {
  std::string kind;
  std::string key;
  std::string value;
};

struct LoadReport {
  std::vector<Record> records;   // every readable record, in no particular order
  uint32_t skipped = 0;          // corrupt records (logged by the store, left in place)
  uint32_t temp_removed = 0;     // half-written temp files from a crash, removed
};

using Done = std::function<void(Status)>;

struct StoreStats {
  uint64_t puts = 0, removes = 0, failed = 0;  // completed changes
  uint64_t queued_now = 0;                     // changes issued and not yet done
  uint64_t refused = 0;                        // put/remove refused with EAGAIN (queue full)
};

// Changes made by other nodes to a store they share with this one (EtcdStore), delivered
// on the loop in the shared store's order. A change this node made itself is not delivered
// back. The listener compares with what it has: a delivery may repeat the current value
// (after a reconnect, the store re-reads everything).
struct ChangeListener {
  virtual void record_put(const Record &rec) = 0;
  virtual void record_removed(std::string_view kind, std::string_view key) = 0;

 protected:
  ~ChangeListener() = default;
};

class Store {
 public:
  virtual ~Store() = default;

  // Reads every record. Called at start, before the loop serves anything; may block
  // (nothing else runs yet) but must be fast: 1,000 records in a few milliseconds. Each call
  // reads everything again (the node calls it once, in NodeImpl::restore_state, and hands
  // each kind to its subsystem there).
  virtual Result<LoadReport> load_all() = 0;

  // Makes (kind, key) = value durable, then calls done(ok); done(error) if it could not.
  virtual Status put(std::string_view kind, std::string_view key, std::string value, Done done) = 0;
  // Makes the absence of (kind, key) durable. Removing a missing record is ok.
  virtual Status remove(std::string_view kind, std::string_view key, Done done) = 0;

  // No change in flight: the node waits for this before it exits.
  virtual bool idle() const = 0;
  // A put/remove now would be refused with EAGAIN: callers that must not change anything
  // they cannot make durable ask first.
  virtual bool full() const = 0;
  // Whether done(ok) means "survives a crash" (false for MemoryStore).
  virtual bool durable() const = 0;
  // For logs and /system/info: "file:/var/lib/faasvisor/state" or "memory".
  virtual std::string describe() const = 0;
  virtual const StoreStats &stats() const = 0;

  // A store shared with other nodes delivers their changes from now on (after load_all).
  // Local stores have nothing to deliver.
  virtual void watch(ChangeListener &) {}
  // Why no change can be made durable now (the shared store is unreachable), or empty: the
  // node answers changes 503 with this instead of changing anything.
  virtual std::string unavailable() const { return {}; }
  // The other nodes sharing this store (their membership names, "HOST:PORT": where they
  // serve), as last seen; empty for local stores. Peers an image may be fetched from.
  virtual std::vector<std::string> peers() const { return {}; }
  // Stops background work (watches, membership) when the node begins to shut down (changes
  // already issued complete; new ones are refused); idle() then turns true once nothing is
  // in flight. Called again before the node is destroyed.
  virtual void close() {}
};

// --state-dir none: records live in this process only. done runs on the next loop turn (a
// ring NOP), so callers see the same asynchrony as with a real store.
class MemoryStore final : public Store {
 public:
  MemoryStore(io::Ring &ring, std::vector<std::string> kinds = default_kinds());
  ~MemoryStore() override;

  Result<LoadReport> load_all() override;
  Status put(std::string_view kind, std::string_view key, std::string value, Done done) override;
  Status remove(std::string_view kind, std::string_view key, Done done) override;
  bool idle() const override { return pending_.empty() && !nop_.in_flight; }
  bool full() const override { return false; }
  bool durable() const override { return false; }
  std::string describe() const override { return "memory"; }
  const StoreStats &stats() const override { return stats_; }

 private:
  static void on_nop(io::Completion &c, int result, uint32_t flags);
  Status check(std::string_view kind, std::string_view key) const;

  io::Ring &ring_;
  std::vector<std::string> kinds_;
  std::map<std::pair<std::string, std::string>, std::string> records_;
  std::vector<std::pair<Done, bool>> pending_;  // (done, was a remove)
  io::Completion nop_{};
  StoreStats stats_;
};

}  // namespace faasvisor::store
