#include "pool/keepalive.h"

#include <algorithm>
#include <cassert>
#include <cmath>
#include <string>

namespace faasvisor::pool {

namespace {

uint64_t scaled_ms(uint64_t ms, double factor) {
  return static_cast<uint64_t>(std::llround(static_cast<double>(ms) * factor));
}

}  // namespace

// ---------------------------------------------------------------------------- histogram

void IdleHistogram::add(uint64_t idle_ms) {
  if (idle_ms >= kRangeMs) {
    ++out_of_bounds_;
    return;
  }
  uint64_t &bin = bins_[idle_ms / kBinMs];
  sum_squares_ += 2 * bin + 1;  // (c + 1)^2 - c^2
  ++bin;
  ++in_bounds_;
}

uint32_t IdleHistogram::percentile_bin(double p) const {
  assert(p >= 0.0 && p <= 1.0);
  if (in_bounds_ == 0) return 0;
  // ceil(p * n) in integers (p in 1/10000ths), so 0.99 * 100 is 99, not 98.99999.
  uint64_t p_bp = static_cast<uint64_t>(std::llround(p * 10'000.0));
  uint64_t rank = (p_bp * in_bounds_ + 9'999) / 10'000;
  if (rank == 0) rank = 1;
  uint64_t cumulative = 0;
  for (uint32_t i = 0; i < kBins; ++i) {
    cumulative += bins_[i];
    if (cumulative >= rank) return i;
  }
  assert(false && "cumulative count ends at in_bounds_");
  return kBins - 1;
}

double IdleHistogram::cv() const {
  if (in_bounds_ == 0) return 0.0;
  double n = kBins;
  double mean = static_cast<double>(in_bounds_) / n;
  double variance = static_cast<double>(sum_squares_) / n - mean * mean;
  return std::sqrt(std::max(variance, 0.0)) / mean;
}

// ---------------------------------------------------------------------------- policy

KeepAlivePolicy::KeepAlivePolicy(KeepAliveSpec spec, uint32_t ranks)
    : spec_(spec), ranks_(std::max<uint32_t>(ranks, 1)) {
  for (Rank &r : ranks_) update_windows(r);
}

void KeepAlivePolicy::on_arrival(uint64_t now_ms, uint32_t running_before) {
  // Concurrency reaches running_before + 1; above the last rank only its own level counts.
  if (running_before >= ranks_.size()) return;
  Rank &r = ranks_[running_before];
  if (!r.has_end) return;
  // The caller's clock is monotonic; a completion and an arrival in the same tick may
  // still be reported out of order, which is an idle time of 0.
  r.histogram.add(now_ms > r.last_end_ms ? now_ms - r.last_end_ms : 0);
  if (spec_.kind == KeepAliveSpec::Kind::adaptive) update_windows(r);
}

void KeepAlivePolicy::on_completion(uint64_t now_ms, uint32_t running_after) {
  // Concurrency drops below running_after + 1.
  if (running_after >= ranks_.size()) return;
  ranks_[running_after].last_end_ms = now_ms;
  ranks_[running_after].has_end = true;
}

bool KeepAlivePolicy::representative(uint32_t rank) const {
  const IdleHistogram &h = ranks_[slot(rank)].histogram;
  uint64_t total = h.total();
  if (total < kMinSamples) return false;
  double oob_fraction = static_cast<double>(h.out_of_bounds()) / static_cast<double>(total);
  if (oob_fraction > kMaxOutOfBoundsFraction) return false;
  return h.cv() >= kMinCv;
}

// Recomputed when a rank's histogram changes (once per idle period of that rank), so
// windows() is a copy.
void KeepAlivePolicy::update_windows(Rank &r) {
  uint32_t rank = static_cast<uint32_t>(&r - ranks_.data()) + 1;
  if (spec_.kind == KeepAliveSpec::Kind::fixed || !representative(rank)) {
    r.windows = KeepAliveWindows{0, spec_.fixed_ms, false};
    return;
  }
  uint64_t head_ms = r.histogram.percentile(kHeadPercentile);  // lower edge: pre-warm early
  uint64_t tail_ms = r.histogram.percentile(kTailPercentile) + IdleHistogram::kBinMs;
  uint64_t prewarm_ms = scaled_ms(head_ms, kHeadMargin);
  uint64_t horizon_ms = scaled_ms(tail_ms, kTailMargin);
  assert(horizon_ms > prewarm_ms);  // tail's upper edge > head's lower edge
  r.windows = KeepAliveWindows{prewarm_ms, horizon_ms - prewarm_ms, true};
}

}  // namespace faasvisor::pool
