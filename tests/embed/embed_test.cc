// The embedding API (include/faasvisor/node.h) from an embedder's side: this program sees the
// public headers only (its include path is include/). Real nodes, real echo and misbehave
// instances; tests/integration/test_embed.py runs it.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <dirent.h>
#include <doctest/doctest.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>

#include <chrono>
#include <memory>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "faasvisor/node.h"

namespace {

using faasvisor::ApiError;
using faasvisor::InstanceEvent;
using faasvisor::InvokeResult;
using faasvisor::Node;
using Clock = std::chrono::steady_clock;

const std::string kBuild = FV_BUILD_DIR;
const std::string kEcho = kBuild + "/examples/echo";
const std::string kMisbehave = kBuild + "/tests/functions";

faasvisor::NodeOptions embedded_options() {
  faasvisor::NodeOptions o;
  o.listen = "";
  o.state_dir = "none";
  o.image_cache_dir = "/tmp/faasvisor-embed-test-images";
  o.helper_dir = kBuild + "/src";
  o.image_roots = {kBuild};
  o.instance_network = false;
  o.stem_pool_size = 2;
  o.stop_grace_ms = 500;
  o.shutdown_grace_ms = 2000;
  return o;
}

std::unique_ptr<Node> make_node(const faasvisor::NodeOptions &o = embedded_options()) {
  std::string error;
  auto node = Node::create(o, &error);
  INFO("Node::create: " << error);
  REQUIRE(node != nullptr);
  return node;
}

faasvisor::FunctionConfig function_config(const std::string &name, const std::string &image, const char *command) {
  faasvisor::FunctionConfig c;
  c.name = name;
  c.image = image;
  c.command = command;
  return c;
}

faasvisor::FunctionConfig echo_config(const std::string &name = "echo") { return function_config(name, kEcho, "./echo"); }
faasvisor::FunctionConfig misbehave_config(const std::string &name = "misbehave") {
  return function_config(name, kMisbehave, "./misbehave");
}

// Turns the node's loop from here (poll(), then poll(2) on its fd) until done() or timeout.
template <typename Pred>
bool drive(Node &node, Pred done, double seconds = 20) {
  Clock::time_point deadline = Clock::now() + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(seconds));
  while (!done()) {
    if (Clock::now() > deadline) return false;
    node.poll();
    if (done()) break;
    pollfd p{node.fd(), POLLIN, 0};
    ::poll(&p, 1, 50);
  }
  return true;
}

// Invokes and waits for the answer.
InvokeResult call(Node &node, const std::string &function, faasvisor::InvokeRequest req = {}) {
  // Shared with the callback: if this gives up, the node may still answer later.
  struct Answer {
    bool answered = false;
    InvokeResult result;
  };
  auto answer = std::make_shared<Answer>();
  ApiError e = node.invoke(function, std::move(req), [answer](const InvokeResult &r) {
    CHECK(!answer->answered);  // exactly once
    answer->answered = true;
    answer->result = r;
  });
  INFO(e.status << " " << e.message);
  REQUIRE(e.ok());
  REQUIRE(drive(node, [&] { return answer->answered; }));
  return answer->result;
}

void stop(Node &node) {
  node.request_stop();
  REQUIRE(drive(node, [&] { return node.stopped(); }));
}

const faasvisor::FunctionStats *find_stats(const faasvisor::NodeStats &s, const std::string &name) {
  for (const auto &f : s.functions)
    if (f.name == name) return &f;
  return nullptr;
}

bool is_dir(const std::string &path) {
  struct stat st{};
  return ::stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

}  // namespace

