// policy_tracegen: a seeded synthetic invocation trace shaped like what Shahrad et al.
// ("Serverless in the Wild", USENIX ATC '20) report of the Azure Functions 2019 trace:
//  - invocation rates span many orders of magnitude: most applications are rare (45% are
//    invoked at most once an hour, 81% at most once a minute), a few are hot (many a minute);
//  - timers are a common trigger: many functions fire at fixed periods, with a little jitter;
//  - some functions come in bursts;
//  - execution times are mostly short (sub-second to seconds): per function, the mean
//    follows a log-normal fit (log of seconds, mu -0.38, sigma 2.36), capped at 60 s here.
// The mix of classes below is ours, chosen to match those shares, not fitted to anything.
//
//   policy_tracegen [--functions 200] [--hours 24] [--seed 1] [--out trace.csv]
//                   [--classes functions.csv]
// Writes function,arrival_ms,duration_ms sorted by arrival; --classes writes
// function,class,mean_interval_s,mean_duration_ms; a summary goes to stderr.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

namespace {

constexpr double kPi = 3.14159265358979323846;
constexpr uint64_t kMinuteMs = 60'000;
constexpr uint64_t kHourMs = 60 * kMinuteMs;

// splitmix64-seeded xoshiro256**: a sequence that depends only on the seed.
class Rng {
 public:
  explicit Rng(uint64_t seed) {
    for (uint64_t &s : s_) s = splitmix(seed);
  }
  uint64_t next() {
    uint64_t result = rotl(s_[1] * 5, 7) * 9;
    uint64_t t = s_[1] << 17;
    s_[2] ^= s_[0];
    s_[3] ^= s_[1];
    s_[1] ^= s_[2];
    s_[0] ^= s_[3];
    s_[2] ^= t;
    s_[3] = rotl(s_[3], 45);
    return result;
  }
  double uniform() { return static_cast<double>(next() >> 11) * 0x1.0p-53; }  // [0, 1)
  double uniform(double lo, double hi) { return lo + (hi - lo) * uniform(); }
  double log_uniform(double lo, double hi) { return std::exp(uniform(std::log(lo), std::log(hi))); }
  double exponential(double mean) { return -mean * std::log1p(-uniform()); }
  double normal() {  // Box-Muller
    double u = 1.0 - uniform(), v = uniform();
    return std::sqrt(-2.0 * std::log(u)) * std::cos(2.0 * kPi * v);
  }
  double lognormal(double mu, double sigma) { return std::exp(mu + sigma * normal()); }

 private:
  static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }
  static uint64_t splitmix(uint64_t &state) {
    uint64_t z = (state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
  }
  uint64_t s_[4];
};

struct Row {
  uint64_t arrival_ms;
  uint32_t function;
  uint64_t duration_ms;
};

struct FunctionInfo {
  std::string name;
  std::string klass;
  double mean_interval_s = 0;  // nominal: period, 1/rate, or burst interval
  double mean_duration_ms = 0;
  uint64_t invocations = 0;
};

struct Generator {
  Rng rng;
  uint64_t span_ms;
  std::vector<Row> rows;
  std::vector<FunctionInfo> functions;

  // Per invocation: the function's mean with a little spread (log-normal, sigma 0.3).
  void emit(uint32_t fn, double t_ms) {
    if (t_ms < 0 || t_ms >= static_cast<double>(span_ms)) return;
    double mean_ms = functions[fn].mean_duration_ms;
    double d = mean_ms * rng.lognormal(-0.045, 0.3);  // -sigma^2/2 keeps the mean
    rows.push_back({static_cast<uint64_t>(t_ms), fn, std::max<uint64_t>(1, std::llround(d))});
    ++functions[fn].invocations;
  }

