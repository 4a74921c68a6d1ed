#include "proc/child.h"

#include <signal.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>

namespace faasvisor::proc {

#ifndef P_PIDFD
#define P_PIDFD 3
#endif
// Children are made by posix_spawn (then pidfd_open), clone(CLONE_PIDFD) or clone3, all with
// SIGCHLD as exit signal; the node neither handles nor ignores SIGCHLD, so an exited child
// stays a zombie until it is reaped here, through its pidfd. __WALL also reaps a child
// whose exit signal is not SIGCHLD, should one be made that way.

std::string ExitStatus::describe() const {
  if (exited) return "exited with status " + std::to_string(code_or_signal);
  std::string name = sigabbrev_np(code_or_signal) ? sigabbrev_np(code_or_signal) : "?";
  return "was killed by signal SIG" + name;
}

Child &Child::operator=(Child &&other) noexcept {
  if (this != &other) {
    kill_and_wait();
    pid_ = other.pid_;
    pidfd_ = other.pidfd_;
    reaped_ = other.reaped_;
    status_ = other.status_;
    other.pid_ = -1;
    other.pidfd_ = -1;
    other.reaped_ = false;
  }
  return *this;
}

Child::~Child() { kill_and_wait(); }

void Child::kill_and_wait() {
  if (pidfd_ < 0) return;
  if (!reaped_) {
    syscall(SYS_pidfd_send_signal, pidfd_, SIGKILL, nullptr, 0);
    siginfo_t info{};
    if (waitid(static_cast<idtype_t>(P_PIDFD), static_cast<id_t>(pidfd_), &info, WEXITED | __WALL) == 0) {
      reaped_ = true;
      status_.exited = info.si_code == CLD_EXITED;
      status_.code_or_signal = info.si_status;
    }
  }
  close(pidfd_);
  pidfd_ = -1;
  pid_ = -1;
}

Status Child::signal(int signo) {
  if (pidfd_ < 0 || reaped_) return {};
  if (syscall(SYS_pidfd_send_signal, pidfd_, signo, nullptr, 0) < 0 && errno != ESRCH)
    return errno_error("pidfd_send_signal");
  return {};
}

void Child::wait() {
  if (pidfd_ < 0 || reaped_) return;
  siginfo_t info{};
  while (waitid(static_cast<idtype_t>(P_PIDFD), static_cast<id_t>(pidfd_), &info, WEXITED | __WALL) < 0 &&
         errno == EINTR) {
  }
  reaped_ = true;
  status_.exited = info.si_code == CLD_EXITED;
  status_.code_or_signal = info.si_status;
}

Result<bool> Child::try_reap(ExitStatus *status) {
  if (reaped_) {
    *status = status_;
    return true;
  }
  siginfo_t info{};
  if (waitid(static_cast<idtype_t>(P_PIDFD), static_cast<id_t>(pidfd_), &info, WEXITED | WNOHANG | __WALL) <
      0)
    return errno_error("waitid");
  if (info.si_pid == 0) return false;  // still running
  reaped_ = true;
  status_.exited = info.si_code == CLD_EXITED;
  status_.code_or_signal = info.si_status;
  *status = status_;
  return true;
}

}  // namespace faasvisor::proc