TEST_CASE("a node deploys, invokes in-process, counts, reports instance events, scales and deletes") {
  auto node = make_node();
  std::vector<InstanceEvent> events;
  uint64_t sub = node->subscribe_events([&](const InstanceEvent &e) { events.push_back(e); });
  CHECK(sub != 0);
  ApiError e = node->deploy(echo_config());
  INFO(e.message);
  REQUIRE(e.ok());

  faasvisor::InvokeRequest req;
  req.body = "hello from the rig";
  req.headers = {{"Content-Type", "text/plain"}};
  InvokeResult r = call(*node, "echo", req);
  CHECK(r.status == 200);
  CHECK(r.body == "hello from the rig");
  CHECK(r.error.empty());
  CHECK(r.cold);
  CHECK(r.instance_id != 0);
  bool content_type = false;
  for (const auto &h : r.headers) content_type |= h.name == "Content-Type" && h.value == "text/plain";
  CHECK(content_type);
  InvokeResult warm = call(*node, "echo", req);
  CHECK(warm.status == 200);
  CHECK(!warm.cold);
  CHECK(warm.instance_id == r.instance_id);

  faasvisor::NodeStats s = node->stats();
  const faasvisor::FunctionStats *fs = find_stats(s, "echo");
  REQUIRE(fs != nullptr);
  CHECK(fs->invocations == 2);
  CHECK(fs->cold == 1);
  CHECK(fs->warm == 1);
  CHECK(fs->errors == 0);
  CHECK(fs->idle == 1);
  CHECK(s.instances == 1);
  CHECK(s.reserved_bytes > 0);
  CHECK(fs->init_p50_ms > 0);
  REQUIRE(events.size() >= 2);
  CHECK(events[0].kind == InstanceEvent::Kind::started);
  CHECK(events[0].function == "echo");
  CHECK(events[0].instance_id == r.instance_id);
  CHECK(events[1].kind == InstanceEvent::Kind::ready);
  CHECK(events[1].init_ns > 0);

  // Scale to 3: two more instances start and become ready.
  REQUIRE(node->scale("echo", 3).ok());
  CHECK(drive(*node, [&] { return find_stats(node->stats(), "echo")->idle == 3; }));

  // Update: the function takes a new spec (an environment variable), and keeps answering.
  faasvisor::FunctionConfig changed = echo_config();
  changed.env = {{"GREETING", "hi"}};
  REQUIRE(node->update(changed).ok());
  CHECK(call(*node, "echo", req).status == 200);

  // Delete: every instance stops, with a reason, and the function is gone.
  size_t before = events.size();
  REQUIRE(node->remove("echo").ok());
  CHECK(drive(*node, [&] { return node->stats().instances == 0; }));
  size_t stopped = 0;
  for (size_t i = before; i < events.size(); ++i) {
    if (events[i].kind != InstanceEvent::Kind::stopped) continue;
    ++stopped;
    CHECK(!events[i].reason.empty());
  }
  CHECK(stopped >= 1);
  CHECK(find_stats(node->stats(), "echo") == nullptr);
  ApiError gone = node->invoke("echo", {}, [](const InvokeResult &) { FAIL("called for a deleted function"); });
  CHECK(gone.status == 404);

  node->unsubscribe_events(sub);
  size_t after = events.size();
  REQUIRE(node->deploy(echo_config("echo2")).ok());
  CHECK(call(*node, "echo2").status == 200);
  CHECK(events.size() == after);  // unsubscribed
  stop(*node);
}

TEST_CASE("log subscriptions get an instance's stderr lines, and end when the function is deleted") {
  auto node = make_node();
  REQUIRE(node->deploy(misbehave_config()).ok());
  std::vector<faasvisor::LogLine> lines;
  bool ended = false;
  ApiError err;
  uint64_t sub = node->subscribe_logs("misbehave", [&](const faasvisor::LogLine &l, bool end) {
    if (end) ended = true;
    else lines.push_back(l);
  }, &err);
  REQUIRE(sub != 0);
  CHECK(err.ok());
  faasvisor::InvokeRequest req;
  req.query = "mode=stderr";
  req.body = "x";
  CHECK(call(*node, "misbehave", req).status == 200);
  CHECK(drive(*node, [&] { return lines.size() >= 10000; }));
  REQUIRE(!lines.empty());
  CHECK(lines[0].function == "misbehave");
  CHECK(lines[0].text.find("stderr line 1 of 10000") != std::string::npos);
  CHECK(!lines[0].instance.empty());
  CHECK(lines[0].realtime_ns > 0);

  // A crash: the instance's stop event says why.
  std::vector<InstanceEvent> events;
  node->subscribe_events([&](const InstanceEvent &e) { events.push_back(e); });
  req.query = "mode=crash";
  InvokeResult crashed = call(*node, "misbehave", req);
  CHECK(crashed.status == 502);
  CHECK(!crashed.error.empty());
  CHECK(crashed.body.find("\"error\"") != std::string::npos);
  CHECK(drive(*node, [&] {
    for (const auto &e : events)
      if (e.kind == InstanceEvent::Kind::stopped) return true;
    return false;
  }));
  for (const auto &e : events)
    if (e.kind == InstanceEvent::Kind::stopping || e.kind == InstanceEvent::Kind::stopped) CHECK(!e.reason.empty());

  REQUIRE(node->remove("misbehave").ok());
  CHECK(drive(*node, [&] { return ended; }));
  node->unsubscribe_logs(sub);  // already ended: harmless
  stop(*node);
}