  // Poisson arrivals at `per_hour`, modulated by a daily cycle of the given amplitude
  // (thinning: draw at the peak rate, keep with probability rate(t) / peak).
  void poisson(uint32_t fn, double per_hour, double amplitude) {
    double peak = per_hour * (1 + amplitude) / static_cast<double>(kHourMs);
    double phase = rng.uniform(0, 2 * kPi);
    for (double t = rng.exponential(1 / peak); t < static_cast<double>(span_ms);
         t += rng.exponential(1 / peak)) {
      double rate = 1 + amplitude * std::sin(2 * kPi * t / (24.0 * kHourMs) + phase);
      if (rng.uniform() * (1 + amplitude) < rate) emit(fn, t);
    }
  }

  // A timer: every period_ms at a fixed phase, each firing a little late (exponential, mean
  // 1 s, as schedulers lag; never early).
  void timer(uint32_t fn, uint64_t period_ms) {
    double phase = rng.uniform(0, static_cast<double>(period_ms));
    for (double t = phase; t < static_cast<double>(span_ms); t += static_cast<double>(period_ms))
      emit(fn, t + rng.exponential(1000));
  }

  // Bursts at Poisson times; each is a geometric number of calls (mean `size`) with
  // exponential gaps (mean gap_ms).
  void bursts(uint32_t fn, double every_ms, double size, double gap_ms) {
    for (double t = rng.exponential(every_ms); t < static_cast<double>(span_ms);
         t += rng.exponential(every_ms)) {
      double u = t;
      do {
        emit(fn, u);
        u += rng.exponential(gap_ms);
      } while (rng.uniform() > 1.0 / size);
    }
  }

