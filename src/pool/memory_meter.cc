#include "pool/memory_meter.h"

#include <fcntl.h>
#include <unistd.h>

#include <cassert>
#include <cerrno>
#include <cstdlib>
#include <cstring>

namespace faasvisor::pool {
namespace {
constexpr size_t kMaxProcesses = 64;  // a sandbox has its init, the function and its children
}

MemoryMeter::MemoryMeter(void *owner, Done done) : owner_(owner), done_(done) {
  op_.owner = this;
  op_.callback = &MemoryMeter::on_op;
}

MemoryMeter::~MemoryMeter() {
  assert(!op_.in_flight && "memory meter freed with a read in flight");
  if (fd_ >= 0) ::close(fd_);
}

void MemoryMeter::start(io::Ring &ring, proc::MemoryFiles files) {
  if (op_.in_flight || files.empty()) return;
  ring_ = &ring;
  files_ = std::move(files);
  pids_.clear();
  next_pid_ = 0;
  pss_kb_ = 0;
  any_pss_ = false;
  have_usage_ = false;
  if (!files_.procs.empty()) open(Phase::procs, files_.procs);
  else open(Phase::usage, files_.usage);
}

void MemoryMeter::open(Phase phase, std::string path) {
  phase_ = phase;
  reading_ = false;
  path_ = std::move(path);
  ring_->openat(op_, AT_FDCWD, path_.c_str(), O_RDONLY | O_CLOEXEC, 0);
}

void MemoryMeter::on_op(io::Completion &c, int result, uint32_t) {
  auto &self = *static_cast<MemoryMeter *>(c.owner);
  if (!self.reading_) {
    if (result >= 0) {
      self.fd_ = result;
      self.reading_ = true;
      self.ring_->read(self.op_, self.fd_, self.buf_, sizeof self.buf_ - 1);
      return;
    }
    // Gone meanwhile (a process that exited, a cgroup removed) or cancelled: go on without it.
  } else {
    ::close(self.fd_);  // procfs and cgroupfs: a close that does not wait
    self.fd_ = -1;
    if (result > 0) self.parse(static_cast<size_t>(result));
  }
  if (result == -ECANCELED) return self.done_(self, false, 0);  // the instance ends
  if (self.phase_ != Phase::usage) return self.next_process();
  // The callback may free the owner, and with it this meter: nothing may follow.
  self.done_(self, self.have_usage_, self.usage_bytes_);
}

void MemoryMeter::parse(size_t len) {
  buf_[len] = '\0';
  switch (phase_) {
    case Phase::procs: {
      char *p = buf_;
      while (pids_.size() < kMaxProcesses) {
        char *end = nullptr;
        long pid = std::strtol(p, &end, 10);
        if (end == p) break;
        if (pid > 0) pids_.push_back(static_cast<int>(pid));
        p = end;
      }
      break;
    }
    case Phase::rollup: {
      const char *at = std::strstr(buf_, "\nPss:");
      if (at == nullptr) break;
      pss_kb_ += std::strtoull(at + 5, nullptr, 10);
      any_pss_ = true;
      break;
    }
    case Phase::usage: {
      char *end = nullptr;
      usage_bytes_ = std::strtoull(buf_, &end, 10);
      have_usage_ = end != buf_;
      break;
    }
  }
}

void MemoryMeter::next_process() {
  if (next_pid_ < pids_.size()) {
    open(Phase::rollup, "/proc/" + std::to_string(pids_[next_pid_++]) + "/smaps_rollup");
    return;
  }
  if (any_pss_) return done_(*this, true, pss_kb_ * 1024);
  if (!files_.usage.empty()) return open(Phase::usage, files_.usage);
  done_(*this, false, 0);
}

}  // namespace faasvisor::pool