TEST_CASE("bad input to the API gets a clear error, never a crash") {
  auto node = make_node();
  faasvisor::FunctionConfig nameless = echo_config("");
  ApiError e = node->deploy(nameless);
  CHECK(e.status == 400);
  CHECK(e.message.find("service") != std::string::npos);
  faasvisor::FunctionConfig bad_name = echo_config("Not_A_Name!");
  CHECK(node->deploy(bad_name).status == 400);
  faasvisor::FunctionConfig outside = echo_config("outside");
  outside.image = "/usr/bin";
  e = node->deploy(outside);
  CHECK(e.status == 403);
  faasvisor::FunctionConfig bad_memory = echo_config("mem");
  bad_memory.memory = "lots";
  e = node->deploy(bad_memory);
  CHECK(e.status == 400);
  CHECK(e.message.find("memory") != std::string::npos);
  faasvisor::FunctionConfig bad_annotation = echo_config("ann");
  bad_annotation.annotations = {{"faasvisor.queue", "-1"}};
  CHECK(node->deploy(bad_annotation).status == 400);
  faasvisor::FunctionConfig oci = echo_config("oci");
  oci.image = "docker.io/library/alpine:3";
  e = node->deploy(oci);
  CHECK(e.status == 400);
  CHECK(e.message.find("OCI") != std::string::npos);
  CHECK(node->update(echo_config("missing")).status == 404);
  CHECK(node->remove("missing").status == 404);
  CHECK(node->remove("../etc").status == 400);
  CHECK(node->scale("missing", 2).status == 404);

  REQUIRE(node->deploy(echo_config()).ok());
  CHECK(node->deploy(echo_config()).status == 409);
  CHECK(node->invoke("echo", {}, nullptr).status == 400);
  faasvisor::InvokeRequest relative;
  relative.path = "no-slash";
  CHECK(node->invoke("echo", relative, [](const InvokeResult &) {}).status == 400);
  faasvisor::InvokeRequest huge;
  huge.body.assign(7 << 20, 'x');  // over the default 6 MiB max_body_bytes
  CHECK(node->invoke("echo", huge, [](const InvokeResult &) {}).status == 413);
  CHECK(node->invoke("nope", {}, [](const InvokeResult &) {}).status == 404);
  ApiError log_error;
  CHECK(node->subscribe_logs("nope", [](const faasvisor::LogLine &, bool) {}, &log_error) == 0);
  CHECK(log_error.status == 404);
  CHECK(node->subscribe_logs("echo", nullptr, &log_error) == 0);
  CHECK(log_error.status == 400);
  CHECK(node->subscribe_events(nullptr) == 0);
  node->unsubscribe_logs(12345);
  node->unsubscribe_events(12345);

  std::string error;
  faasvisor::NodeOptions bad = embedded_options();
  bad.listen = "nowhere";
  CHECK(Node::create(bad, &error) == nullptr);
  CHECK(error.find("ADDR:PORT") != std::string::npos);

  // Invoking without ever turning the loop is bounded: refused with 429, and every accepted
  // call is still answered once the loop turns.
  uint64_t accepted = 0, answered = 0;
  ApiError refused;
  for (;;) {
    refused = node->invoke("echo", {}, [&](const InvokeResult &) { ++answered; });
    if (!refused.ok()) break;
    REQUIRE(++accepted <= 200000);
  }
  CHECK(refused.status == 429);
  CHECK(refused.message.find("turn the loop") != std::string::npos);
  CHECK(accepted == 100000);
  CHECK(drive(*node, [&] { return answered == accepted; }, 60));
  CHECK(node->invoke("echo", {}, [&](const InvokeResult &) { ++answered; }).ok());

  // A full queue: 429 through the callback, as over HTTP.
  faasvisor::FunctionConfig tiny = misbehave_config("tiny");
  tiny.max_instances = 1;
  tiny.annotations = {{"faasvisor.queue", "1"}};
  REQUIRE(node->deploy(tiny).ok());
  std::vector<int> statuses;
  faasvisor::InvokeRequest slow;
  slow.query = "mode=slow&ms=300";
  for (int i = 0; i < 4; ++i)
    REQUIRE(node->invoke("tiny", slow, [&](const InvokeResult &r) { statuses.push_back(r.status); }).ok());
  CHECK(drive(*node, [&] { return statuses.size() == 4; }));
  int too_many = 0;
  for (int s : statuses) too_many += s == 429;
  CHECK(too_many >= 1);
  stop(*node);
  // After the stop: refused, not crashed.
  CHECK(node->deploy(echo_config("late")).status == 503);
}

