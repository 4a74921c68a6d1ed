// Keep-alive policies (src/pool/keepalive.h): parsing, the idle-time histogram, and the
// windows the fixed and adaptive policies choose for seeded synthetic arrival patterns,
// checked against expectations computed by hand in the comments.
#include "pool/keepalive.h"

#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

using namespace faasvisor;
using namespace faasvisor::pool;

namespace {

constexpr uint64_t kMinute = 60'000;

// splitmix64: a seeded generator whose sequence does not depend on the standard library.
struct Rng {
  uint64_t state;
  uint64_t next() {
    uint64_t z = (state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
  }
  uint64_t uniform(uint64_t lo, uint64_t hi) { return lo + next() % (hi - lo + 1); }  // [lo, hi]
};

struct Call {
  uint64_t arrival_ms;
  uint64_t duration_ms;
};

// Feeds non-overlapping invocations to a policy. For each one after the first, `check` gets
// the idle time before it and the windows the policy chose after the previous completion.
template <typename Check>
void replay(KeepAlivePolicy &policy, const std::vector<Call> &calls, Check &&check) {
  KeepAliveWindows before{};
  uint64_t last_end_ms = 0;
  for (size_t i = 0; i < calls.size(); ++i) {
    const Call &c = calls[i];
    if (i > 0) {
      REQUIRE(c.arrival_ms >= last_end_ms);
      check(c.arrival_ms - last_end_ms, before);
    }
    policy.on_arrival(c.arrival_ms, 0);
    last_end_ms = c.arrival_ms + c.duration_ms;
    policy.on_completion(last_end_ms, 0);
    before = policy.windows();
  }
}

void replay(KeepAlivePolicy &policy, const std::vector<Call> &calls) {
  replay(policy, calls, [](uint64_t, const KeepAliveWindows &) {});
}

KeepAlivePolicy adaptive() {
  return KeepAlivePolicy(KeepAliveSpec{KeepAliveSpec::Kind::adaptive, 600'000});
}

// Warm under the windows: kept (prewarm 0) or pre-warmed in time (boot takes boot_ms).
bool warm_under(const KeepAliveWindows &w, uint64_t idle_ms, uint64_t boot_ms) {
  return idle_ms <= w.horizon_ms() && (w.prewarm_ms == 0 || w.prewarm_ms + boot_ms <= idle_ms);
}

}  // namespace

TEST_CASE("parse_keepalive accepts fixed durations and adaptive") {
  auto ten = parse_keepalive("fixed:10m");
  REQUIRE(ten.ok());
  CHECK(ten->kind == KeepAliveSpec::Kind::fixed);
  CHECK(ten->fixed_ms == 600'000);
  auto ninety = parse_keepalive("fixed:90s");
  REQUIRE(ninety.ok());
  CHECK(ninety->fixed_ms == 90'000);
  auto zero = parse_keepalive("fixed:0ms");  // stop as soon as idle: every invocation cold
  REQUIRE(zero.ok());
  CHECK(zero->fixed_ms == 0);
  auto a = parse_keepalive("adaptive");
  REQUIRE(a.ok());
  CHECK(a->kind == KeepAliveSpec::Kind::adaptive);
  CHECK(a->fixed_ms == 600'000);  // the fallback
  auto a5 = parse_keepalive("adaptive:5m");
  REQUIRE(a5.ok());
  CHECK(a5->fixed_ms == 300'000);
  auto def = parse_keepalive(kDefaultKeepAlive);
  REQUIRE(def.ok());
  CHECK(def->fixed_ms == 600'000);
}

TEST_CASE("parse_keepalive errors say why") {
  auto message = [](std::string_view text) {
    auto r = parse_keepalive(text);
    REQUIRE_FALSE(r.ok());
    return r.error().message();
  };
  CHECK(message("").find("unknown policy") != std::string::npos);
  CHECK(message("sometimes").find("unknown policy \"sometimes\"") != std::string::npos);
  CHECK(message("fixed").find("fixed:DURATION") != std::string::npos);
  CHECK(message("fixed:").find("missing duration") != std::string::npos);
  CHECK(message("fixed:soon").find("bad duration \"soon\"") != std::string::npos);
  CHECK(message("fixed:10y").find("bad duration") != std::string::npos);
  CHECK(message("fixed:25h").find("longer than 24h") != std::string::npos);
  CHECK(message("adaptive:").find("missing duration") != std::string::npos);
  CHECK(message("Fixed:10m").find("unknown policy") != std::string::npos);
}

TEST_CASE("the fixed policy keeps an idle instance for its duration, whatever the arrivals") {
  KeepAlivePolicy policy(KeepAliveSpec{KeepAliveSpec::Kind::fixed, 90'000});
  auto check = [&] {
    KeepAliveWindows w = policy.windows();
    CHECK(w.prewarm_ms == 0);
    CHECK(w.keepalive_ms == 90'000);
    CHECK_FALSE(w.from_histogram);
  };
  check();
  std::vector<Call> calls;
  for (uint64_t k = 0; k < 50; ++k) calls.push_back({k * 7 * kMinute, 100});
  replay(policy, calls);
  CHECK(policy.histogram().total() == 49);  // it still records, for the metrics
  check();
}

TEST_CASE("idle histogram bins by minute up to 4 hours and counts the rest out of bounds") {
  IdleHistogram h;
  CHECK(h.total() == 0);
  CHECK(h.percentile(0.05) == 0);
  CHECK(h.cv() == 0.0);
  h.add(0);
  h.add(59'999);
  h.add(60'000);
  h.add(4 * 60 * kMinute - 1);
  h.add(4 * 60 * kMinute);
  h.add(100 * 60 * kMinute);
  CHECK(h.count(0) == 2);
  CHECK(h.count(1) == 1);
  CHECK(h.count(239) == 1);
  CHECK(h.in_bounds() == 4);
  CHECK(h.out_of_bounds() == 2);
  CHECK(h.total() == 6);
}

TEST_CASE("idle histogram percentiles are the bins where the cumulative count reaches ceil(p*n)") {
  SUBCASE("20 samples: 1 in bin 2, 18 in bin 5, 1 in bin 9") {
    IdleHistogram h;
    h.add(2 * kMinute + 5);
    for (int i = 0; i < 18; ++i) h.add(5 * kMinute + 1000u * i);
    h.add(9 * kMinute + 59'000);
    // p5: ceil(0.05*20) = 1 -> bin 2. p50: 10 -> bin 5. p95: 19 -> bin 5. p99: 20 -> bin 9.
    CHECK(h.percentile_bin(0.05) == 2);
    CHECK(h.percentile(0.05) == 2 * kMinute);
    CHECK(h.percentile_bin(0.5) == 5);
    CHECK(h.percentile_bin(0.95) == 5);
    CHECK(h.percentile_bin(0.99) == 9);
    CHECK(h.percentile(0.99) == 9 * kMinute);
    CHECK(h.percentile_bin(0.0) == 2);  // rank at least 1: the first non-empty bin
    CHECK(h.percentile_bin(1.0) == 9);
  }
  SUBCASE("100 samples, one per bin 0..99") {
    IdleHistogram h;
    for (uint64_t i = 0; i < 100; ++i) h.add(i * kMinute + 30'000);
    CHECK(h.percentile_bin(0.05) == 4);   // 5th sample
    CHECK(h.percentile_bin(0.99) == 98);  // 99th sample (0.99*100 must not round to 98.99..)
    CHECK(h.percentile_bin(1.0) == 99);
  }
  SUBCASE("out-of-bounds samples do not count") {
    IdleHistogram h;
    h.add(3 * kMinute);
    for (int i = 0; i < 50; ++i) h.add(5 * 60 * kMinute);
    CHECK(h.percentile_bin(0.99) == 3);
  }
}

TEST_CASE("idle histogram CV is the population CV of the 240 bin counts") {
  // k bins holding c each: mean = kc/240, variance = kc^2/240 - mean^2, so
  // CV = sqrt(240/k - 1), whatever c is.
  auto fill = [](uint32_t bins, uint32_t each) {
    IdleHistogram h;
    for (uint32_t b = 0; b < bins; ++b)
      for (uint32_t i = 0; i < each; ++i) h.add(b * kMinute);
    return h;
  };
  CHECK(fill(1, 5).cv() == doctest::Approx(std::sqrt(239.0)));  // 15.46
  CHECK(fill(2, 3).cv() == doctest::Approx(std::sqrt(119.0)));  // 10.91
  CHECK(fill(48, 1).cv() == doctest::Approx(2.0));              // the paper's threshold
  CHECK(fill(60, 2).cv() == doctest::Approx(std::sqrt(3.0)));
  CHECK(fill(240, 1).cv() == doctest::Approx(0.0));  // flat: says nothing
  // Uneven: bin 0 = 3, bin 1 = 1. mean = 4/240 = 1/60, E[c^2] = 10/240,
  // variance = 10/240 - 1/3600 = 149/3600, CV = (sqrt(149)/60) / (1/60) = sqrt(149).
  IdleHistogram h;
  h.add(0);
  h.add(1);
  h.add(2);
  h.add(kMinute);
  CHECK(h.cv() == doctest::Approx(std::sqrt(149.0)));  // 12.21
  h.add(10 * 60 * kMinute);                            // out of bounds: CV unchanged
  CHECK(h.cv() == doctest::Approx(std::sqrt(149.0)));
}

TEST_CASE("idle times are recorded only when nothing runs, from the last completion") {
  KeepAlivePolicy policy = adaptive();
  policy.on_arrival(0, 0);       // first arrival: no previous end, nothing recorded
  policy.on_arrival(100, 1);     // concurrent: not idle
  policy.on_completion(200, 1);  // one still running: not idle yet
  policy.on_completion(300, 0);  // idle from 300
  CHECK(policy.histogram().total() == 0);
  policy.on_arrival(300 + kMinute, 0);  // idle for 60000 ms -> bin 1
  CHECK(policy.histogram().total() == 1);
  CHECK(policy.histogram().count(1) == 1);
  policy.on_arrival(300 + 2 * kMinute, 1);  // a second one while the first runs
  CHECK(policy.histogram().total() == 1);
}

TEST_CASE("adaptive: a periodic function is pre-warmed just before its next arrival") {
  SUBCASE("timer every 7.5 min, jitter 0-20 s, 0.1-0.9 s executions: every idle time in bin 7") {
    // idle = 450000 + (j' - j) - d, in [450000 - 20000 - 900, 450000 + 20000 - 100]
    //      = [429100, 469900] ms: all in bin 7 = [420000, 480000).
    // head = 7 min (lower edge) -> prewarm = 0.9 * 420000 = 378000 ms (6.3 min);
    // tail = 8 min (upper edge) -> horizon = 1.1 * 480000 = 528000 ms (8.8 min);
    // keep-alive once pre-warmed = 528000 - 378000 = 150000 ms.
    Rng rng{7};
    std::vector<Call> calls;
    for (uint64_t k = 0; k < 200; ++k)
      calls.push_back({k * 450'000 + rng.uniform(0, 20'000), rng.uniform(100, 900)});
    KeepAlivePolicy policy = adaptive();
    size_t seen = 0, warm = 0;
    replay(policy, calls, [&](uint64_t idle_ms, const KeepAliveWindows &w) {
      CHECK(idle_ms >= 429'100);
      CHECK(idle_ms <= 469'900);
      ++seen;
      if (seen <= KeepAlivePolicy::kMinSamples) {
        // Fewer than 10 idle times before this arrival: the fixed fallback, 10 min.
        CHECK_FALSE(w.from_histogram);
        CHECK(w.keepalive_ms == 600'000);
        return;
      }
      CHECK(w.from_histogram);
      CHECK(w.prewarm_ms == 378'000);
      CHECK(w.keepalive_ms == 150'000);
      if (warm_under(w, idle_ms, 1)) ++warm;
    });
    CHECK(seen == 199);
    CHECK(warm == 199 - KeepAlivePolicy::kMinSamples);  // every arrival after learning is warm
    CHECK(policy.histogram().count(7) == 199);
    CHECK(policy.histogram().cv() == doctest::Approx(std::sqrt(239.0)));
  }
  SUBCASE("timer every 7 min, jitter 0-2 s: idle times straddle the 7-minute bin edge") {
    // idle = 420000 + (j' - j) - d in [420000 - 2000 - 900, 420000 + 2000 - 100]
    //      = [417100, 421900]: bins 6 and 7, both far above 5% of the samples here
    // (checked below). head = bin 6 -> prewarm = 0.9 * 360000 = 324000 ms (5.4 min);
    // tail = bin 7 -> horizon = 1.1 * 480000 = 528000 ms; keep-alive = 204000 ms.
    Rng rng{42};
    std::vector<Call> calls;
    for (uint64_t k = 0; k < 200; ++k)
      calls.push_back({k * 420'000 + rng.uniform(0, 2'000), rng.uniform(100, 900)});
    KeepAlivePolicy policy = adaptive();
    replay(policy, calls);
    const IdleHistogram &h = policy.histogram();
    REQUIRE(h.count(6) + h.count(7) == 199);
    REQUIRE(h.count(6) * 20 >= 199);  // >= 5%: the head is bin 6
    REQUIRE(h.count(7) * 100 >= 2);   // > 1%: the tail is bin 7
    KeepAliveWindows w = policy.windows();
    CHECK(w.from_histogram);
    CHECK(w.prewarm_ms == 324'000);
    CHECK(w.keepalive_ms == 204'000);
    CHECK(w.horizon_ms() == 528'000);
  }
}

TEST_CASE("adaptive: bursts keep the instance only as long as the bursts' idle times say") {
  SUBCASE("bursts of 10 calls 1-3 s apart, every 45.8 min + 0-20 s") {
    // A burst starts at b * 2748000 + (0..20000) and lasts 9 gaps of 1000-3000 ms plus an
    // execution of 50-200 ms: it ends 9050..27200 ms after its start. So per burst:
    //  - 9 idle times inside it, each a gap minus an execution: 800..2950 ms, bin 0;
    //  - 1 idle time before the next: 2748000 + (-20000..20000) - (9050..27200)
    //    = [2700800, 2758950] ms, inside bin 45 = [2700000, 2760000).
    // 30 bursts: 270 in bin 0, 29 in bin 45.
    // head: rank ceil(0.05 * 299) = 15 -> bin 0 -> no pre-warm.
    // tail: rank ceil(0.99 * 299) = 297 > 270 -> bin 45 -> keep 1.1 * 46 min = 3036000 ms.
    // CV of two bins holding a and b: sqrt(240 (a^2 + b^2) / (a + b)^2 - 1) = 14.0 >= 2.
    Rng rng{3};
    std::vector<Call> calls;
    for (uint64_t b = 0; b < 30; ++b) {
      uint64_t t = b * 2'748'000 + rng.uniform(0, 20'000);
      for (int i = 0; i < 10; ++i) {
        calls.push_back({t, rng.uniform(50, 200)});
        t += rng.uniform(1'000, 3'000);
      }
    }
    KeepAlivePolicy policy = adaptive();
    replay(policy, calls);
    const IdleHistogram &h = policy.histogram();
    REQUIRE(h.count(0) == 270);
    REQUIRE(h.count(45) == 29);
    CHECK(h.cv() ==
          doctest::Approx(std::sqrt(240.0 * (270.0 * 270 + 29 * 29) / (299.0 * 299) - 1)));
    KeepAliveWindows w = policy.windows();
    CHECK(w.from_histogram);
    CHECK(w.prewarm_ms == 0);
    CHECK(w.keepalive_ms == 3'036'000);
  }
  SUBCASE("bursts of 200 calls: the gaps between bursts are under 1%, so they are cold") {
    // 199 idle times in bin 0 per burst (gaps of 200-500 ms minus executions of 10-100 ms),
    // 1 of about half an hour between bursts: 995 + 4 idle times, and the 99th percentile
    // (rank ceil(0.99 * 999) = 990 <= 995) is in bin 0. Keep 1.1 * 1 min = 66000 ms.
    Rng rng{5};
    std::vector<Call> calls;
    for (uint64_t b = 0; b < 5; ++b) {
      uint64_t t = b * 31 * kMinute;
      for (int i = 0; i < 200; ++i) {
        calls.push_back({t, rng.uniform(10, 100)});
        t += rng.uniform(200, 500);
      }
    }
    KeepAlivePolicy policy = adaptive();
    replay(policy, calls);
    REQUIRE(policy.histogram().count(0) == 995);
    REQUIRE(policy.histogram().in_bounds() == 999);
    KeepAliveWindows w = policy.windows();
    CHECK(w.from_histogram);
    CHECK(w.prewarm_ms == 0);
    CHECK(w.keepalive_ms == 66'000);
  }
}

TEST_CASE("adaptive: rare functions (idle over 4 h) fall back to the fixed policy") {
  Rng rng{11};
  std::vector<Call> calls;
  uint64_t t = 0;
  for (int i = 0; i < 40; ++i) {
    calls.push_back({t, rng.uniform(100, 5'000)});
    t += rng.uniform(4 * 60 * kMinute + 10'000, 12 * 60 * kMinute);
  }
  KeepAlivePolicy policy(KeepAliveSpec{KeepAliveSpec::Kind::adaptive, 300'000});
  replay(policy, calls, [](uint64_t, const KeepAliveWindows &w) {
    CHECK_FALSE(w.from_histogram);
    CHECK(w.prewarm_ms == 0);
    CHECK(w.keepalive_ms == 300'000);  // the spec's fallback
  });
  CHECK(policy.histogram().out_of_bounds() == 39);
  CHECK(policy.histogram().in_bounds() == 0);
}

TEST_CASE(
    "adaptive: out-of-bounds idle times disable the histogram only when they are the majority") {
  auto run = [](int in_bounds, int out_of_bounds) {
    KeepAlivePolicy policy = adaptive();
    uint64_t t = 0;
    std::vector<Call> calls;
    for (int i = 0; i <= in_bounds + out_of_bounds; ++i) {  // one idle time after each but the last
      calls.push_back({t, 0});
      t += (i < in_bounds) ? 30 * kMinute + 1 : 5 * 60 * kMinute;  // bin 30, or out
    }
    replay(policy, calls);
    return policy.windows();
  };
  // 12 in bin 30, 8 out: 40% out. head = tail = bin 30:
  // prewarm = 0.9 * 1800000 = 1620000, horizon = 1.1 * 1860000 = 2046000.
  KeepAliveWindows some = run(12, 8);
  CHECK(some.from_histogram);
  CHECK(some.prewarm_ms == 1'620'000);
  CHECK(some.horizon_ms() == 2'046'000);
  CHECK_FALSE(run(8, 12).from_histogram);  // 60% out
}

TEST_CASE("adaptive: too few or too spread idle times are not representative") {
  SUBCASE("9 idle times, then 10") {
    KeepAlivePolicy policy = adaptive();
    std::vector<Call> calls;
    for (uint64_t k = 0; k < 10; ++k) calls.push_back({k * 20 * kMinute, 0});
    replay(policy, calls);
    CHECK(policy.histogram().total() == 9);
    CHECK_FALSE(policy.representative());
    CHECK(policy.windows().keepalive_ms == 600'000);
    policy.on_arrival(10 * 20 * kMinute, 0);
    CHECK(policy.representative());
    // bin 20: prewarm 0.9 * 1200000 = 1080000, horizon 1.1 * 1260000 = 1386000.
    CHECK(policy.windows().prewarm_ms == 1'080'000);
    CHECK(policy.windows().keepalive_ms == 306'000);
  }
  SUBCASE("idle times spread evenly over the 4 hours: CV 0") {
    KeepAlivePolicy policy = adaptive();
    uint64_t t = 0;
    for (uint64_t i = 0; i < 480; ++i) {
      policy.on_arrival(t, 0);
      policy.on_completion(t, 0);
      t += (i % 240) * kMinute + 1;
    }
    CHECK(policy.histogram().in_bounds() == 479);
    CHECK(policy.histogram().cv() < 0.1);
    CHECK_FALSE(policy.representative());
    CHECK_FALSE(policy.windows().from_histogram);
    CHECK(policy.windows().keepalive_ms == 600'000);
  }
  SUBCASE("random idle times over 4 hours: CV near 1/sqrt(mean count per bin)") {
    // 960 samples over 240 bins: 4 per bin on average, Poisson-like spread, CV ~ 0.5.
    Rng rng{99};
    KeepAlivePolicy policy = adaptive();
    uint64_t t = 0;
    for (int i = 0; i < 961; ++i) {
      policy.on_arrival(t, 0);
      policy.on_completion(t + 10, 0);
      t += 10 + rng.uniform(0, 4 * 60 * kMinute - 1);
    }
    CHECK(policy.histogram().cv() < 1.0);
    CHECK_FALSE(policy.windows().from_histogram);
  }
}

TEST_CASE("adaptive: each concurrency rank records its own idle times, higher ranks share the last") {
  KeepAlivePolicy policy(*parse_keepalive("adaptive"));
  constexpr uint32_t last = KeepAlivePolicy::kRanks;
  // Concurrency 0 -> 3 -> 0 at t = 0, then back up to 3: rank k comes back after k minutes.
  uint64_t t = 0;
  for (uint32_t running = 0; running < 3; ++running) policy.on_arrival(t, running);
  for (uint32_t running = 3; running-- > 0;) policy.on_completion(t, running);
  for (uint32_t running = 0; running < 3; ++running)
    policy.on_arrival(t + (running + 1) * 60'000 + 1, running);
  CHECK(policy.histogram(1).count(1) == 1);
  CHECK(policy.histogram(2).count(2) == 1);
  CHECK(policy.histogram(3).count(3) == 1);
  CHECK(policy.histogram(4).total() == 0);
  // Above the last rank only the last rank's own level is recorded, and every higher rank
  // gets its windows.
  t += 10 * 60'000;
  for (uint32_t running = 3; running < last + 2; ++running) policy.on_arrival(t, running);
  for (uint32_t running = last + 2; running-- > 3;) policy.on_completion(t + 1, running);
  for (uint32_t running = 3; running < last + 2; ++running) policy.on_arrival(t + 2, running);
  CHECK(policy.histogram(last).total() == 1);
  CHECK(&policy.histogram(last + 1) == &policy.histogram(last));
  CHECK(&policy.histogram(1000) == &policy.histogram(last));
  // One rank: the paper's one histogram per function, every rank gets its windows.
  KeepAlivePolicy one(*parse_keepalive("adaptive"), 1);
  one.on_completion(0, 0);
  one.on_arrival(60'000, 0);
  one.on_completion(60'000, 1);
  one.on_arrival(70'000, 1);
  CHECK(one.histogram(1).total() == 1);
  CHECK(&one.histogram(2) == &one.histogram(1));
}
