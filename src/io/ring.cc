#include "io/ring.h"

#include <poll.h>

#include <cassert>
#include <cerrno>

#include "util/log.h"

namespace faasvisor::io {

Result<Ring *> Ring::create(unsigned entries) {
  auto *ring = new Ring();
  io_uring_params params{};
  // The loop is the only submitter. DEFER_TASKRUN runs completion work only when the loop
  // waits for it, so syscalls made from callbacks (cgroupfs writes, clone3) are not
  // interrupted by pending task work; older kernels fall back step by step.
  const unsigned flag_sets[] = {
      IORING_SETUP_SUBMIT_ALL | IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN,
      IORING_SETUP_SUBMIT_ALL | IORING_SETUP_COOP_TASKRUN,
      0,
  };
  int rc = -EINVAL;
  for (unsigned flags : flag_sets) {
    params = {};
    params.flags = flags;
    rc = io_uring_queue_init_params(entries, &ring->ring_, &params);
    if (rc != -EINVAL) break;
  }
  if (rc < 0) {
    delete ring;
    return errno_error("io_uring_queue_init", -rc);
  }
  ring->initialised_ = true;
  ring->batch_.reserve(entries * 2);
  return ring;
}

Ring::~Ring() {
  if (initialised_) io_uring_queue_exit(&ring_);
}

io_uring_sqe *Ring::get_sqe() {
  io_uring_sqe *sqe = io_uring_get_sqe(&ring_);
  if (sqe == nullptr) {
    // The SQ is full: hand what is queued to the kernel and take a fresh slot. Submitting
    // never runs callbacks, so this is safe from inside one.
    io_uring_submit(&ring_);
    sqe = io_uring_get_sqe(&ring_);
  }
  assert(sqe != nullptr);
  return sqe;
}

void Ring::arm(Completion &c, io_uring_sqe *sqe) {
  assert(!c.in_flight && "completion already in flight");
  assert(c.callback != nullptr);
  c.in_flight = true;
  ++in_flight_;
  io_uring_sqe_set_data(sqe, &c);
}

void Ring::accept_multishot(Completion &c, int listen_fd) {
  io_uring_sqe *sqe = get_sqe();
  io_uring_prep_multishot_accept(sqe, listen_fd, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
  arm(c, sqe);
}

void Ring::connect(Completion &c, int fd, const sockaddr *addr, socklen_t addr_len) {
  io_uring_sqe *sqe = get_sqe();
  io_uring_prep_connect(sqe, fd, addr, addr_len);
  arm(c, sqe);
}

void Ring::recv(Completion &c, int fd, void *buf, size_t len) {
  io_uring_sqe *sqe = get_sqe();
  io_uring_prep_recv(sqe, fd, buf, len, 0);
  arm(c, sqe);
}

void Ring::send(Completion &c, int fd, const void *buf, size_t len) {
  io_uring_sqe *sqe = get_sqe();
  io_uring_prep_send(sqe, fd, buf, len, MSG_NOSIGNAL);
  arm(c, sqe);
}

void Ring::read(Completion &c, int fd, void *buf, size_t len) {
  io_uring_sqe *sqe = get_sqe();
  io_uring_prep_read(sqe, fd, buf, static_cast<unsigned>(len), static_cast<__u64>(-1));
  arm(c, sqe);
}

void Ring::write(Completion &c, int fd, const void *buf, size_t len) {
  io_uring_sqe *sqe = get_sqe();
  io_uring_prep_write(sqe, fd, buf, static_cast<unsigned>(len), static_cast<__u64>(-1));
  arm(c, sqe);
}

void Ring::poll(Completion &c, int fd, unsigned poll_mask) {
  io_uring_sqe *sqe = get_sqe();
  io_uring_prep_poll_add(sqe, fd, poll_mask);
  arm(c, sqe);
}

void Ring::openat(Completion &c, int dir_fd, const char *path, int flags, mode_t mode) {
  io_uring_sqe *sqe = get_sqe();
  io_uring_prep_openat(sqe, dir_fd, path, flags, mode);
  arm(c, sqe);
}

void Ring::write_at(Completion &c, int fd, const void *buf, size_t len, uint64_t offset) {
  io_uring_sqe *sqe = get_sqe();
  io_uring_prep_write(sqe, fd, buf, static_cast<unsigned>(len), offset);
  arm(c, sqe);
}

void Ring::fsync(Completion &c, int fd) {
  io_uring_sqe *sqe = get_sqe();
  io_uring_prep_fsync(sqe, fd, 0);
  arm(c, sqe);
}

void Ring::close_fd(Completion &c, int fd) {
  io_uring_sqe *sqe = get_sqe();
  io_uring_prep_close(sqe, fd);
  arm(c, sqe);
}

void Ring::renameat(Completion &c, int old_dir_fd, const char *old_path, int new_dir_fd,
                    const char *new_path) {
  io_uring_sqe *sqe = get_sqe();
  io_uring_prep_renameat(sqe, old_dir_fd, old_path, new_dir_fd, new_path, 0);
  arm(c, sqe);
}

void Ring::unlinkat(Completion &c, int dir_fd, const char *path, int flags) {
  io_uring_sqe *sqe = get_sqe();
  io_uring_prep_unlinkat(sqe, dir_fd, path, flags);
  arm(c, sqe);
}

void Ring::nop(Completion &c) {
  io_uring_sqe *sqe = get_sqe();
  io_uring_prep_nop(sqe);
  arm(c, sqe);
}

void Ring::timeout_abs(Completion &c, __kernel_timespec *deadline) {
  io_uring_sqe *sqe = get_sqe();
  io_uring_prep_timeout(sqe, deadline, 0, IORING_TIMEOUT_ABS);
  arm(c, sqe);
}

void Ring::timeout_update(Completion &c, __kernel_timespec *deadline) {
  assert(c.in_flight);
  io_uring_sqe *sqe = get_sqe();
  io_uring_prep_timeout_update(sqe, deadline, reinterpret_cast<__u64>(&c), IORING_TIMEOUT_ABS);
  io_uring_sqe_set_data(sqe, nullptr);  // the update's own CQE carries no completion
}

void Ring::cancel(Completion &target) {
  if (!target.in_flight) return;
  io_uring_sqe *sqe = get_sqe();
  io_uring_prep_cancel64(sqe, reinterpret_cast<__u64>(&target), IORING_ASYNC_CANCEL_ALL);
  io_uring_sqe_set_data(sqe, nullptr);
}

int Ring::run_once() {
  int rc = io_uring_submit_and_wait(&ring_, 1);
  if (rc < 0 && rc != -EINTR && rc != -EAGAIN && rc != -EBUSY && rc != -ETIME) {
    FV_ERROR("io_uring_submit_and_wait: %s", std::strerror(-rc));
  }
  batch_.clear();
  io_uring_cqe *cqe = nullptr;
  unsigned head = 0;
  unsigned seen = 0;
  io_uring_for_each_cqe(&ring_, head, cqe) {
    ++seen;
    auto *c = static_cast<Completion *>(io_uring_cqe_get_data(cqe));
    if (c == nullptr) continue;  // cancel or timeout-update acknowledgements
    batch_.push_back({c, cqe->res, cqe->flags});
  }
  io_uring_cq_advance(&ring_, seen);

  for (const Reaped &r : batch_) {
    Completion &c = *r.completion;
    assert(c.in_flight);
    if (!(r.flags & IORING_CQE_F_MORE)) {
      c.in_flight = false;
      --in_flight_;
    }
    // The callback may free the owner (and with it `c`) once no completion is in flight.
    c.callback(c, r.result, r.flags);
  }
  return static_cast<int>(batch_.size());
}

}  // namespace faasvisor::io
