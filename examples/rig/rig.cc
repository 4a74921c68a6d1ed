// faasvisor-rig: a load generator that embeds the node (docs/embedding.md). It deploys the
// echo function, keeps --concurrency invocations in flight in-process (no HTTP, no socket)
// until --invocations have been answered, and prints their rate and latency percentiles.
// It uses the public headers only, and drives the node from its own loop: Node::poll(), then
// poll(2) on Node::fd().
#include <poll.h>
#include <signal.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "faasvisor/node.h"

#ifndef RIG_ECHO_IMAGE
#define RIG_ECHO_IMAGE ""
#endif
#ifndef RIG_HELPER_DIR
#define RIG_HELPER_DIR ""
#endif

namespace {

using Clock = std::chrono::steady_clock;

struct Config {
  uint64_t invocations = 10000;
  uint32_t concurrency = 16;
  std::string image = RIG_ECHO_IMAGE;
  std::string command = "./echo";
  std::string helpers = RIG_HELPER_DIR;
  std::string body = "hello";
  bool blocking_turns = false;  // --run-once: Node::run_once() instead of poll() + poll(2)
};

void usage(FILE *out) {
  std::fprintf(out,
               "usage: faasvisor-rig [--invocations N] [--concurrency C] [--image DIR] [--command CMD]\n"
               "                     [--helpers DIR] [--body TEXT] [--run-once]\n"
               "  Deploys echo (DIR, default %s) with C warm instances and runs N invocations,\n"
               "  C at a time, in-process; prints 'R invocations/s' and latency p50/p90/p99.\n",
               RIG_ECHO_IMAGE[0] ? RIG_ECHO_IMAGE : "none built in");
}

bool parse_args(int argc, char **argv, Config &c) {
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg == "-h" || arg == "--help") {
      usage(stdout);
      std::exit(0);
    }
    if (arg == "--run-once") {
      c.blocking_turns = true;
      continue;
    }
    if (i + 1 >= argc) {
      std::fprintf(stderr, "faasvisor-rig: %s needs a value\n", arg.c_str());
      return false;
    }
    const char *value = argv[++i];
    char *end = nullptr;
    unsigned long long n = std::strtoull(value, &end, 10);
    bool number = *value != '\0' && *end == '\0';
    if (arg == "--image") c.image = value;
    else if (arg == "--command") c.command = value;
    else if (arg == "--helpers") c.helpers = value;
    else if (arg == "--body") c.body = value;
    else if (arg == "--invocations" && number && n > 0) c.invocations = n;
    else if (arg == "--concurrency" && number && n > 0 && n <= 4096) c.concurrency = static_cast<uint32_t>(n);
    else {
      std::fprintf(stderr, "faasvisor-rig: bad option %s %s\n", arg.c_str(), value);
      return false;
    }
  }
  if (c.image.empty()) {
    std::fprintf(stderr, "faasvisor-rig: --image DIR is needed (the echo example's build directory)\n");
    return false;
  }
  return true;
}

struct Load {
  faasvisor::Node *node = nullptr;
  const Config *config = nullptr;
  uint64_t issued = 0, answered = 0, errors = 0;
  std::vector<uint32_t> latency_ns;
  std::string first_error;

  void issue() {
    ++issued;
    faasvisor::InvokeRequest request;
    request.body = config->body;
    Clock::time_point start = Clock::now();
    faasvisor::ApiError e = node->invoke("echo", std::move(request), [this, start](const faasvisor::InvokeResult &r) {
      auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now() - start).count();
      latency_ns.push_back(static_cast<uint32_t>(std::min<long long>(ns, UINT32_MAX)));
      ++answered;
      if (r.status != 200 || r.body != config->body) {
        if (errors++ == 0) first_error = std::to_string(r.status) + " " + r.body.substr(0, 200);
      }
      if (issued < config->invocations) issue();
    });
    if (!e.ok()) {
      ++answered;
      if (errors++ == 0) first_error = std::to_string(e.status) + " " + e.message;
    }
  }
};

