// Keep-alive policies: how long a function's idle instance stays warm, and whether to stop
// it and pre-warm one shortly before the next invocation is expected instead.
//
// Pure: no I/O, no clock of its own. Every time is in milliseconds on a clock the caller
// supplies (the node's monotonic clock, or a simulator's virtual one), so the daemon and the
// policy simulator (bench/policy/) run this same code.
//
// Policies, chosen per function with the annotation `faasvisor.keepalive`:
//   fixed:DURATION  an instance idle for DURATION is stopped (default fixed:10m, as AWS
//                   Lambda does).
//   adaptive        the hybrid histogram policy of Shahrad et al., "Serverless in the Wild"
//                   (USENIX ATC '20), section 4.2, without its ARIMA branch; falls back to
//                   fixed:10m while the histogram is not representative. `adaptive:DURATION`
//                   sets that fallback.
//
// Our reading of the paper (the constants are the paper's; see keepalive.cc for the rest):
//  - An idle time is the time from the end of one execution of the application (here: the
//    function) to the start of its next one. With concurrent invocations the function is
//    idle only while none runs, so an idle time is recorded on an arrival that finds nothing
//    running, measured from the last completion that left nothing running.
//  - The idle times go into a range-limited histogram: 1-minute bins over 4 hours; longer
//    idle times are only counted ("out of bounds").
//  - From it, after each execution: the pre-warming window is the 5th percentile (head) and
//    the keep-alive window the 99th percentile (tail), with a 10% margin each (head * 0.9,
//    tail * 1.1). The head is taken at its bin's lower edge and the tail at its bin's upper
//    edge (a minute granularity must not cut off the idle times in the tail's own bin).
//  - If the pre-warming window is 0 the instance simply stays warm for the keep-alive window.
//    Otherwise the instance is unloaded right away, one is loaded again when the pre-warming
//    window ends, and it is kept until tail * 1.1 after the execution's end, i.e. for
//    tail * 1.1 - head * 0.9 once loaded.
//  - Scale-out (ours; the paper keeps one copy per application): the k-th concurrent
//    instance of a function is treated as an application of its own, with its own
//    histogram. Rank k's idle times run from the function's concurrency (invocations in
//    flight) dropping below k to it reaching k again, so rank 1's are the function's idle
//    times above. Ranks 1..kRanks - 1 have a histogram each, and every higher rank uses the
//    one of concurrency kRanks (bounded state: about 2 KiB per histogram). An instance
//    released at concurrency k (k - 1 still in flight after its completion) gets rank k's
//    windows, under the same rules and fallbacks as rank 1, with one difference: only rank
//    1 pre-warms (the node has one pre-warm per function); a higher rank whose windows
//    pre-warm is unloaded at once, and its next arrival finds a lower rank's instance or
//    boots one. The keep-alive is capped by the histograms' range: at most 4 h * 1.1.
//  - A histogram is used only while it is representative: enough idle times seen, most of
//    them within the 4 hours, and bin counts that are concentrated, which the paper measures
//    with the coefficient of variation (CV) of the 240 bin counts, threshold 2 (a flat
//    histogram, low CV, predicts nothing). Otherwise the paper falls back to a standard
//    keep-alive (and, for mostly out-of-bounds idle times, to an ARIMA forecast, which we do
//    not implement): here both cases use the fixed policy.
#pragma once

#include <array>
#include <cstdint>
#include <string_view>
#include <vector>

#include "model/keepalive_spec.h"
#include "util/result.h"

namespace faasvisor::pool {

// Idle times in 1-minute bins over 4 hours, plus a count of the longer ones.
class IdleHistogram {
 public:
  static constexpr uint32_t kBins = 240;
  static constexpr uint64_t kBinMs = 60'000;
  static constexpr uint64_t kRangeMs = kBins * kBinMs;

  void add(uint64_t idle_ms);

  uint64_t count(uint32_t bin) const { return bins_[bin]; }
  uint64_t in_bounds() const { return in_bounds_; }
  uint64_t out_of_bounds() const { return out_of_bounds_; }
  uint64_t total() const { return in_bounds_ + out_of_bounds_; }

