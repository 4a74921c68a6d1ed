// policy_sim: runs keep-alive policies over an invocation trace (see simulator.h).
//
//   policy_sim summary [options] TRACE.csv   one CSV row per --policy (default: fixed:1m,
//                                            fixed:10m, fixed:60m, adaptive)
//   policy_sim replay [options] TRACE.csv    one CSV row per function, for one --policy,
//                                            and a last row "*" with the totals
// options:
//   --policy SPEC      a faasvisor.keepalive value (repeatable)
//   --boot-ms N        instance boot time (default 1)
//   --memory-mib N     memory per instance (default 64)
//   --scale-min N      com.openfaas.scale.min of every function (default 0)
//   --scale-max N      com.openfaas.scale.max of every function (default 100)
//   --queue-limit N    waiting invocations per function before 429 (default 1024)
//   --end-ms N         where the trace ends, for idle time (default: its last completion)
//   --busy-release-fixed  an instance released while others of its function still run
//                      keeps the spec's fixed keep-alive, not the policy's horizon (a
//                      variant for comparison, not the paper's policy)
//   --ranks N          concurrency ranks with an idle-time histogram of their own (default
//                      9, the node's; 1: the paper's one histogram per function)
//   --ranked-keep      a rank above 1 whose windows pre-warm keeps its
//                      instance for the horizon instead of being unloaded
//   --engine E         real: the node's own scheduler (pool::Pool on a virtual clock,
//                      real_scheduler.cc; the default); model: simulator.cc's model of it,
//                      which the three variants above need (and imply)
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include "pool/keepalive.h"
#include "simulator.h"
#include "util/log.h"
#include "trace.h"

using namespace faasvisor;
using namespace faasvisor::bench;

namespace {

[[noreturn]] void usage(const char *why) {
  std::fprintf(
      stderr,
      "policy_sim: %s\n"
      "usage: policy_sim summary|replay [--policy SPEC]... [--boot-ms N] [--memory-mib N]\n"
      "                  [--scale-min N] [--scale-max N] [--queue-limit N] [--end-ms N]\n"
      "                  [--busy-release-fixed] [--ranks N] [--ranked-keep] [--engine real|model]\n"
      "                  TRACE.csv\n",
      why);
  std::exit(2);
}

uint64_t parse_count(const char *flag, const char *text) {
  char *end = nullptr;
  unsigned long long v = std::strtoull(text, &end, 10);
  if (end == text || *end != '\0') usage((std::string(flag) + " wants a number").c_str());
  return v;
}

struct Args {
  std::string mode;
  std::string trace_path;
  std::vector<std::string> policies;
  SimOptions options;
  std::string engine;  // real or model
};

Args parse_args(int argc, char **argv) {
  if (argc < 2) usage("missing mode");
  Args args;
  args.mode = argv[1];
  if (args.mode != "summary" && args.mode != "replay") usage("mode is summary or replay");
  for (int i = 2; i < argc; ++i) {
    std::string_view a = argv[i];
    auto value = [&]() -> const char * {
      if (i + 1 >= argc) usage((std::string(a) + " wants a value").c_str());
      return argv[++i];
    };
    if (a == "--policy")
      args.policies.emplace_back(value());
    else if (a == "--boot-ms")
      args.options.boot_ms = parse_count("--boot-ms", value());
    else if (a == "--memory-mib")
      args.options.memory_bytes = parse_count("--memory-mib", value()) << 20;
    else if (a == "--scale-min")
      args.options.scale_min = static_cast<uint32_t>(parse_count("--scale-min", value()));
    else if (a == "--scale-max")
      args.options.scale_max = static_cast<uint32_t>(parse_count("--scale-max", value()));
    else if (a == "--queue-limit")
      args.options.queue_limit = static_cast<uint32_t>(parse_count("--queue-limit", value()));
    else if (a == "--end-ms")
      args.options.end_ms = parse_count("--end-ms", value());
    else if (a == "--busy-release-fixed")
      args.options.busy_release_fixed = true;
    else if (a == "--ranks")
      args.options.ranks = static_cast<uint32_t>(parse_count("--ranks", value()));
    else if (a == "--ranked-keep")
      args.options.ranked_keep = true;
    else if (a == "--engine")
      args.engine = value();
    else if (a.substr(0, 2) == "--")
      usage(("unknown option " + std::string(a)).c_str());
    else if (args.trace_path.empty())
      args.trace_path = a;
    else
      usage("one trace only");
  }
  if (args.trace_path.empty()) usage("missing TRACE.csv");
  bool variant = args.options.busy_release_fixed || args.options.ranked_keep ||
                 args.options.ranks != pool::KeepAlivePolicy::kRanks;
  if (args.engine.empty()) args.engine = variant ? "model" : "real";
  if (args.engine != "real" && args.engine != "model") usage("--engine is real or model");
  if (args.engine == "real" && variant)
    usage("--busy-release-fixed, --ranks and --ranked-keep are variants of the model: --engine model");
  if (args.options.scale_max == 0) usage("--scale-max must be at least 1");
  if (args.options.ranks == 0 || args.options.ranks > 1024) usage("--ranks must be 1 to 1024");
  if (args.policies.empty()) {
    if (args.mode == "replay") usage("replay wants one --policy");
    args.policies = {"fixed:1m", "fixed:10m", "fixed:60m", "adaptive"};
  }
  if (args.mode == "replay" && args.policies.size() != 1) usage("replay wants one --policy");
  return args;
}

SimResult run(const Args &args, const Trace &trace, const pool::KeepAliveSpec &spec) {
  return args.engine == "real" ? simulate_real(trace, spec, args.options) : simulate(trace, spec, args.options);
}

pool::KeepAliveSpec parse_policy(const std::string &text) {
  auto spec = pool::parse_keepalive(text);
  if (!spec) usage(spec.error().message().c_str());
  return *spec;
}

double percent(uint64_t part, uint64_t whole) {
  return whole == 0 ? 0.0 : 100.0 * static_cast<double>(part) / static_cast<double>(whole);
}

// Mean and 75th percentile (nearest rank) of the per-function cold-start percentages, over
// functions with at least one served invocation: the paper's per-application view.
void per_function_cold(const SimResult &r, double *mean, double *p75) {
  std::vector<double> pct;
  for (const FunctionResult &f : r.functions)
    if (f.warm + f.cold + f.queued > 0) pct.push_back(100.0 * f.cold_fraction());
  *mean = *p75 = 0.0;
  if (pct.empty()) return;
  std::sort(pct.begin(), pct.end());
  double sum = 0;
  for (double p : pct) sum += p;
  *mean = sum / static_cast<double>(pct.size());
  size_t rank = (pct.size() * 75 + 99) / 100;  // ceil(0.75 n), at least 1
  *p75 = pct[std::max<size_t>(rank, 1) - 1];
}

void print_summary(const Args &args, const Trace &trace) {
  std::printf(
      "policy,invocations,warm,cold,queued,rejected,cold_pct,fn_cold_pct_mean,"
      "fn_cold_pct_p75,boots,prewarm_boots,idle_instance_s,idle_mem_gib_s,"
      "functions_on_histogram,sim_ms\n");
  for (const std::string &policy : args.policies) {
    pool::KeepAliveSpec spec = parse_policy(policy);
    auto start = std::chrono::steady_clock::now();
    SimResult r = run(args, trace, spec);
    auto sim_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                      std::chrono::steady_clock::now() - start)
                      .count();
    const FunctionResult &t = r.total;
    double fn_mean, fn_p75;
    per_function_cold(r, &fn_mean, &fn_p75);
    std::printf("%s,%llu,%llu,%llu,%llu,%llu,%.4f,%.3f,%.3f,%llu,%llu,%.1f,%.2f,%llu,%lld\n",
                policy.c_str(), static_cast<unsigned long long>(t.invocations),
                static_cast<unsigned long long>(t.warm), static_cast<unsigned long long>(t.cold),
                static_cast<unsigned long long>(t.queued),
                static_cast<unsigned long long>(t.rejected), 100.0 * t.cold_fraction(), fn_mean,
                fn_p75, static_cast<unsigned long long>(t.boots),
                static_cast<unsigned long long>(t.prewarm_boots), r.idle_instance_s(),
                r.idle_memory_gib_s(args.options.memory_bytes),
                static_cast<unsigned long long>(t.on_histogram), static_cast<long long>(sim_ms));
  }
}

