#include "image/store.h"

#include <fcntl.h>
#include <poll.h>
#include <spawn.h>
#include <unistd.h>

#include <algorithm>
#include <cassert>

#include "proc/spawn.h"
#include "util/clock.h"
#include "util/log.h"

namespace faasvisor::image {

namespace {
char *const kHelperEnv[] = {const_cast<char *>("PATH=/usr/sbin:/usr/bin:/sbin:/bin"), nullptr};
}  // namespace

struct Store::Job {
  Store *store = nullptr;
  std::string image;
  proc::Child child;
  int out_fd = -1;
  io::Completion exit_op{};
  io::Timer deadline{};
  bool timed_out = false;
  IntrusiveList<Waiter, &Waiter::waiter_hook> waiters;

  ~Job() {
    if (out_fd >= 0) close(out_fd);
  }
};

Store::Store(io::Ring &ring, io::TimerQueue &timers, StoreOptions options)
    : ring_(ring), timers_(timers), options_(std::move(options)) {}

Store::~Store() { assert(jobs_.empty() && "image store destroyed with helpers running"); }

Status Store::resolve(const std::string &image, Waiter &w) {
  assert(!w.waiting());
  if (shutting_down_) return plain_error("image", "the node is shutting down");
  auto it = jobs_.find(image);
  if (it != jobs_.end()) {
    it->second->waiters.push_back(w);
    w.job = it->second.get();
    return {};
  }
  std::vector<std::string> args{options_.helper_path};
  if (!options_.registry_auth.empty()) args.insert(args.end(), {"--authfile", options_.registry_auth});
  for (const std::string &host : options_.insecure_registries) args.insert(args.end(), {"--insecure-registry", host});
  if (valid_digest(image) && options_.peers) {
    // The helper looks in the cache first; the peers matter only if the image is not there.
    for (const std::string &peer : options_.peers()) args.insert(args.end(), {"--peer", peer});
    args.insert(args.end(), {"--max-bytes", std::to_string(options_.max_fetch_bytes)});
  }
  args.push_back(options_.cache_dir);
  args.push_back(image);
  return start(image, std::move(args), -1, w);
}

Status Store::remove(const std::string &digest, Waiter &w) {
  assert(!w.waiting());
  if (shutting_down_) return plain_error("image", "the node is shutting down");
  return start("remove " + digest, {options_.helper_path, "--remove", digest, options_.cache_dir}, -1, w);
}

Status Store::receive(uint64_t max_bytes, Waiter &w, int *stdin_fd) {
  assert(!w.waiting());
  if (shutting_down_) return plain_error("image", "the node is shutting down");
  int fds[2];
  if (pipe2(fds, O_CLOEXEC) < 0) return errno_error("pipe2");
  fcntl(fds[1], F_SETFL, O_NONBLOCK);
  std::string key = "upload #" + std::to_string(next_upload_++);
  Status st = start(key, {options_.helper_path, "--receive", std::to_string(max_bytes), options_.cache_dir}, fds[0], w);
  close(fds[0]);
  if (!st.ok()) {
    close(fds[1]);
    return st;
  }
  *stdin_fd = fds[1];
  return {};
}

// One helper run, keyed by what it resolves; stdin_fd (or /dev/null when -1) is its stdin.
Status Store::start(const std::string &key, std::vector<std::string> args, int stdin_fd, Waiter &w) {
  if (jobs_.size() >= options_.max_jobs)
    return plain_error("image", "the node is already unpacking " + std::to_string(jobs_.size()) + " images; try again later");
  if (options_.cache_max_bytes > 0 && args[1] != "--remove") {
    std::vector<std::string> extra{"--cache-max", std::to_string(options_.cache_max_bytes)};
    if (options_.in_use)
      for (std::string &digest : options_.in_use()) extra.insert(extra.end(), {"--keep", std::move(digest)});
    args.insert(args.begin() + 1, extra.begin(), extra.end());
  }
  int fds[2];
  if (pipe2(fds, O_CLOEXEC) < 0) return errno_error("pipe2");
  fcntl(fds[0], F_SETFL, O_NONBLOCK);
  proc::SpawnSetup setup;
  int devnull = stdin_fd >= 0 ? -1 : open("/dev/null", O_RDONLY | O_CLOEXEC);
  int in = stdin_fd >= 0 ? stdin_fd : devnull;
  if (in >= 0) posix_spawn_file_actions_adddup2(&setup.actions, in, 0);
  posix_spawn_file_actions_adddup2(&setup.actions, fds[1], 1);
  std::vector<char *> argv;
  for (std::string &a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  // The peers' credentials, for a fetch (never in argv: /proc/PID/cmdline is world-readable).
  std::string auth = "FAASVISOR_PEER_AUTHORIZATION=" + options_.peer_authorization;
  char *env_with_auth[] = {kHelperEnv[0], auth.data(), nullptr};
  bool fetch = !options_.peer_authorization.empty() && std::find(args.begin(), args.end(), "--peer") != args.end();
  auto child = proc::spawn_with_pidfd(args[0].c_str(), setup, argv.data(), fetch ? env_with_auth : kHelperEnv);
  if (devnull >= 0) close(devnull);
  close(fds[1]);
  if (!child) {
    close(fds[0]);
    return child.error();
  }
  auto job = std::make_unique<Job>();
  job->store = this;
  job->image = key;
  job->child = std::move(*child);
  job->out_fd = fds[0];
  job->exit_op.owner = job.get();
  job->exit_op.callback = &Store::on_exit;
  job->deadline.owner = job.get();
  job->deadline.callback = &Store::on_deadline;
  ring_.poll(job->exit_op, job->child.pidfd(), POLLIN);
  timers_.start(job->deadline, monotonic_ns() + options_.timeout_ms * 1'000'000ull);
  job->waiters.push_back(w);
  w.job = job.get();
  FV_INFO("unpacking image %s (helper pid %d)", key.c_str(), static_cast<int>(job->child.pid()));
  jobs_.emplace(key, std::move(job));
  return {};
}

void Store::abort_upload(Waiter &w) {
  if (!w.waiting()) return;
  (void)static_cast<Job *>(w.job)->child.signal(SIGTERM);
  cancel(w);
}

void Store::cancel(Waiter &w) {
  if (!w.waiting()) return;
  static_cast<Job *>(w.job)->waiters.remove(w);
  w.job = nullptr;
}

void Store::shutdown() {
  shutting_down_ = true;
  for (auto &[image, job] : jobs_) (void)job->child.signal(SIGKILL);
}

void Store::on_deadline(io::Timer &t) {
  Job &job = t.owner_as<Job>();
  job.timed_out = true;
  FV_WARN("image %s: the unpack helper ran past its deadline; killing it", job.image.c_str());
  (void)job.child.signal(SIGKILL);
}

void Store::on_exit(io::Completion &c, int result, uint32_t) {
  Job &job = c.owner_as<Job>();
  proc::ExitStatus status;
  auto reaped = job.child.try_reap(&status);
  if (result >= 0 && reaped && !*reaped) {
    // Spurious wake-up: not exited yet.
    job.store->ring_.poll(job.exit_op, job.child.pidfd(), POLLIN);
    return;
  }
  if (!reaped || !*reaped) {
    (void)job.child.signal(SIGKILL);
    job.child.wait();
  }
  job.store->finish(job);
}

void Store::finish(Job &job) {
  timers_.stop(job.deadline);
  std::string answer;
  char buf[16384];
  while (answer.size() <= kMaxAnswer) {
    ssize_t n = ::read(job.out_fd, buf, sizeof buf);
    if (n <= 0) break;
    answer.append(buf, static_cast<size_t>(n));
  }
  Result<Resolved> result = plain_error("image");
  bool image_fault = false;
  if (job.timed_out) {
    result = plain_error("image", job.image + ": unpacking took longer than " + std::to_string(options_.timeout_ms / 1000) + " s");
  } else if (shutting_down_) {
    result = plain_error("image", "the node is shutting down");
  } else if (answer.empty()) {
    result = plain_error("image", job.image + ": the unpack helper exited without an answer");
  } else {
    result = decode_resolved(answer);
    image_fault = !result;  // the helper's own verdict on the image
  }
  if (result) {
    ++stats_.resolved;
    stats_.unpacked += result->unpacked;
    FV_INFO("image %s is %s at %s", job.image.c_str(), result->digest.c_str(), result->rootfs.c_str());
  } else {
    ++stats_.failed;
    FV_WARN("image %s: %s", job.image.c_str(), result.error().message().c_str());
  }
  auto owned = std::move(jobs_.at(job.image));
  jobs_.erase(job.image);
  while (Waiter *w = owned->waiters.pop_front()) {
    w->job = nullptr;
    w->image_ready(result, image_fault);
  }
}

}  // namespace faasvisor::image