TEST_CASE("two nodes in one process have their own ids, cgroup subtrees and run dirs") {
  auto a = make_node();
  auto b = make_node();
  CHECK(a->id() != b->id());
  CHECK(a->run_dir() != b->run_dir());
  std::vector<std::string> roots_a = a->cgroup_roots(), roots_b = b->cgroup_roots();
  REQUIRE(!roots_a.empty());
  REQUIRE(roots_a.size() == roots_b.size());
  for (size_t i = 0; i < roots_a.size(); ++i) {
    CHECK(roots_a[i] != roots_b[i]);
    CHECK(is_dir(roots_a[i]));
    CHECK(is_dir(roots_b[i]));
    CHECK(roots_b[i].find(b->id()) != std::string::npos);
  }
  REQUIRE(a->deploy(echo_config()).ok());
  REQUIRE(b->deploy(echo_config()).ok());
  // Both answer, each from its own instances, driven from one loop here.
  bool a_done = false, b_done = false;
  REQUIRE(a->invoke("echo", {}, [&](const InvokeResult &r) { a_done = r.status == 200; }).ok());
  REQUIRE(b->invoke("echo", {}, [&](const InvokeResult &r) { b_done = r.status == 200; }).ok());
  CHECK(drive(*a, [&] {
    b->poll();
    return a_done && b_done;
  }));
  // Each instance sits in its own node's subtree.
  for (const std::string &root : roots_b) {
    bool has_child = false;
    if (DIR *d = opendir(root.c_str())) {
      while (dirent *e = readdir(d)) has_child |= e->d_type == DT_DIR && e->d_name[0] != '.';
      closedir(d);
    }
    CHECK(has_child);
  }
  a.reset();  // stopped and destroyed without a stop request: synchronous
  for (const std::string &root : roots_a) CHECK(!is_dir(root));
  for (const std::string &root : roots_b) CHECK(is_dir(root));
  CHECK(call(*b, "echo").status == 200);  // b is untouched
  b.reset();
  for (const std::string &root : roots_b) CHECK(!is_dir(root));
}

TEST_CASE("request_stop from another thread ends run(), with an invocation answered first") {
  auto node = make_node();
  // Warm first: the call is running, not waiting for a boot, when the stop comes. (A cold
  // start caught by the shutdown can be answered 502: the process backend's drain ends a
  // sandbox still booting, over HTTP too.)
  faasvisor::FunctionConfig warm = misbehave_config();
  warm.min_instances = 1;
  REQUIRE(node->deploy(warm).ok());
  REQUIRE(drive(*node, [&] { return find_stats(node->stats(), "misbehave")->idle == 1; }));
  int status = 0;
  faasvisor::InvokeRequest slow;
  slow.query = "mode=slow&ms=300";
  std::string answer;
  REQUIRE(node->invoke("misbehave", slow, [&](const InvokeResult &r) {
    status = r.status;
    answer = r.body;
  }).ok());
  std::thread stopper([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(150));
    node->request_stop();
  });
  Clock::time_point start = Clock::now();
  int code = node->run();
  stopper.join();
  CHECK(code == 0);
  CHECK(node->stopped());
  INFO(answer);
  CHECK(status == 200);  // in flight when the stop came: finished within the grace period
  CHECK(Clock::now() - start < std::chrono::seconds(10));
}