  // The bin holding the p-th quantile (p in [0, 1]) of the in-bounds idle times: the first
  // bin whose cumulative count reaches ceil(p * in_bounds), at least 1. 0 when empty.
  uint32_t percentile_bin(double p) const;
  // That bin's lower edge in ms (its upper edge is that plus kBinMs).
  uint64_t percentile(double p) const { return percentile_bin(p) * kBinMs; }
  // Coefficient of variation of the kBins bin counts (population standard deviation over
  // mean); 0 when empty. One bin holding everything gives sqrt(kBins - 1), a flat
  // histogram 0.
  double cv() const;

 private:
  std::array<uint64_t, kBins> bins_{};
  uint64_t in_bounds_ = 0;
  uint64_t out_of_bounds_ = 0;
  uint64_t sum_squares_ = 0;  // sum of bins_[i]^2, kept so cv() is O(1)
};

struct KeepAliveWindows {
  // 0: keep the instance for keepalive_ms from now. > 0: stop it now, start one instance
  // again at now + prewarm_ms, and keep that one for keepalive_ms from when it is ready.
  uint64_t prewarm_ms = 0;
  uint64_t keepalive_ms = 0;
  bool from_histogram = false;  // false: the fixed policy (or the adaptive fallback)

  // How long after the completion the policy still expects the next arrival.
  uint64_t horizon_ms() const { return prewarm_ms + keepalive_ms; }
};

// One function's policy state. Call on_arrival and on_completion for every invocation, in
// time order; windows() is O(1).
class KeepAlivePolicy {
 public:
  // The paper's parameters.
  static constexpr double kHeadPercentile = 0.05;
  static constexpr double kTailPercentile = 0.99;
  static constexpr double kHeadMargin = 0.9;  // pre-warm 10% early
  static constexpr double kTailMargin = 1.1;  // keep 10% longer
  static constexpr double kMinCv = 2.0;
  // Ours: the paper asks for "enough" idle times without a number. Below 10 the CV says
  // little (a few samples in distinct bins always have a high CV).
  static constexpr uint64_t kMinSamples = 10;
  // Ours: out-of-bounds idle times are "too many" when they are the majority.
  static constexpr double kMaxOutOfBoundsFraction = 0.5;

  // Concurrency ranks with a histogram of their own, the last one shared by every higher
  // rank. Ours, chosen before any run (the simulator's per-rank rows show 64 too).
  static constexpr uint32_t kRanks = 9;

  // ranks: as kRanks, at least 1 (1: the paper's one histogram per function).
  explicit KeepAlivePolicy(KeepAliveSpec spec, uint32_t ranks = kRanks);

  // An invocation arrives; running_before = invocations of this function in flight just
  // before it. Records an idle time of rank running_before + 1, if that rank had an end.
  void on_arrival(uint64_t now_ms, uint32_t running_before);
  // An invocation ended; running_after = invocations still in flight: rank
  // running_after + 1 ends.
  void on_completion(uint64_t now_ms, uint32_t running_after);

  // What to apply to an instance released at concurrency `rank` (rank - 1 invocations still
  // in flight). windows() is rank 1's: after a completion that left the function idle.
  KeepAliveWindows windows(uint32_t rank = 1) const { return ranks_[slot(rank)].windows; }
  bool representative(uint32_t rank = 1) const;
  const IdleHistogram &histogram(uint32_t rank = 1) const { return ranks_[slot(rank)].histogram; }
  KeepAliveSpec spec() const { return spec_; }

 private:
  struct Rank {
    IdleHistogram histogram;
    KeepAliveWindows windows;
    uint64_t last_end_ms = 0;
    bool has_end = false;
  };

  uint32_t slot(uint32_t rank) const {
    uint32_t n = static_cast<uint32_t>(ranks_.size());
    return rank == 0 ? 0 : (rank < n ? rank : n) - 1;
  }
  void update_windows(Rank &rank);

  KeepAliveSpec spec_;
  std::vector<Rank> ranks_;  // by rank - 1
};

}  // namespace faasvisor::pool
