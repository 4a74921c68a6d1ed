// One durable file change on the ring, never blocking the loop:
//
//   write:  openat DIR/.NAME.tmp (O_CREAT|O_TRUNC, 0600) -> write (all of it) -> fsync ->
//           close -> renameat over DIR/NAME -> fsync DIR
//   remove: unlinkat DIR/NAME (ENOENT is fine) -> fsync DIR
//
// Each step is one SQE; its completion starts the next (a small state machine in an object
// the caller owns, STYLE.md 3). A crash at any point leaves NAME either old or new: the
// rename is atomic and happens only after the new bytes are on disk, and the directory
// fsync makes the rename itself durable before `callback` reports success. A crash can
// leave DIR/.NAME.tmp behind; whoever reads DIR ignores and removes names starting with '.'.
//
// On failure after the temp file was created, the op closes it and unlinks it before it
// reports the error (the first error is the one reported).
//
// Usage (embed it; the owner must outlive the op: do not free while busy()):
//   DurableOp op; op.owner = this; op.callback = &Owner::on_durable;
//   op.write(ring, dir_fd, "name", std::move(bytes));
//   ... later, on the loop: on_durable(op, status)
// The async call journal and the FileStore both build on it. Concurrent ops on the same
// NAME in the same DIR must be serialised by the caller (they share the temp name).
#pragma once

#include <string>

#include "io/ring.h"
#include "util/result.h"

namespace faasvisor::store {

class DurableOp {
 public:
  using Callback = void (*)(DurableOp &op, Status status);

  DurableOp();
  ~DurableOp();
  DurableOp(const DurableOp &) = delete;
  DurableOp &operator=(const DurableOp &) = delete;

  // `dir_fd` is an O_DIRECTORY fd that stays open until the callback has run. `name` is a
  // plain file name (no '/'), not starting with '.'.
  void write(io::Ring &ring, int dir_fd, std::string name, std::string data);
  void remove(io::Ring &ring, int dir_fd, std::string name);
  bool busy() const { return step_ != Step::idle; }
  const std::string &name() const { return name_; }

  void *owner = nullptr;
  Callback callback = nullptr;
  template <typename T>
  T &owner_as() { return *static_cast<T *>(owner); }

 private:
  enum class Step { idle, open, write, fsync, close, rename, unlink, fsync_dir, cleanup_close, cleanup_unlink };
  void begin(io::Ring &ring, int dir_fd, std::string name, Step first);
  static void on_step(io::Completion &c, int result, uint32_t flags);
  void advance(int result);
  void write_rest();
  void fail(int err, const char *context);
  void finish(Status status);

  io::Ring *ring_ = nullptr;
  io::Completion op_{};
  Step step_ = Step::idle;
  int dir_fd_ = -1;
  int file_fd_ = -1;
  std::string name_, temp_name_;  // read by the kernel while an open/rename/unlink is in flight
  std::string data_;              // read by the kernel while a write is in flight
  size_t written_ = 0;
  Error error_{};
};

// The temp name a DurableOp uses for NAME: ".NAME.tmp".
std::string temp_name_for(const std::string &name);

}  // namespace faasvisor::store
