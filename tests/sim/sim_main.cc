// Runs the seeded simulation of the real scheduler (docs/simulation.md) over many seeds.
//
//   sim_tests [--seeds N] [--first S]     seeds S .. S+N-1 (default 2000 from 1)
//   sim_tests --seed S [--trace]          one seed; --trace prints every step as it happens
//   sim_tests ... [--actions A]           workload actions per seed (default 120)
//
// A failing seed prints the seed, what broke and the last steps before it, and the command
// that replays it; an assertion inside the pool prints the same from a SIGABRT handler. The
// last line is "N passed, N failed" (tools/test counts it) and the rate in seeds per second.
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "sim/driver.h"
#include "util/log.h"

using namespace faasvisor;

namespace {

uint64_t g_seed = 0;

void on_abort(int) {
  std::string trace = sim::current_trace();
  char head[160];
  int n = std::snprintf(head, sizeof head,
                        "\nseed %llu aborted (an assertion failed); its last steps:\n",
                        static_cast<unsigned long long>(g_seed));
  (void)!write(2, head, static_cast<size_t>(n));
  (void)!write(2, trace.data(), trace.size());
  n = std::snprintf(head, sizeof head, "replay: sim_tests --seed %llu --trace\n0 passed, 1 failed\n",
                    static_cast<unsigned long long>(g_seed));
  (void)!write(2, head, static_cast<size_t>(n));
  signal(SIGABRT, SIG_DFL);
}

uint64_t number(const char *flag, const char *value) {
  char *end = nullptr;
  unsigned long long v = value != nullptr ? std::strtoull(value, &end, 10) : 0;
  if (value == nullptr || *value == '\0' || *end != '\0') {
    std::fprintf(stderr, "sim_tests: %s needs a number\n", flag);
    std::exit(2);
  }
  return v;
}

}  // namespace

int main(int argc, char **argv) {
  uint64_t first = 1, count = 2000;
  bool one = false;
  sim::DriverOptions options;
  for (int i = 1; i < argc; ++i) {
    const char *a = argv[i];
    const char *v = i + 1 < argc ? argv[i + 1] : nullptr;
    if (std::strcmp(a, "--seeds") == 0) count = number(a, v), ++i;
    else if (std::strcmp(a, "--first") == 0) first = number(a, v), ++i;
    else if (std::strcmp(a, "--seed") == 0) first = number(a, v), count = 1, one = true, ++i;
    else if (std::strcmp(a, "--actions") == 0) options.actions = static_cast<uint32_t>(number(a, v)), ++i;
    else if (std::strcmp(a, "--trace") == 0) options.trace_echo = true;
    else {
      std::fprintf(stderr, "usage: sim_tests [--seeds N] [--first S] [--seed S [--trace]] [--actions A]\n");
      return 2;
    }
  }
  log::set_level(one && options.trace_echo ? log::Level::info : log::Level::error);
  signal(SIGABRT, on_abort);
  uint64_t passed = 0, failed = 0, steps = 0, invocations = 0, instances = 0;
  auto start = std::chrono::steady_clock::now();
  for (uint64_t seed = first; seed < first + count; ++seed) {
    g_seed = seed;
    sim::SeedResult r = sim::run_seed(seed, options);
    steps += r.steps;
    invocations += r.invocations;
    instances += r.instances;
    if (r.ok) {
      ++passed;
      continue;
    }
    ++failed;
    std::printf("FAIL %s\nits last steps:\n%sreplay: sim_tests --seed %llu --trace\n", r.failure.c_str(),
                r.trace.c_str(), static_cast<unsigned long long>(seed));
    if (failed >= 5) break;  // enough to go on
  }
  double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::printf("%llu seeds in %.2f s: %.0f seeds/s, %llu steps, %llu invocations, %llu instances\n",
              static_cast<unsigned long long>(passed + failed), s, static_cast<double>(passed + failed) / s,
              static_cast<unsigned long long>(steps), static_cast<unsigned long long>(invocations),
              static_cast<unsigned long long>(instances));
  std::printf("%llu passed, %llu failed\n", static_cast<unsigned long long>(passed),
              static_cast<unsigned long long>(failed));
  return failed == 0 ? 0 : 1;
}
