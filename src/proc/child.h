// A child process held by its pidfd (systemd's PidRef idea): the pid never travels alone,
// signals go through pidfd_send_signal, and reaping uses waitid(P_PIDFD).
#pragma once

#include <sys/types.h>

#include "util/result.h"

namespace faasvisor::proc {

struct ExitStatus {
  bool exited = false;      // true: exit code; false: killed by signal
  int code_or_signal = 0;

  std::string describe() const;
};

class Child {
 public:
  Child() = default;
  Child(pid_t pid, int pidfd) : pid_(pid), pidfd_(pidfd) {}
  Child(Child &&other) noexcept { *this = std::move(other); }
  Child &operator=(Child &&other) noexcept;
  Child(const Child &) = delete;
  Child &operator=(const Child &) = delete;
  // An owned child that was never reaped is killed and reaped here, so no owner can leak
  // a process by forgetting it. This blocks only on a child already sent SIGKILL.
  ~Child();

  bool valid() const { return pidfd_ >= 0; }
  pid_t pid() const { return pid_; }
  int pidfd() const { return pidfd_; }
  bool reaped() const { return reaped_; }
  // How it ended; meaningful once reaped().
  const ExitStatus &exit_status() const { return status_; }

  Status signal(int signo);
  // Blocking reap, for a child already told to exit.
  void wait();
  // Non-blocking reap. Returns true and fills status if the child has exited.
  Result<bool> try_reap(ExitStatus *status);

 private:
  void release();

  pid_t pid_ = -1;
  int pidfd_ = -1;
  bool reaped_ = false;
  ExitStatus status_;
};

}  // namespace faasvisor::proc