void print_function_row(const char *name, const FunctionResult &f, uint64_t memory_bytes) {
  double idle_s = static_cast<double>(f.idle_ms) / 1e3;
  double gib = static_cast<double>(memory_bytes) / static_cast<double>(1ull << 30);
  std::printf(
      "%s,%llu,%llu,%llu,%llu,%llu,%.4f,%llu,%llu,%.3f,%.4f,%llu\n", name,
      static_cast<unsigned long long>(f.invocations), static_cast<unsigned long long>(f.warm),
      static_cast<unsigned long long>(f.cold), static_cast<unsigned long long>(f.queued),
      static_cast<unsigned long long>(f.rejected), percent(f.cold, f.warm + f.cold + f.queued),
      static_cast<unsigned long long>(f.boots), static_cast<unsigned long long>(f.prewarm_boots),
      idle_s, idle_s * gib, static_cast<unsigned long long>(f.on_histogram));
}

void print_replay(const Args &args, const Trace &trace) {
  pool::KeepAliveSpec spec = parse_policy(args.policies[0]);
  SimResult r = run(args, trace, spec);
  std::printf(
      "function,invocations,warm,cold,queued,rejected,cold_pct,boots,prewarm_boots,"
      "idle_instance_s,idle_mem_gib_s,on_histogram\n");
  for (size_t i = 0; i < r.functions.size(); ++i)
    print_function_row(trace.functions[i].c_str(), r.functions[i], args.options.memory_bytes);
  print_function_row("*", r.total, args.options.memory_bytes);
}

}  // namespace

int main(int argc, char **argv) {
  Args args = parse_args(argc, argv);
  log::set_level(log::Level::warn);  // the real engine's pool says "deployed function" for each
  for (const std::string &p : args.policies) parse_policy(p);  // fail before the long part
  Trace trace;
  std::string error;
  if (!load_trace(args.trace_path, &trace, &error)) {
    std::fprintf(stderr, "policy_sim: %s\n", error.c_str());
    return 1;
  }
  if (args.mode == "summary")
    print_summary(args, trace);
  else
    print_replay(args, trace);
  return 0;
}
