// Ends children without blocking the loop. end() sends the child a signal and watches its
// pidfd on the ring (a pidfd polls readable once the process has exited); the reap is then
// a waitid(WNOHANG) that cannot block, and `then` runs with the reaped child (its exit
// status), e.g. to remove what the child could not remove itself. The blocking form,
// Child::kill_and_wait(), is for where no loop turns any more.
#pragma once

#include <functional>

#include "io/ring.h"
#include "proc/child.h"
#include "util/intrusive_list.h"

namespace faasvisor::proc {

class Reaper {
 public:
  using Then = std::function<void(const Child &reaped)>;

  explicit Reaper(io::Ring &ring) : ring_(ring) {}
  Reaper(const Reaper &) = delete;
  Reaper &operator=(const Reaper &) = delete;
  // Destroyed only once the loop no longer turns (the owner waits for idle() while it
  // does): what is still ending is killed and reaped here, blocking, and its `then` runs.
  ~Reaper();

  // Sends signo (0: none, the child is already ending) and reaps the child once it exits.
  // A child that is invalid or already reaped runs `then` at once.
  void end(Child child, int signo, Then then = {});
  bool idle() const { return ending_.empty(); }
  size_t ending() const { return ending_.size(); }

 private:
  struct Ending {
    Child child;
    Then then;
    io::Completion exit_op;
    Reaper *reaper = nullptr;
    ListHook hook;
  };
  static void on_exit(io::Completion &c, int result, uint32_t flags);
  void finish(Ending &e);

  io::Ring &ring_;
  IntrusiveList<Ending, &Ending::hook> ending_;
};

}  // namespace faasvisor::proc
