#include "store/durable.h"

#include <fcntl.h>

#include <cassert>
#include <cerrno>

namespace faasvisor::store {

std::string temp_name_for(const std::string &name) { return "." + name + ".tmp"; }

DurableOp::DurableOp() {
  op_.owner = this;
  op_.callback = &DurableOp::on_step;
}

DurableOp::~DurableOp() { assert(!busy() && !op_.in_flight && "DurableOp freed while in flight"); }

void DurableOp::begin(io::Ring &ring, int dir_fd, std::string name, Step first) {
  assert(!busy());
  assert(callback != nullptr);
  assert(!name.empty() && name[0] != '.' && name.find('/') == std::string::npos);
  ring_ = &ring;
  dir_fd_ = dir_fd;
  name_ = std::move(name);
  written_ = 0;
  error_ = {};
  step_ = first;
}

void DurableOp::write(io::Ring &ring, int dir_fd, std::string name, std::string data) {
  begin(ring, dir_fd, std::move(name), Step::open);
  temp_name_ = temp_name_for(name_);
  data_ = std::move(data);
  ring.openat(op_, dir_fd, temp_name_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
}

void DurableOp::remove(io::Ring &ring, int dir_fd, std::string name) {
  begin(ring, dir_fd, std::move(name), Step::unlink);
  data_.clear();
  ring.unlinkat(op_, dir_fd, name_.c_str(), 0);
}

void DurableOp::on_step(io::Completion &c, int result, uint32_t) {
  c.owner_as<DurableOp>().advance(result);
}

void DurableOp::fail(int err, const char *context) {
  error_ = errno_error(context, err);
  if (file_fd_ >= 0) {
    step_ = Step::cleanup_close;
    ring_->close_fd(op_, file_fd_);
    file_fd_ = -1;
    return;
  }
  if (step_ == Step::write || step_ == Step::fsync || step_ == Step::close || step_ == Step::rename) {
    step_ = Step::cleanup_unlink;
    ring_->unlinkat(op_, dir_fd_, temp_name_.c_str(), 0);
    return;
  }
  finish(error_);
}

void DurableOp::advance(int result) {
  switch (step_) {
    case Step::open:
      if (result < 0) return fail(-result, "open temp record");
      file_fd_ = result;
      step_ = Step::write;
      return write_rest();
    case Step::write:
      if (result <= 0) return fail(result < 0 ? -result : EIO, "write record");
      written_ += static_cast<size_t>(result);
      return write_rest();
    case Step::fsync:
      if (result < 0) return fail(-result, "fsync record");
      step_ = Step::close;
      ring_->close_fd(op_, file_fd_);
      file_fd_ = -1;
      return;
    case Step::close:
      if (result < 0) return fail(-result, "close record");
      step_ = Step::rename;
      ring_->renameat(op_, dir_fd_, temp_name_.c_str(), dir_fd_, name_.c_str());
      return;
    case Step::rename:
      if (result < 0) return fail(-result, "rename record");
      step_ = Step::fsync_dir;
      ring_->fsync(op_, dir_fd_);
      return;
    case Step::unlink:
      if (result < 0 && result != -ENOENT) return fail(-result, "unlink record");
      step_ = Step::fsync_dir;
      ring_->fsync(op_, dir_fd_);
      return;
    case Step::fsync_dir:
      if (result < 0) return fail(-result, "fsync state directory");
      return finish(Status{});
    case Step::cleanup_close:
      // The temp file may have been written in part: remove it (best effort).
      step_ = Step::cleanup_unlink;
      ring_->unlinkat(op_, dir_fd_, temp_name_.c_str(), 0);
      return;
    case Step::cleanup_unlink:
      return finish(error_);
    case Step::idle:
      break;
  }
  assert(false && "DurableOp completion while idle");
}

void DurableOp::write_rest() {
  if (written_ < data_.size())
    return ring_->write_at(op_, file_fd_, data_.data() + written_, data_.size() - written_, written_);
  step_ = Step::fsync;
  ring_->fsync(op_, file_fd_);
}

void DurableOp::finish(Status status) {
  step_ = Step::idle;
  data_.clear();
  data_.shrink_to_fit();
  callback(*this, std::move(status));  // may free this
}

}  // namespace faasvisor::store