TEST_CASE("poll() does not wait, and fd() becomes readable when work completes") {
  auto node = make_node();
  CHECK(node->fd() >= 0);
  Clock::time_point start = Clock::now();
  for (int i = 0; i < 100; ++i) node->poll();
  CHECK(Clock::now() - start < std::chrono::seconds(2));
  REQUIRE(node->deploy(echo_config()).ok());
  bool answered = false;
  REQUIRE(node->invoke("echo", {}, [&](const InvokeResult &) { answered = true; }).ok());
  // Only run_once(): it blocks until there is a completion, and the answer comes.
  Clock::time_point deadline = Clock::now() + std::chrono::seconds(20);
  while (!answered && Clock::now() < deadline) node->run_once();
  CHECK(answered);
  stop(*node);
}

TEST_CASE("by default a node changes no process-wide state; asked, it does") {
  // A SIGPIPE handler, a blocked SIGUSR1 and a lowered RLIMIT_NOFILE: all must survive.
  struct sigaction handler{};
  handler.sa_handler = [](int) {};
  sigemptyset(&handler.sa_mask);
  struct sigaction saved{};
  REQUIRE(sigaction(SIGPIPE, &handler, &saved) == 0);
  sigset_t mask, before, after;
  sigemptyset(&mask);
  sigaddset(&mask, SIGUSR1);
  pthread_sigmask(SIG_BLOCK, &mask, nullptr);
  pthread_sigmask(SIG_SETMASK, nullptr, &before);
  rlimit saved_limit{}, limit{};
  getrlimit(RLIMIT_NOFILE, &saved_limit);
  limit = saved_limit;
  if (limit.rlim_max > 2048) limit.rlim_cur = 2048;
  setrlimit(RLIMIT_NOFILE, &limit);

  {
    auto node = make_node();
    REQUIRE(node->deploy(echo_config()).ok());
    CHECK(call(*node, "echo").status == 200);
    stop(*node);
  }
  struct sigaction now{};
  sigaction(SIGPIPE, nullptr, &now);
  bool same_handler = now.sa_handler == handler.sa_handler;
  CHECK(same_handler);
  pthread_sigmask(SIG_SETMASK, nullptr, &after);
  for (int sig = 1; sig < 32; ++sig) CHECK_MESSAGE(sigismember(&before, sig) == sigismember(&after, sig), "signal " << sig);
  rlimit limit_now{};
  getrlimit(RLIMIT_NOFILE, &limit_now);
  CHECK(limit_now.rlim_cur == limit.rlim_cur);

  // Asked for them, it makes them (so the checks above can fail).
  faasvisor::NodeOptions asked = embedded_options();
  asked.ignore_sigpipe = true;
  asked.handle_signals = true;
  asked.raise_fd_limit = true;
  {
    auto node = make_node(asked);
    sigaction(SIGPIPE, nullptr, &now);
    bool ignored = now.sa_handler == SIG_IGN;
    CHECK(ignored);
    sigset_t blocked;
    pthread_sigmask(SIG_SETMASK, nullptr, &blocked);
    CHECK(sigismember(&blocked, SIGTERM) == 1);
    getrlimit(RLIMIT_NOFILE, &limit_now);
    CHECK(limit_now.rlim_cur == limit_now.rlim_max);
    stop(*node);
  }
  // Put back what this test changed.
  sigaction(SIGPIPE, &saved, nullptr);
  sigset_t restore;
  sigemptyset(&restore);
  sigaddset(&restore, SIGUSR1);
  sigaddset(&restore, SIGINT);
  sigaddset(&restore, SIGTERM);
  pthread_sigmask(SIG_UNBLOCK, &restore, nullptr);
  setrlimit(RLIMIT_NOFILE, &saved_limit);
}
