#include "proc/reaper.h"

#include <poll.h>

#include <utility>

namespace faasvisor::proc {

Reaper::~Reaper() {
  while (Ending *e = ending_.pop_front()) {
    e->child.kill_and_wait();  // the loop has stopped: nothing else waits on this thread
    if (e->then) e->then(e->child);
    delete e;
  }
}

void Reaper::end(Child child, int signo, Then then) {
  auto *e = new Ending{std::move(child), std::move(then), {}, this, {}};
  e->exit_op.owner = e;
  e->exit_op.callback = &Reaper::on_exit;
  ending_.push_back(*e);
  if (!e->child.valid() || e->child.reaped()) {
    finish(*e);
    return;
  }
  if (signo != 0) (void)e->child.signal(signo);
  ring_.poll(e->exit_op, e->child.pidfd(), POLLIN);
}

void Reaper::on_exit(io::Completion &c, int result, uint32_t) {
  Ending &e = c.owner_as<Ending>();
  ExitStatus status;
  auto reaped = e.child.try_reap(&status);
  if (reaped && !*reaped) {
    // Not gone yet (the poll failed, or woke early): it was told to end, so watch again;
    // a poll that cannot be armed on this pidfd at all falls back to the blocking reap.
    if (result < 0 && result != -ECANCELED && result != -EINTR) e.child.kill_and_wait();
    else {
      e.reaper->ring_.poll(e.exit_op, e.child.pidfd(), POLLIN);
      return;
    }
  }
  e.reaper->finish(e);
}

void Reaper::finish(Ending &e) {
  ending_.remove(e);
  if (e.then) e.then(e.child);
  delete &e;
}

}  // namespace faasvisor::proc
