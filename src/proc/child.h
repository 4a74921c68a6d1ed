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
  // An owned child that was never reaped is killed and reaped here (kill_and_wait), so no
  // owner can leak a process by forgetting it. That blocks: on the loop, end a child with
  // proc::Reaper (proc/reaper.h) instead and let its exit come as a completion.
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
  // SIGKILL unless reaped, a blocking reap, and the pidfd closed: the child is invalid
  // after it (its exit_status() stays). Blocks only on a child already sent SIGKILL, but for as long as the kernel
  // takes to tear it down (an address space, a pid namespace): not for the loop's path.
  void kill_and_wait();

  pid_t pid_ = -1;
  int pidfd_ = -1;
  bool reaped_ = false;
  ExitStatus status_;
};

}  // namespace faasvisor::proc