  uint32_t add(const char *klass, double interval_s) {
    FunctionInfo info;
    char name[64];
    std::snprintf(name, sizeof name, "%s-%03zu", klass, functions.size());
    info.name = name;
    info.klass = klass;
    info.mean_interval_s = interval_s;
    // Per-function mean execution time: log-normal in seconds (mu -0.38, sigma 2.36),
    // between 10 ms and 60 s.
    info.mean_duration_ms = std::clamp(1000.0 * rng.lognormal(-0.38, 2.36), 10.0, 60'000.0);
    functions.push_back(info);
    return static_cast<uint32_t>(functions.size() - 1);
  }

  void function(size_t i, size_t n) {
    // Classes by share of functions: 40% rare, 25% timers, 15% moderate, 10% bursty, 10% hot.
    double slot = (static_cast<double>(i) + 0.5) / static_cast<double>(n);
    if (slot < 0.40) {
      double interval_h = rng.log_uniform(1, 48);  // at most once an hour on average
      poisson(add("rare", interval_h * 3600), 1 / interval_h, 0.3);
    } else if (slot < 0.65) {
      // Periods as cron users pick them, minutes, with weights.
      static const struct {
        uint64_t minutes;
        double weight;
      } kPeriods[] = {{1, 0.10},  {5, 0.15},   {10, 0.10},  {15, 0.15},  {30, 0.10},
                      {60, 0.20}, {120, 0.05}, {360, 0.05}, {1440, 0.10}};
      double pick = rng.uniform();
      uint64_t minutes = 1440;
      for (const auto &p : kPeriods) {
        if (pick < p.weight) {
          minutes = p.minutes;
          break;
        }
        pick -= p.weight;
      }
      uint32_t fn = add("timer", static_cast<double>(minutes) * 60);
      timer(fn, minutes * kMinuteMs);
      if (rng.uniform() < 0.2) poisson(fn, 1.0 / 6, 0);  // some also get the odd HTTP call
    } else if (slot < 0.80) {
      double per_hour = rng.log_uniform(1, 60);  // between once an hour and once a minute
      poisson(add("moderate", 3600 / per_hour), per_hour, 0.5);
    } else if (slot < 0.90) {
      double every_min = rng.log_uniform(10, 180);
      uint32_t fn = add("bursty", every_min * 60);
      bursts(fn, every_min * static_cast<double>(kMinuteMs), rng.uniform(3, 30),
             rng.log_uniform(200, 5000));
    } else {
      double per_minute = rng.log_uniform(2, 120);
      uint32_t fn = add("hot", 60 / per_minute);
      // At most 10 running on average (rate x duration), so its peaks stay below the node's
      // default scale.max of 100: this trace is about keep-alive, not about queueing.
      double max_mean_ms = 10 * 60'000 / per_minute;
      functions[fn].mean_duration_ms = std::min(functions[fn].mean_duration_ms, max_mean_ms);
      poisson(fn, per_minute * 60, 0.5);
    }
  }
};

[[noreturn]] void usage(const char *why) {
  std::fprintf(stderr,
               "policy_tracegen: %s\nusage: policy_tracegen [--functions N] [--hours H] "
               "[--seed S] [--out trace.csv] [--classes functions.csv]\n",
               why);
  std::exit(2);
}

uint64_t number(const char *text) {
  char *end = nullptr;
  unsigned long long v = std::strtoull(text, &end, 10);
  if (end == text || *end != '\0') usage("options want whole numbers");
  return v;
}

}  // namespace

int main(int argc, char **argv) {
  uint64_t n = 200, hours = 24, seed = 1;
  std::string out_path, classes_path;
  for (int i = 1; i < argc; ++i) {
    std::string_view a = argv[i];
    if (i + 1 >= argc) usage("every option wants a value");
    const char *v = argv[++i];
    if (a == "--functions")
      n = number(v);
    else if (a == "--hours")
      hours = number(v);
    else if (a == "--seed")
      seed = number(v);
    else if (a == "--out")
      out_path = v;
    else if (a == "--classes")
      classes_path = v;
    else
      usage("unknown option");
  }
  if (n == 0 || hours == 0) usage("--functions and --hours must be positive");

  Generator g{Rng(seed), hours * kHourMs, {}, {}};
  for (size_t i = 0; i < n; ++i) g.function(i, n);
  std::sort(g.rows.begin(), g.rows.end(), [](const Row &a, const Row &b) {
    return a.arrival_ms != b.arrival_ms ? a.arrival_ms < b.arrival_ms : a.function < b.function;
  });

  FILE *out = out_path.empty() ? stdout : std::fopen(out_path.c_str(), "w");
  if (out == nullptr) usage("cannot write --out");
  std::fputs("function,arrival_ms,duration_ms\n", out);
  for (const Row &r : g.rows)
    std::fprintf(out, "%s,%llu,%llu\n", g.functions[r.function].name.c_str(),
                 static_cast<unsigned long long>(r.arrival_ms),
                 static_cast<unsigned long long>(r.duration_ms));
  if (out != stdout) std::fclose(out);

  if (!classes_path.empty()) {
    FILE *c = std::fopen(classes_path.c_str(), "w");
    if (c == nullptr) usage("cannot write --classes");
    std::fputs("function,class,mean_interval_s,mean_duration_ms,invocations\n", c);
    for (const FunctionInfo &f : g.functions)
      std::fprintf(c, "%s,%s,%.1f,%.1f,%llu\n", f.name.c_str(), f.klass.c_str(), f.mean_interval_s,
                   f.mean_duration_ms, static_cast<unsigned long long>(f.invocations));
    std::fclose(c);
  }

  // The shares the paper reports, measured on what was generated.
  double span_h = static_cast<double>(hours);
  size_t hourly = 0, minutely = 0, subsecond = 0;
  for (const FunctionInfo &f : g.functions) {
    double per_hour = static_cast<double>(f.invocations) / span_h;
    hourly += per_hour <= 1.0 ? 1 : 0;
    minutely += per_hour <= 60.0 ? 1 : 0;
    subsecond += f.mean_duration_ms < 1000 ? 1 : 0;
  }
  std::fprintf(stderr,
               "policy_tracegen: %zu invocations of %llu functions over %llu h (seed %llu); "
               "%.0f%% invoked at most once an hour, %.0f%% at most once a minute, "
               "%.0f%% with sub-second mean execution\n",
               g.rows.size(), static_cast<unsigned long long>(n),
               static_cast<unsigned long long>(hours), static_cast<unsigned long long>(seed),
               100.0 * static_cast<double>(hourly) / static_cast<double>(n),
               100.0 * static_cast<double>(minutely) / static_cast<double>(n),
               100.0 * static_cast<double>(subsecond) / static_cast<double>(n));
  return 0;
}