// One turn of the rig's loop: the node runs what is ready, then the rig sleeps on its fd.
void turn(faasvisor::Node &node, bool blocking) {
  if (blocking) {
    node.run_once();
    return;
  }
  node.poll();
  pollfd p{node.fd(), POLLIN, 0};
  ::poll(&p, 1, 100);
}

double percentile_ms(const std::vector<uint32_t> &sorted, double q) {
  if (sorted.empty()) return 0;
  size_t i = std::min(sorted.size() - 1, static_cast<size_t>(q * static_cast<double>(sorted.size())));
  return sorted[i] / 1e6;
}

}  // namespace

int main(int argc, char **argv) {
  Config config;
  if (!parse_args(argc, argv, config)) {
    usage(stderr);
    return 2;
  }
  // The rig owns its process: it asks the node to ignore SIGPIPE (an instance that dies
  // while written to would otherwise end the rig). Nothing else process-wide.
  faasvisor::NodeOptions options;
  options.listen = "";         // no HTTP API: in-process only
  options.state_dir = "none";  // nothing durable
  options.image_cache_dir = "/tmp/faasvisor-rig-images";  // unused: echo is a host directory
  options.helper_dir = config.helpers;
  options.ignore_sigpipe = true;
  options.instance_network = false;  // echo needs no network
  options.image_roots = {config.image.substr(0, config.image.rfind('/') + 1)};  // the image's directory
  options.stem_pool_size = config.concurrency;
  std::string error;
  auto node = faasvisor::Node::create(options, &error);
  if (!node) {
    std::fprintf(stderr, "faasvisor-rig: %s\n", error.c_str());
    return 1;
  }
  faasvisor::FunctionConfig echo;
  echo.name = "echo";
  echo.image = config.image;
  echo.command = config.command;
  echo.min_instances = config.concurrency;
  echo.max_instances = config.concurrency;
  echo.annotations = {{"faasvisor.queue", std::to_string(std::max<uint32_t>(config.concurrency, 1024))}};
  if (faasvisor::ApiError e = node->deploy(echo); !e.ok()) {
    std::fprintf(stderr, "faasvisor-rig: deploy: %d %s\n", e.status, e.message.c_str());
    return 1;
  }
  // Wait until every instance is warm, so the figures are of the warm path.
  Clock::time_point deadline = Clock::now() + std::chrono::seconds(60);
  for (;;) {
    faasvisor::NodeStats s = node->stats();
    if (!s.functions.empty() && s.functions[0].idle >= config.concurrency) break;
    if (Clock::now() > deadline) {
      std::fprintf(stderr, "faasvisor-rig: the echo instances did not become ready within 60 s\n");
      return 1;
    }
    turn(*node, config.blocking_turns);
  }

  Load load;
  load.node = node.get();
  load.config = &config;
  load.latency_ns.reserve(config.invocations);
  Clock::time_point start = Clock::now();
  for (uint32_t i = 0; i < config.concurrency && load.issued < config.invocations; ++i) load.issue();
  while (load.answered < config.invocations) turn(*node, config.blocking_turns);
  double seconds = std::chrono::duration<double>(Clock::now() - start).count();

  node->request_stop();
  while (!node->stopped()) turn(*node, config.blocking_turns);

  std::sort(load.latency_ns.begin(), load.latency_ns.end());
  std::printf("%.0f invocations/s p50 %.3f ms p90 %.3f ms p99 %.3f ms (%llu invocations, concurrency %u, %.2f s, %llu errors)\n",
              static_cast<double>(load.answered) / seconds, percentile_ms(load.latency_ns, 0.50),
              percentile_ms(load.latency_ns, 0.90), percentile_ms(load.latency_ns, 0.99),
              static_cast<unsigned long long>(load.answered), config.concurrency, seconds,
              static_cast<unsigned long long>(load.errors));
  if (load.errors > 0) {
    std::fprintf(stderr, "faasvisor-rig: %llu invocations failed; the first: %s\n",
                 static_cast<unsigned long long>(load.errors), load.first_error.c_str());
    return 1;
  }
  return 0;
}
