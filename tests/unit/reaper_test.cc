#include <doctest/doctest.h>

#include <signal.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <memory>

#include "io/ring.h"
#include "proc/reaper.h"

using namespace faasvisor;

namespace {

// A child that waits for a signal, held by its pidfd.
proc::Child paused_child() {
  // doctest's own handlers would report the signal as a crashed test and print a second
  // summary (tools/test reads the last one): the child dies of it plainly instead. The
  // signals stay blocked until the child has put the defaults back, so an early one waits.
  sigset_t all, before;
  sigfillset(&all);
  sigprocmask(SIG_BLOCK, &all, &before);
  pid_t pid = fork();
  if (pid == 0) {
    for (int sig : {SIGTERM, SIGINT, SIGABRT, SIGSEGV}) signal(sig, SIG_DFL);
    sigprocmask(SIG_SETMASK, &before, nullptr);
    for (;;) pause();
  }
  sigprocmask(SIG_SETMASK, &before, nullptr);
  REQUIRE(pid >= 0);
  int pidfd = static_cast<int>(syscall(SYS_pidfd_open, pid, 0));
  REQUIRE(pidfd >= 0);
  return proc::Child(pid, pidfd);
}

bool gone(pid_t pid) { return kill(pid, 0) < 0 && errno == ESRCH; }

}  // namespace

TEST_CASE("a reaper ends a child on the ring: signalled, reaped, then run, nothing left") {
  std::unique_ptr<io::Ring> ring(*io::Ring::create(16));
  proc::Reaper reaper(*ring);
  proc::Child child = paused_child();
  pid_t pid = child.pid();
  int then_calls = 0;
  proc::ExitStatus seen;
  reaper.end(std::move(child), SIGTERM, [&](const proc::Child &reaped) {
    ++then_calls;
    CHECK(reaped.reaped());
    seen = reaped.exit_status();
  });
  CHECK_FALSE(child.valid());
  CHECK_FALSE(reaper.idle());
  CHECK(then_calls == 0);  // nothing waited inside end()
  for (int i = 0; i < 1000 && !reaper.idle(); ++i) ring->run_once();
  CHECK(reaper.idle());
  CHECK(then_calls == 1);
  CHECK_FALSE(seen.exited);
  CHECK(seen.code_or_signal == SIGTERM);
  CHECK(gone(pid));  // reaped: not even a zombie
}

TEST_CASE("a reaper destroyed with children still ending kills and reaps them") {
  std::unique_ptr<io::Ring> ring(*io::Ring::create(16));
  pid_t pid = -1;
  int then_calls = 0;
  {
    proc::Reaper reaper(*ring);
    proc::Child child = paused_child();
    pid = child.pid();
    reaper.end(std::move(child), 0, [&](const proc::Child &reaped) {
      ++then_calls;
      CHECK(reaped.reaped());
    });
    CHECK(reaper.ending() == 1);
  }
  CHECK(then_calls == 1);
  CHECK(gone(pid));
}

TEST_CASE("a reaper runs then at once for a child that is not running") {
  std::unique_ptr<io::Ring> ring(*io::Ring::create(16));
  proc::Reaper reaper(*ring);
  int then_calls = 0;
  reaper.end(proc::Child(), SIGKILL, [&](const proc::Child &) { ++then_calls; });
  CHECK(then_calls == 1);
  CHECK(reaper.idle());
}
